"""`ProximalAdagrad`: Adagrad whose step ends with the proximal map of an L1 + L2 penalty,
so that L1 gives exact zeros (:ref:`algo-proximal`; TensorFlow's ``ApplyProximalAdagrad``)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from torch.optim.optimizer import ParamsT

from adagrad import kernels
from adagrad.kernels import ProximalRule
from adagrad.kernels.proximal import torch_ops as portable_proximal
from adagrad.optim import checkpoint, last_step
from adagrad.optim.base import AdagradFamily, SparseGrad, as_real
from adagrad.optim.validation import check_choice, check_non_negative, check_state_dtype

ROW_STEP = "row_step"  # float64 (rows,): the step each row of the table is up to date at
LAST_RULE = ("last_lr", "last_l1", "last_l2", "last_eps")  # the last step's ProximalRule


def _check_hyperparameters(group: dict[str, Any]) -> None:
    for name in ("lr", "l1", "l2", "initial_accumulator_value", "eps", "lr_decay"):
        check_non_negative(name, group[name])
    if group["initial_accumulator_value"] == 0 and group["eps"] == 0:
        raise ValueError("Invalid initial_accumulator_value value: 0 (argument "
                         "`initial_accumulator_value` must be > 0 when eps = 0: "
                         "η = lr / sqrt(G) is infinite where G = 0)")
    check_state_dtype(group["state_dtype"])
    check_choice("sparse_catch_up", group["sparse_catch_up"], (False, True))
    if group["sparse_catch_up"] and group["lr_decay"] != 0:
        raise ValueError(f"Invalid sparse_catch_up value: True (argument `sparse_catch_up` "
                         f"needs lr_decay = 0, got {group['lr_decay']}: the catch-up is the "
                         f"closed form of zero-gradient steps with a fixed η)")


class ProximalAdagrad(AdagradFamily):
    r"""Proximal Adagrad (forward-backward splitting with Adagrad's per-coordinate rate;
    Duchi & Singer 2009, Duchi, Hazan & Singer 2011), TensorFlow's
    ``ApplyProximalAdagrad``. Per coordinate (:ref:`algo-proximal`)::

        t ← t + 1;  lr_t = lr / (1 + (t-1)·lr_decay)
        G ← G + g²
        η = lr_t / (sqrt(G) + ε)
        v = θ - η·g
        θ ← sign(v)·max(|v| - η·l1, 0) / (1 + η·l2)

    L1 sets weights to exactly 0 once ``|v| ≤ η·l1``. With ``eps=0`` (TensorFlow has no ε)
    and ``l1 = l2 = 0`` this is Adagrad with ε = 0. In a dense step a coordinate whose
    gradient is 0 is still shrunk (``θ ← sign(θ)·max(|θ| - η·l1, 0)/(1 + η·l2)``).

    Sparse gradients (``nn.Embedding(sparse=True)``, `adagrad.nn` fused layers):
    duplicate rows are summed first and only the touched rows are updated. By default,
    as in TensorFlow's ``SparseApplyProximalAdagrad``, **untouched rows are not shrunk**:
    a sparse run equals the dense one only on rows touched at every step. With
    ``sparse_catch_up=True`` each row instead remembers the step it is up to date at, and
    the zero-gradient steps it skipped are applied when it is next touched, looked up by
    a fused layer (`catch_up_rows`) or flushed (`flush`), by their closed form: with G
    fixed, η is fixed, so ``k`` such steps give ``sign(θ)·max(u, 0)`` with
    ``u = |θ|·q - (l1/l2)·(1 - q)``, ``q = (1 + η·l2)⁻ᵏ`` (``u = |θ| - k·η·l1`` for
    l2 = 0). The sparse run then equals the dense run on every row (to float rounding).
    The catch-up replays the hyperparameters the skipped steps had; when lr, l1, l2 or ε
    change between steps every pending row is flushed first (a pass over the table).
    It needs ``lr_decay=0`` (a decaying η has no such closed form for l2 > 0).

    Args:
      params: parameters or parameter groups; every keyword below may be set per group.
      lr: learning rate (float or 1-element tensor). Default 1e-2.
      l1: L1 strength, >= 0. Default 0.
      l2: L2 strength, >= 0. Default 0.
      initial_accumulator_value: G₀, >= 0; must be > 0 when ``eps=0`` (else η is
        infinite where a coordinate has no gradient yet). Default 0.1 (TensorFlow's).
      eps: ε, outside the square root as in torch, >= 0. Default 0 (TensorFlow's rule).
      lr_decay: inverse-time decay of the learning rate per step, >= 0. Default 0.
      maximize: ascend the objective (negates g). Default False.
      differentiable: let autograd through the step (torch ops, slower). Default False.
      state_dtype: dtype of ``sum``. Default: float32 for fp16/bf16 parameters, else the
        parameter's.
      sparse_catch_up: apply the shrinkage that untouched rows skip under sparse
        gradients lazily, as above. Default False (TensorFlow's semantics).

    State per parameter: ``step`` and ``sum`` (G, θ's shape); with ``sparse_catch_up``
    after a sparse step also ``row_step`` (float64, one per row) and the last step's
    ``last_lr``, ``last_l1``, ``last_l2``, ``last_eps`` (0-d float64).

    Example:
        A large L1 penalty sets a weight to exactly zero:

        >>> import torch, adagrad
        >>> w = torch.nn.Parameter(torch.tensor([0.01, 1.0]))
        >>> optimizer = adagrad.ProximalAdagrad([w], lr=0.1, l1=1.0)
        >>> w.grad = torch.tensor([0.0, 0.0])
        >>> optimizer.step()
        >>> bool(w[0] == 0), bool(w[1] > 0)
        (True, True)
    """

    _float64_state = (ROW_STEP, *LAST_RULE)
    _checkpoint_group_keys = ("lr", "l1", "l2", "initial_accumulator_value", "eps", "lr_decay")

    def __init__(self, params: ParamsT, lr: float | Tensor = 1e-2, l1: float = 0.0,
                 l2: float = 0.0, initial_accumulator_value: float = 0.1, eps: float = 0.0,
                 lr_decay: float = 0, *, maximize: bool = False, differentiable: bool = False,
                 state_dtype: torch.dtype | None = None, sparse_catch_up: bool = False) -> None:
        defaults = dict(lr=lr, l1=l1, l2=l2, initial_accumulator_value=initial_accumulator_value,
                        eps=eps, lr_decay=lr_decay, maximize=maximize,
                        differentiable=differentiable, state_dtype=state_dtype,
                        sparse_catch_up=sparse_catch_up)
        _check_hyperparameters(defaults)
        super().__init__(params, defaults)

    # -- state ----------------------------------------------------------------------

    def _state_shapes(self, param: Tensor) -> dict[str, tuple[int, ...]]:
        return {"sum": tuple(param.shape)}

    # -- lazy catch-up --------------------------------------------------------------

    def flush(self) -> None:
        """Apply every row's pending zero-gradient steps (``sparse_catch_up=True``), so
        that parameters equal the dense algorithm's: call it before exporting a model
        trained on torch's own sparse layers. Checkpoints do not need it (the pending
        steps are saved as they are)."""
        for param, _ in self._params_with_groups():
            state = self.state.get(param)
            if state and ROW_STEP in state:
                self._flush_rows(param, state)

    @torch.no_grad()
    def catch_up_rows(self, param: Tensor, rows: Tensor) -> None:
        """Apply the pending zero-gradient steps of ``rows`` (may repeat), so that a
        lookup reads them as the dense algorithm would (what `adagrad.nn`'s layers call
        at lookup); nothing without ``sparse_catch_up``."""
        state = self.state.get(param)
        if state and ROW_STEP in state:
            table = _table(param, state)
            kernels.catch_up_proximal_rows_(table, state["sum"].view(table.shape),
                                            rows.reshape(-1), state[ROW_STEP],
                                            int(state["step"].item()), _recorded_rule(state))

    @staticmethod
    def _flush_rows(param: Tensor, state: dict[str, Tensor]) -> None:
        """Bring every row of ``param`` to the current step (no-op without pending rows)."""
        if ROW_STEP not in state:
            return
        table = _table(param, state)
        every_row = torch.arange(table.shape[0], device=table.device)
        kernels.catch_up_proximal_rows_(table, state["sum"].view(table.shape), every_row,
                                        state[ROW_STEP], int(state["step"].item()),
                                        _recorded_rule(state))

    def _row_steps_for(self, param: Tensor, state: dict[str, Tensor], group: dict[str, Any],
                       rows: int, rule: ProximalRule) -> Tensor | None:
        """The ``row_step`` table this sparse step uses (None without catch-up), after
        flushing what it cannot carry over: pending rows of another rule (the
        hyperparameters changed), of another table shape, or of a group that has
        switched the catch-up off."""
        pending = state.get(ROW_STEP)
        kept = group["sparse_catch_up"] and pending is not None and pending.numel() == rows
        if pending is not None and (not kept or last_step.recorded(state, LAST_RULE)
                                    != _without_sign(rule)):
            self._flush_rows(param, state)  # every entry of row_step is now the step
            if not kept:
                del state[ROW_STEP]
        if not group["sparse_catch_up"]:
            return None
        if ROW_STEP not in state:  # every row is up to date at the last step
            state[ROW_STEP] = torch.full((rows,), state["step"].item(), dtype=torch.float64,
                                         device=param.device)
        return state[ROW_STEP]

    # -- checkpoints ----------------------------------------------------------------

    _validate = staticmethod(_check_hyperparameters)

    def _check_saved_state(self, label: str, param: Tensor, saved: dict[str, Any]) -> None:
        """The catch-up's state: the last step's rule (all four values or none) and, if
        present (it needs the rule), one step count per row of a table view of the
        parameter, each between 0 and ``step``."""
        last_step.check_saved(label, saved, LAST_RULE)
        if ROW_STEP not in saved:
            return
        if LAST_RULE[0] not in saved:
            raise ValueError(f"state_dict does not fit {label}: its state has {ROW_STEP!r} "
                             f"but not the last step's rule {LAST_RULE}")
        value = saved[ROW_STEP]
        table_rows = {math.prod(param.shape[:d]) for d in range(1, param.dim() + 1)}
        checkpoint.check_clock(label, ROW_STEP, value, isinstance(value, Tensor)
                               and value.dim() == 1 and value.numel() in table_rows)
        if value.numel() and not (0 <= value.min() and value.max() <= float(saved["step"])):
            raise ValueError(f"state_dict does not fit {label}: its state {ROW_STEP!r} holds "
                             f"steps outside [0, step]")

    # -- stepping -------------------------------------------------------------------

    def _step_dense_one(self, param: Tensor, grad: Tensor, state: dict[str, Tensor],
                        group: dict[str, Any]) -> None:
        kernel = portable_proximal if group["differentiable"] else kernels
        rule = _step_rule(group, state["step"].item() + 1)
        self._flush_rows(param, state)
        real_param, real_grad, real_sum = as_real(param, grad, state["sum"])
        kernel.dense_proximal_(real_param, real_grad, real_sum, rule)
        state["step"] += 1
        if ROW_STEP in state:  # flushed, then stepped: every row is up to date
            state[ROW_STEP].fill_(state["step"].item())
        self._record_rule(state, group, rule)

    def _step_sparse(self, param: Tensor, sparse: SparseGrad, group: dict[str, Any]) -> None:
        state = self._state_for(param, group)
        step = int(state["step"].item()) + 1
        rule = _step_rule(group, step)
        row_step = self._row_steps_for(param, state, group, sparse.table.shape[0], rule)
        kernels.sparse_proximal_(sparse.table, sparse.view(state["sum"]), sparse.indices,
                                 sparse.values, rule, step, row_step, sparse.value_of,
                                 sparse.scale)
        state["step"] += 1
        self._record_rule(state, group, rule)

    @staticmethod
    def _record_rule(state: dict[str, Tensor], group: dict[str, Any], rule: ProximalRule) -> None:
        """Keep the step's rule for the catch-up of the rows it leaves pending; without
        the catch-up (switched off since: nothing is pending any more) drop its state."""
        if group["sparse_catch_up"]:
            last_step.record(state, LAST_RULE, _without_sign(rule))
        else:
            state.pop(ROW_STEP, None)
            last_step.forget(state, LAST_RULE)


def _step_rule(group: dict[str, Any], step: float) -> ProximalRule:
    lr = float(group["lr"]) / (1 + (step - 1) * group["lr_decay"])
    return ProximalRule(lr=lr, l1=group["l1"], l2=group["l2"], eps=group["eps"],
                        maximize=group["maximize"])


def _without_sign(rule: ProximalRule) -> tuple[float, float, float, float]:
    """What a zero-gradient step depends on: (lr, l1, l2, ε), in `LAST_RULE` order."""
    return (rule.lr, rule.l1, rule.l2, rule.eps)


def _recorded_rule(state: dict[str, Any]) -> ProximalRule | None:
    values = last_step.recorded(state, LAST_RULE)
    return None if values is None else ProximalRule(*values)


def _table(param: Tensor, state: dict[str, Tensor]) -> Tensor:
    """``param`` as the ``(rows, D)`` table its ``row_step`` describes."""
    return param.detach().view(state[ROW_STEP].numel(), -1)
