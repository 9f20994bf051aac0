"""`AdagradNorm`: one adaptive step size per tensor, or per parameter group (:ref:`algo-norm`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.optim.optimizer import ParamsT

from adagrad.kernels.norm import torch_ops as norm_ops
from adagrad.optim.base import AdagradFamily, SparseGrad, sparse_rows
from adagrad.optim.validation import check_choice, check_non_negative

SCOPES = ("tensor", "group")


@dataclass(frozen=True)
class _Descent:
    """One parameter's gradient, ready for ``θ ← θ + factor·g``: a dense tensor (``rows``
    None; complex tensors as their real view) or the summed rows of a row gradient."""

    target: Tensor
    grad: Tensor
    rows: Tensor | None = None

    def add_squared_norm_to(self, b2: Tensor) -> None:
        norm_ops.add_squared_norm_(b2, self.grad)

    def apply(self, factor: Tensor) -> None:
        if self.rows is None:
            norm_ops.descend_(self.target, self.grad, factor)
        else:
            norm_ops.descend_rows_(self.target, self.rows, self.grad, factor)


def _check_hyperparameters(group: dict[str, Any]) -> None:
    for name in ("lr", "initial_accumulator_value", "eps"):
        check_non_negative(name, group[name])
    check_choice("scope", group["scope"], SCOPES)


class AdagradNorm(AdagradFamily):
    r"""AdaGrad-Norm (Ward, Wu, Bottou, "AdaGrad stepsizes", ICML 2019): Adagrad with one
    accumulator for a whole tensor, so that only the step size adapts, not the direction.

    The update (:ref:`algo-norm`), with ``b²`` the state ``sum`` (a 0-d tensor)::

        b² ← b² + ||g||²
        θ  ← θ - lr · g / (sqrt(b²) + ε)

    The step size ``lr / b`` falls until it suits the problem's smoothness, whatever
    ``lr`` was: the method's point is robustness to the learning rate. There is no
    ``lr_decay`` (the issue's signature; ``b`` already is the schedule).

    ``scope="tensor"`` keeps one ``b²`` per parameter. ``scope="group"`` shares one ``b²``
    across a parameter group, ``||g||²`` being the squared norm of the whole group's
    gradient (the paper's setting, all parameters as one vector). The shared value is
    held by every parameter of the group, each in its own state ``sum`` (all equal, in
    each one's state dtype; the group reads the widest), so ``state_dict`` keeps
    torch's per-parameter layout and round trips; a parameter of the group that has no
    gradient keeps θ and its ``step`` but its ``sum`` follows the group's.

    Sparse gradients (``nn.Embedding(sparse=True)``) take the dense update with zero rows
    (:ref:`algo-sparse`): duplicates are summed first, ``||g||²`` is that of the summed
    rows, and only the touched rows move (an untouched row's update is 0 in the dense
    update too, so sparse equals dense exactly). With ``scope="group"`` sparse gradients
    stepped by `step()` are exact as well (their norms join the group's); stepping one
    parameter of a group of several alone (`step_rows` / `step_parameter`, what
    `adagrad.nn` layers do under ``update_in_backward``) cannot share this step's ``b²``
    and raises a RuntimeError at that step.

    Args:
      params: parameters or parameter groups; every keyword below may be set per group.
      lr: the learning rate η (float or 1-element tensor). Default 1e-2.
      initial_accumulator_value: ``b₀²`` (the paper's b₀ squared). Default 0.
      eps: ε added to ``b``. Default 1e-10.
      scope: ``"tensor"`` (one ``b²`` per parameter) or ``"group"`` (one per group).
        Default ``"tensor"``.

    State per parameter: ``step`` and ``sum`` (0-d, real; float32 for bf16/fp16
    parameters, the real dtype of complex ones, else the parameter's dtype).

    Example:
        One scalar accumulator for the whole tensor, ``b² = ||g||²`` after one step:

        >>> import torch, adagrad
        >>> w = torch.nn.Parameter(torch.zeros(2))
        >>> optimizer = adagrad.AdagradNorm([w], lr=0.1)
        >>> w.grad = torch.tensor([3.0, 4.0])
        >>> optimizer.step()
        >>> optimizer.state[w]["sum"]
        tensor(25.)
    """

    _checkpoint_group_keys = ("lr", "eps", "initial_accumulator_value", "scope")
    _shardable = False  # ||g||² is over the whole parameter

    def __init__(self, params: ParamsT, lr: float | Tensor = 1e-2,
                 initial_accumulator_value: float = 0.0, eps: float = 1e-10,
                 scope: str = "tensor") -> None:
        # `differentiable` is no argument: torch.optim's step decorator reads it.
        defaults = dict(lr=lr, initial_accumulator_value=initial_accumulator_value, eps=eps,
                        scope=scope, differentiable=False)
        _check_hyperparameters(defaults)
        super().__init__(params, defaults)

    # -- state ----------------------------------------------------------------------

    @staticmethod
    def state_dtype(param: Tensor, group: dict[str, Any]) -> torch.dtype:
        """The dtype of ``b²``: float32 for fp16/bf16 parameters, the real dtype of
        complex ones (``||g||²`` is real), else the parameter's."""
        dtype = AdagradFamily.state_dtype(param, group)
        return dtype.to_real() if dtype.is_complex else dtype

    def _init_state(self, param: Tensor, group: dict[str, Any]) -> dict[str, Tensor]:
        dtype = self.state_dtype(param, group)
        shared = self._group_sum(group) if group["scope"] == "group" else None
        if shared is not None:  # a group's b² is the same for all its parameters
            initial = shared.to(device=param.device, dtype=dtype, copy=True)
        else:
            initial = torch.full((), float(group["initial_accumulator_value"]), dtype=dtype,
                                 device=param.device)
        return {"step": self._new_step(), "sum": initial}

    def _state_shapes(self, param: Tensor) -> dict[str, tuple[int, ...]]:
        return {"sum": ()}

    def _state_for(self, param: Tensor, group: dict[str, Any]) -> dict[str, Tensor]:
        """As the base's, and ``sum`` (0-d, which the base leaves where it is) follows the
        parameter's device and the dtype policy too."""
        state = super()._state_for(param, group)
        b2, dtype = state["sum"], self.state_dtype(param, group)
        if b2.device != param.device or b2.dtype != dtype:
            state["sum"] = b2.to(device=param.device, dtype=dtype)
        return state

    def _group_sum(self, group: dict[str, Any]) -> Tensor | None:
        """The group's shared ``b²`` (scope="group"): the ``sum`` of widest dtype among
        the group's parameters that have state, or None if none has."""
        sums = [self.state[p]["sum"] for p in group["params"] if self.state.get(p)]
        return max(sums, key=lambda s: s.element_size(), default=None)

    # -- stepping -------------------------------------------------------------------

    def _descent(self, param: Tensor, grad: Tensor, dtype: torch.dtype) -> _Descent:
        if grad.is_sparse:
            sparse = sparse_rows(param.detach(), grad)
            return self._row_descent(sparse, dtype)
        if param.is_complex():
            return _Descent(torch.view_as_real(param.detach()), torch.view_as_real(grad))
        return _Descent(param.detach(), grad)

    @staticmethod
    def _row_descent(sparse: SparseGrad, dtype: torch.dtype) -> _Descent:
        rows, grads = norm_ops.summed_rows(sparse.indices, sparse.values, sparse.value_of,
                                           sparse.scale, dtype)
        return _Descent(sparse.table, grads, rows)

    def _step_group(self, group: dict[str, Any], params: list[Tensor]) -> None:
        stepped = [p for p in params if p.grad is not None]
        if not stepped:
            return
        if group["scope"] == "group":
            self._refuse_alone(group, params)
            self._step_shared(group, stepped)
            return
        for param in stepped:
            state = self._state_for(param, group)
            self._step_one(state, self._descent(param, param.grad, state["sum"].dtype), group)

    def _step_sparse(self, param: Tensor, sparse: SparseGrad, group: dict[str, Any]) -> None:
        self._refuse_alone(group, [param])
        state = self._state_for(param, group)
        self._step_one(state, self._row_descent(sparse, state["sum"].dtype), group)

    @staticmethod
    def _step_one(state: dict[str, Tensor], descent: _Descent, group: dict[str, Any]) -> None:
        """:ref:`algo-norm` on one tensor with its own ``b²``."""
        b2 = state["sum"]
        descent.add_squared_norm_to(b2)
        descent.apply(norm_ops.coefficient(b2, float(group["lr"]), group["eps"]))
        state["step"] += 1

    def _step_shared(self, group: dict[str, Any], stepped: list[Tensor]) -> None:
        """:ref:`algo-norm` on the whole group with one ``b²``: every parameter gets state (so that all
        hold the shared value), the squared norms of the stepped ones are added, each
        stepped one descends with the same factor, and every ``sum`` takes the new value."""
        states = [self._state_for(p, group) for p in group["params"]]
        total = self._group_sum(group).clone()
        descents = []
        for param in stepped:
            descent = self._descent(param, param.grad, self.state[param]["sum"].dtype)
            descent.add_squared_norm_to(total)
            descents.append(descent)
        factor = norm_ops.coefficient(total, float(group["lr"]), group["eps"])
        for param, descent in zip(stepped, descents):
            descent.apply(factor.to(self.state[param]["sum"].dtype))
            self.state[param]["step"] += 1
        for state in states:
            state["sum"].copy_(total)

    @staticmethod
    def _refuse_alone(group: dict[str, Any], params: list[Tensor]) -> None:
        """RuntimeError if a group with a shared ``b²`` is asked to step only some of its
        parameters (`step_rows`, `step_parameter`): that step's ``b²`` needs them all."""
        if group["scope"] == "group" and len(params) < len(group["params"]):
            raise RuntimeError(
                f"AdagradNorm(scope='group') shares one b² across the group's "
                f"{len(group['params'])} parameters, so one of them cannot be stepped alone "
                f"(step_rows / step_parameter, as adagrad.nn's update_in_backward does): put "
                f"that parameter in a group of its own, or use scope='tensor'")

    # -- checkpoints ----------------------------------------------------------------

    _validate = staticmethod(_check_hyperparameters)
