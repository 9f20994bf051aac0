"""The family's members by name, and how `adagrad.linear` regularises each.

Two engines train the linear models. The online kernel (`adagrad.linear.online`) takes one
example a step and runs the coordinate rules of `ONLINE_MEMBERS`; the minibatch engine
(`adagrad.linear.minibatch`) steps any member's optimizer on sparse gradients (dense for
FullMatrixAdagrad) of ``batch_size`` examples.

Regularisation ``alpha·((1-ρ)/2·‖w‖² + ρ·‖w‖₁)`` (ρ the l1 ratio: 0 for ``penalty="l2"``, 1
for ``"l1"``): members with a proximal L1 step (`L1_MEMBERS`) take ``l1 = alpha·ρ`` and
``l2 = alpha·(1-ρ)`` in their own rule, so weights become exactly zero; the others take
the L2 part as ``alpha·w`` added to the gradient of the touched rows (coupled weight decay
on the features an example has, as Vowpal Wabbit does) and refuse L1. The intercept is
never regularised.
"""

from __future__ import annotations

import numpy as np

from adagrad.kernels.adagrad.coordinate import rule_tuple
from adagrad.kernels.engine.rule import FtrlRule, ProximalRule, StepRule
from adagrad.kernels.ftrl.coordinate import ftrl_tuple
from adagrad.kernels.proximal.coordinate import proximal_tuple

from adagrad import members as family

#: name → class in `adagrad` (imported when the minibatch engine needs it): every member
MEMBERS = {member.key: member.name for member in family.MEMBERS}
L1_MEMBERS = family.keys(l1=True)
ONLINE_MEMBERS = family.keys(online=True)
DENSE_ONLY_MEMBERS = family.keys(sparse_rows=False)


def l1_ratio_of(penalty: str, l1_ratio: float) -> float:
    """ρ, the share of L1 in the penalty."""
    return {"l2": 0.0, "l1": 1.0, "elasticnet": float(l1_ratio)}[penalty]


def resolve_member(optimizer: str | None, penalty: str) -> str:
    """The member that trains: ``optimizer``, or by default Adagrad for an L2 penalty and
    ProximalAdagrad where there is L1. Refuses L1 on a member without an L1 step."""
    if optimizer is None:
        return "adagrad" if penalty == "l2" else "proximal_adagrad"
    if optimizer not in MEMBERS:
        raise ValueError(f"optimizer must be one of {sorted(MEMBERS)}, got {optimizer!r}")
    if penalty != "l2" and optimizer not in L1_MEMBERS:
        raise ValueError(f"penalty={penalty!r} needs an optimizer with an L1 proximal step "
                         f"({', '.join(L1_MEMBERS)}); optimizer={optimizer!r} has none")
    return optimizer


def online_rules(member: str, lr: float, alpha: float, rho: float, dtype) -> tuple[tuple, tuple]:
    """The online kernel's coefficient tuples (features, intercept) for ``member``, with the
    member's own defaults (`adagrad.members`) for all but ``lr``: the rules its optimizer
    steps with in the minibatch engine."""
    scalar = np.dtype(dtype).type
    l1, l2 = alpha * rho, alpha * (1.0 - rho)
    defaults = family.BY_KEY[member].defaults
    if member == "adagrad":
        eps = defaults["eps"]
        return (rule_tuple(StepRule(lr=lr, eps=eps, weight_decay=l2), scalar),
                rule_tuple(StepRule(lr=lr, eps=eps), scalar))
    if member == "proximal_adagrad":
        eps = defaults["eps"]
        return (proximal_tuple(ProximalRule(lr=lr, l1=l1, l2=l2, eps=eps), scalar),
                proximal_tuple(ProximalRule(lr=lr, eps=eps), scalar))
    beta = defaults["beta"]
    return (ftrl_tuple(FtrlRule(lr=lr, beta=beta, l1=l1, l2=l2), scalar),
            ftrl_tuple(FtrlRule(lr=lr, beta=beta), scalar))


def online_state(member: str, shape: tuple[int, int], dtype) -> tuple[np.ndarray, ...]:
    """The initial state tables of ``member`` in the online kernel, as its optimizer creates
    them: (G,) or FTRL's (z, n), the accumulator at the member's
    ``initial_accumulator_value``."""
    initial = np.full(shape, family.BY_KEY[member].defaults["initial_accumulator_value"], dtype)
    if member == "ftrl":
        return np.zeros(shape, dtype), initial
    return (initial,)


def build_optimizer(member: str, weights, bias, lr: float, alpha: float, rho: float):
    """``member``'s optimizer over the feature weights and the intercept (two groups, the
    intercept's unregularised). Returns it and the L2 coefficient the engine adds to the
    gradient of touched rows itself (0 where the member's rule has it)."""
    import adagrad

    cls = getattr(adagrad, MEMBERS[member])
    if member in L1_MEMBERS:
        groups = [{"params": [weights], "l1": alpha * rho, "l2": alpha * (1.0 - rho)},
                  {"params": [bias], "l1": 0.0, "l2": 0.0}]
        return cls(groups, lr=lr), 0.0
    return cls([weights, bias], lr=lr), alpha
