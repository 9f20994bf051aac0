"""The hyperparameters of one step on one tensor, as every kernel receives them: `StepRule`
(Adagrad, :ref:`algo-adagrad`), `ProximalRule` (:ref:`algo-proximal`), `DualAveragingRule`
(:ref:`algo-dual-averaging`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class StepRule:
    """One step of :ref:`algo-adagrad` on one tensor, with the learning rate already decayed.

    Per coordinate, in this order::

        g ← -g                              if maximize
        g ← g + weight_decay·θ              if not decoupled (L2, "coupled")
        θ ← θ·(1 - lr·weight_decay)         if decoupled
        G ← accumulator_decay·G + g²
        θ ← θ - lr·g / (sqrt(G) + eps)      eps_inside=False
        θ ← θ - lr·g / sqrt(G + eps)        eps_inside=True (0 where G + eps == 0)

    Attributes:
      lr: the step's learning rate ``lr_t = lr / (1 + (t-1)·lr_decay)``.
      eps: the ε of the denominator.
      eps_inside: ε inside the square root (the textbook formula, optax, Keras).
      maximize: ascend instead of descend.
      weight_decay: the decay coefficient ``wd``.
      decoupled: decoupled decay (AdamW/Keras style) instead of L2 added to the gradient.
        Sparse kernels ignore it: their decay mode is given separately.
      accumulator_decay: ρ in ``G ← ρ·G + g²``; 1.0 is plain Adagrad.
    """

    lr: float
    eps: float
    eps_inside: bool = False
    maximize: bool = False
    weight_decay: float = 0.0
    decoupled: bool = False
    accumulator_decay: float = 1.0


@dataclass(frozen=True)
class AdagradGroupRule:
    """Adagrad's hyperparameters of one parameter group, before a step's learning-rate
    decay: what the device dispatch (`cuda_dispatch`) takes instead of the group itself.
    `at` gives the `StepRule` of one step.

    Attributes:
      lr: the learning rate (a float, or a 0-d tensor, possibly on an accelerator).
      lr_decay: ``lr_t = lr / (1 + (t-1)·lr_decay)``.
      eps, eps_inside, maximize, weight_decay, decoupled, accumulator_decay: as in
        `StepRule`.
      differentiable: the step must be traced by autograd (torch ops only).
    """

    lr: Any
    lr_decay: float
    eps: float
    eps_inside: bool = False
    maximize: bool = False
    weight_decay: float = 0.0
    decoupled: bool = False
    accumulator_decay: float = 1.0
    differentiable: bool = False

    def at(self, lr: float, step: float) -> StepRule:
        """The rule of step ``step`` (1-based) for the learning rate ``lr`` (a host float:
        the group's, or 1.0 where a device ``lr`` multiplies the decay factor)."""
        return decayed_step_rule(lr, step, self.lr_decay, self.eps, self.eps_inside,
                                 self.maximize, self.weight_decay, self.decoupled,
                                 self.accumulator_decay)


def decayed_step_rule(lr: float, step: float, lr_decay: float, eps: float, eps_inside: bool,
                      maximize: bool, weight_decay: float, decoupled: bool,
                      accumulator_decay: float) -> StepRule:
    """Adagrad's `StepRule` of step ``step`` (1-based): the learning rate decayed to
    ``lr / (1 + (step-1)·lr_decay)``, the other fields as given."""
    return StepRule(lr=lr / (1 + (step - 1) * lr_decay), eps=eps, eps_inside=eps_inside,
                    maximize=maximize, weight_decay=weight_decay, decoupled=decoupled,
                    accumulator_decay=accumulator_decay)


@dataclass(frozen=True)
class FtrlRule:
    """One FTRL-Proximal step (:ref:`algo-ftrl`) on one tensor, per coordinate::

        σ = (sqrt(n + g²) - sqrt(n)) / lr ;  z ← z + g - σ·θ ;  n ← n + g²
        θ ← 0                                            if |z| ≤ l1
        θ ← -(z - sign(z)·l1) / ((beta + sqrt(n))/lr + l2)   otherwise

    Attributes:
      lr: α, the learning rate (> 0).
      beta: β, added to sqrt(n) in the denominator.
      l1: λ1, the L1 strength (exact zeros where |z| ≤ λ1).
      l2: λ2, the L2 strength.
    """

    lr: float
    beta: float = 1.0
    l1: float = 0.0
    l2: float = 0.0


@dataclass(frozen=True)
class ProximalRule:
    """One step of :ref:`algo-proximal` (proximal Adagrad) on one tensor, the learning rate
    already decayed. Per coordinate::

        g ← -g                               if maximize
        G ← G + g²
        η = lr / (sqrt(G) + eps)
        v = θ - η·g
        θ ← sign(v)·max(|v| - η·l1, 0) / (1 + η·l2)

    A coordinate with g = 0 is still shrunk (the prox of the regulariser): ``k`` such steps
    in a row, with this rule and the same G, have the closed form of
    `adagrad.kernels.proximal_cpu.zero_steps_row`.

    Attributes:
      lr: the step's learning rate ``lr_t = lr / (1 + (t-1)·lr_decay)``.
      l1: the L1 strength.
      l2: the L2 strength.
      eps: ε, outside the square root (0: TensorFlow's rule).
      maximize: ascend instead of descend.
    """

    lr: float
    l1: float = 0.0
    l2: float = 0.0
    eps: float = 0.0
    maximize: bool = False


@dataclass(frozen=True)
class DualAveragingRule:
    """One step ``T`` of :ref:`algo-dual-averaging` (Adagrad with dual averaging) on one tensor.
    Per coordinate::

        g ← -g                               if maximize
        z ← z + g ;  G ← G + g²
        θ = -sign(z)·lr·max(|z| - l1·T, 0) / (l2·T·lr + sqrt(G))

    (with l1 = 0 the numerator is ``-lr·z``). θ is a closed form of (z, G, T): an
    untouched coordinate's θ at step T needs only its sums.

    Attributes:
      lr: the learning rate.
      step: T, the tensor's step count after this step's increment.
      l1: the L1 strength.
      l2: the L2 strength.
      maximize: ascend instead of descend.
    """

    lr: float
    step: int
    l1: float = 0.0
    l2: float = 0.0
    maximize: bool = False
