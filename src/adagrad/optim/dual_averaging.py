"""`AdagradDA`: Adagrad with regularised dual averaging, whose θ is a closed form of the
running sums, so that L1 gives exact zeros (:ref:`algo-dual-averaging`; TensorFlow's
``ApplyAdagradDA``)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.optim.optimizer import ParamsT

from adagrad import kernels
from adagrad.kernels import DualAveragingRule
from adagrad.kernels.dual_averaging import torch_ops as portable_dual_averaging
from adagrad.optim import checkpoint, last_step
from adagrad.optim.base import AdagradFamily, SparseGrad, as_real
from adagrad.optim.validation import (
    check_choice,
    check_non_negative,
    check_positive,
    check_state_dtype,
)

LAST_RULE = ("last_lr", "last_l1", "last_l2")  # the last step's lr, l1, l2
ROW_STEP = "row_step"  # float64 (rows,): the step each row's θ was last recomputed at


def _check_hyperparameters(group: dict[str, Any]) -> None:
    for name in ("lr", "l1", "l2"):
        check_non_negative(name, group[name])
    check_positive("initial_accumulator_value", group["initial_accumulator_value"])  # else 0/0
    check_state_dtype(group["state_dtype"])
    check_choice("sparse_catch_up", group["sparse_catch_up"], (False, True))


class AdagradDA(AdagradFamily):
    r"""Adagrad with dual averaging (Xiao's regularised dual averaging with Adagrad's
    proximal term; Duchi, Hazan & Singer 2011, section 3), TensorFlow's ``ApplyAdagradDA``.
    Per coordinate, with T the step count after this step's increment
    (:ref:`algo-dual-averaging`)::

        z ← z + g ;  G ← G + g²
        θ = -sign(z)·lr·max(|z| - l1·T, 0) / (l2·T·lr + sqrt(G))

    (with l1 = 0 the numerator is ``-lr·z``). θ is recomputed from the sums every step,
    so the starting θ matters only until the first step; a weight is exactly 0 while
    ``|z| ≤ l1·T``. T is this tensor's step count (TensorFlow passes its global step + 1:
    the same when every step steps every parameter). There is no learning-rate decay:
    the 1/sqrt(G) and the averaging already play that part.

    Sparse gradients (``nn.Embedding(sparse=True)``, `adagrad.nn` fused layers):
    duplicate rows are summed first; the touched rows' sums grow and their θ is
    recomputed at T, which is exactly the dense θ (TensorFlow's "closed form update rule
    that is equivalent to having updated them on every mini-batch"). z and G of untouched
    rows are those of the dense run too, but their θ still holds the value of their last
    step: by default (TensorFlow's semantics) untouched rows are not shrunk. With
    ``sparse_catch_up=True`` their θ is recomputed from (z, G, T) when a fused layer
    looks them up (`catch_up_rows`) or on `flush`, with the hyperparameters of the last
    step: sparse and fused runs then equal the dense run on every row, bit for bit on
    one kernel.

    Args:
      params: parameters or parameter groups; every keyword below may be set per group.
      lr: learning rate (float or 1-element tensor). Default 1e-2.
      l1: L1 strength, >= 0. Default 0.
      l2: L2 strength, >= 0. Default 0.
      initial_accumulator_value: G₀, > 0 (as TensorFlow requires: θ = 0/0 where G = 0).
        Default 0.1.
      maximize: ascend the objective (negates g). Default False.
      differentiable: let autograd through the step (torch ops, slower). Default False.
      state_dtype: dtype of ``sum`` and ``grad_sum``. Default: float32 for fp16/bf16
        parameters, else the parameter's.
      sparse_catch_up: recompute untouched rows' θ lazily, as above. Default False.

    State per parameter: ``step``, ``sum`` (G) and ``grad_sum`` (z), θ's shape; with
    ``sparse_catch_up`` also the last step's ``last_lr``, ``last_l1``, ``last_l2``
    (0-d float64) and, once a fused layer has looked rows up, ``row_step`` (float64,
    one per row: the step each row's θ was last recomputed at, so that a row is
    recomputed once per step however often it is looked up).

    Example:
        θ comes from the sums: a coordinate whose gradient stays below ``l1`` is exactly 0:

        >>> import torch, adagrad
        >>> w = torch.nn.Parameter(torch.zeros(2))
        >>> optimizer = adagrad.AdagradDA([w], lr=0.1, l1=0.5)
        >>> w.grad = torch.tensor([0.2, 2.0])
        >>> optimizer.step()
        >>> bool(w[0] == 0), bool(w[1] < 0)
        (True, True)
    """

    _accumulators = ("sum", "grad_sum")
    _signed_state = ("grad_sum",)
    _float64_state = (*LAST_RULE, ROW_STEP)
    _checkpoint_group_keys = ("lr", "l1", "l2", "initial_accumulator_value")

    def __init__(self, params: ParamsT, lr: float | Tensor = 1e-2, l1: float = 0.0,
                 l2: float = 0.0, initial_accumulator_value: float = 0.1, *,
                 maximize: bool = False, differentiable: bool = False,
                 state_dtype: torch.dtype | None = None, sparse_catch_up: bool = False) -> None:
        defaults = dict(lr=lr, l1=l1, l2=l2, initial_accumulator_value=initial_accumulator_value,
                        maximize=maximize, differentiable=differentiable,
                        state_dtype=state_dtype, sparse_catch_up=sparse_catch_up)
        _check_hyperparameters(defaults)
        super().__init__(params, defaults)

    # -- state ----------------------------------------------------------------------

    def _state_shapes(self, param: Tensor) -> dict[str, tuple[int, ...]]:
        return {"sum": tuple(param.shape), "grad_sum": tuple(param.shape)}

    # -- lazy catch-up --------------------------------------------------------------

    def flush(self) -> None:
        """Recompute every row's θ from its sums (``sparse_catch_up=True``), so that
        parameters equal the dense algorithm's: call it before exporting a model trained
        on torch's own sparse layers. Checkpoints do not need it."""
        for param, _ in self._params_with_groups():
            state = self.state.get(param)
            if state and LAST_RULE[0] in state:
                real = as_real(param.detach(), state["grad_sum"], state["sum"])
                kernels.dual_averaging_weights_(*real, _recorded_rule(state))

    @torch.no_grad()
    def catch_up_rows(self, param: Tensor, rows: Tensor) -> None:
        """Recompute θ of ``rows`` (may repeat) from their sums at the last step, so that
        a lookup reads them as the dense algorithm would (what `adagrad.nn`'s layers call
        at lookup); nothing without ``sparse_catch_up``."""
        state = self.state.get(param)
        if state and LAST_RULE[0] in state and param.dim() > 0:
            self._recompute_rows(param, state, rows.reshape(-1))

    @staticmethod
    def _recompute_rows(param: Tensor, state: dict[str, Tensor], rows: Tensor) -> None:
        """Recompute the rows not recomputed at this step yet (``row_step``, created at
        the first lookup: a cache, which never changes a value, only skips work)."""
        tensors = as_real(param.detach(), state["grad_sum"], state["sum"])
        table, grad_sum, state_sum = (t.view(param.shape[0], -1) for t in tensors)
        if ROW_STEP not in state:
            state[ROW_STEP] = torch.full((param.shape[0],), -1.0, dtype=torch.float64,
                                         device=param.device)
        kernels.dual_averaging_weights_of_rows_(table, grad_sum, state_sum, rows,
                                                state[ROW_STEP], _recorded_rule(state))

    # -- checkpoints ----------------------------------------------------------------

    _validate = staticmethod(_check_hyperparameters)

    def _check_saved_state(self, label: str, param: Tensor, saved: dict[str, Any]) -> None:
        """The catch-up's record of the last step's rule (all three values or none) and
        its ``row_step`` cache, one number per row."""
        last_step.check_saved(label, saved, LAST_RULE)
        if ROW_STEP in saved:
            value = saved[ROW_STEP]
            checkpoint.check_clock(label, ROW_STEP, value, isinstance(value, Tensor)
                                   and value.dim() == 1 and param.dim() > 0
                                   and value.numel() == param.shape[0])

    # -- stepping -------------------------------------------------------------------

    def _step_dense_one(self, param: Tensor, grad: Tensor, state: dict[str, Tensor],
                        group: dict[str, Any]) -> None:
        kernel = portable_dual_averaging if group["differentiable"] else kernels
        rule = _step_rule(group, int(state["step"].item()) + 1)
        real = as_real(param, grad, state["grad_sum"], state["sum"])
        kernel.dense_dual_averaging_(*real, rule)
        state["step"] += 1
        _record_rule(state, group, rule)

    def _step_sparse(self, param: Tensor, sparse: SparseGrad, group: dict[str, Any]) -> None:
        state = self._state_for(param, group)
        rule = _step_rule(group, int(state["step"].item()) + 1)
        kernels.sparse_dual_averaging_(sparse.table, sparse.view(state["grad_sum"]),
                                       sparse.view(state["sum"]), sparse.indices, sparse.values,
                                       rule, sparse.value_of, sparse.scale)
        state["step"] += 1
        _record_rule(state, group, rule)


def _recorded_rule(state: dict[str, Tensor]) -> DualAveragingRule:
    """The last step's rule, as the catch-up replays it (at T = the step count)."""
    lr, l1, l2 = last_step.recorded(state, LAST_RULE)
    return DualAveragingRule(lr=lr, step=int(state["step"].item()), l1=l1, l2=l2)


def _step_rule(group: dict[str, Any], step: int) -> DualAveragingRule:
    return DualAveragingRule(lr=float(group["lr"]), step=step, l1=group["l1"], l2=group["l2"],
                             maximize=group["maximize"])


def _record_rule(state: dict[str, Tensor], group: dict[str, Any],
                 rule: DualAveragingRule) -> None:
    """Keep the step's lr, l1, l2 for the catch-up (dropped when it is off)."""
    if group["sparse_catch_up"]:
        last_step.record(state, LAST_RULE, (rule.lr, rule.l1, rule.l2))
    else:
        last_step.forget(state, LAST_RULE)
        state.pop(ROW_STEP, None)
