"""Row-wise Adagrad from torch ops (:ref:`algo-rowwise`): any device, any floating dtype.

The semantics are `adagrad.kernels.rowwise_cpu`'s (the same `StepRule` fields: lr, eps
outside, maximize, weight decay L2 or decoupled); arithmetic runs in the accumulator's
dtype (float32 for bf16/fp16 parameters by default).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from adagrad.kernels.engine.clocks import RowClocks
from adagrad.kernels.adagrad.torch_ops import _broadcast, _row_factors
from adagrad.kernels.engine.rule import StepRule


def _rowwise_rows(param: Tensor, grad: Tensor, state_sum: Tensor, rule: StepRule) -> Tensor:
    """:ref:`algo-rowwise` on ``param`` (rows along dim 0, any strides) with one accumulator per row in
    ``state_sum`` (updated in place); returns the new θ in the accumulator's dtype.
    Rows of width 0 are left alone."""
    if math.prod(param.shape[1:]) == 0:
        return param.to(state_sum.dtype)
    grad = grad.to(state_sum.dtype)
    param = param.to(state_sum.dtype)
    if rule.maximize:
        grad = -grad
    shrink = 1.0
    if rule.weight_decay != 0:
        if rule.decoupled:
            shrink = 1 - rule.lr * rule.weight_decay
        else:
            grad = grad + rule.weight_decay * param
    state_sum.add_(grad.square().flatten(1).mean(1))
    step_size = rule.lr / (state_sum.sqrt() + rule.eps)
    return param * shrink - _broadcast(step_size, grad) * grad


def dense_rowwise_adagrad_(param: Tensor, grad: Tensor, state_sum: Tensor,
                           rule: StepRule) -> None:
    """One dense row-wise step (:ref:`algo-rowwise`), in place on ``param`` (ndim ≥ 1, rows along dim 0)
    and ``state_sum`` (one entry per row)."""
    param.copy_(_rowwise_rows(param, grad, state_sum.view(-1), rule))


def sparse_rowwise_adagrad_(param: Tensor, state_sum: Tensor, indices: Tensor, values: Tensor,
                            rule: StepRule, clocks: RowClocks, value_of: Tensor | None = None,
                            scale: Tensor | None = None) -> None:
    """One sparse row-wise step (:ref:`algo-sparse`, :ref:`algo-rowwise`) on a ``(rows, D)`` table with
    ``state_sum`` of ``rows`` entries.

    Position ``k`` adds ``scale[k]·values[value_of[k]]`` to row ``indices[k]`` (as
    `adagrad.kernels.portable.sparse_adagrad_`). Duplicates are summed first; each
    touched row is then caught up on its lazy decoupled decay (``clocks.param_log``;
    the accumulator has no decay) and takes :ref:`algo-rowwise` with ``rule`` (whose weight decay, L2 or
    decoupled, applies to the touched rows only). Indices must lie in ``[0, rows)``.
    """
    if value_of is not None:
        values = values.index_select(0, value_of.long())
    if scale is not None:
        values = values * _broadcast(scale.to(values.dtype).expand(values.shape[0]), values)
    rows, inverse = torch.unique(indices.long(), return_inverse=True)
    grad = torch.zeros((rows.numel(), param.shape[1]), dtype=state_sum.dtype,
                       device=values.device)
    grad.index_add_(0, inverse, values.reshape(-1, param.shape[1]).to(state_sum.dtype))
    row_param = param.index_select(0, rows)
    factor = _row_factors(clocks.param_log, clocks.row_param_log, rows)
    if isinstance(factor, Tensor):
        row_param = row_param.to(factor.dtype) * _broadcast(factor, row_param)
    row_sum = state_sum.index_select(0, rows)
    new_rows = _rowwise_rows(row_param.to(state_sum.dtype), grad, row_sum, rule)
    param.index_copy_(0, rows, new_rows.to(param.dtype))
    state_sum.index_copy_(0, rows, row_sum)
