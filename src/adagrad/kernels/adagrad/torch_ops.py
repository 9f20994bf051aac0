"""Adagrad kernels built from torch ops: any device, any floating dtype, autograd-friendly.

The semantics are those of :ref:`algo-adagrad`, :ref:`algo-sparse` (see `StepRule`, `RowClocks`); the CPU fast
paths in `dense_cpu` and `sparse_cpu` are held to the same reference by the tests.
Arithmetic runs in the accumulator's dtype (float32 for bf16/fp16 parameters by default).
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from adagrad.kernels.engine.clocks import RowClocks, factor_dtype
from adagrad.kernels.engine.rule import StepRule


def _adagrad_rows(param: Tensor, grad: Tensor, state_sum: Tensor, rule: StepRule,
                  sum_factor: Tensor | float) -> Tensor:
    """The :ref:`algo-adagrad` update on matching tensors, in the accumulator's dtype; returns the new θ.

    ``param`` is not modified; ``state_sum`` is, in place.
    """
    grad = grad.to(state_sum.dtype)
    param = param.to(state_sum.dtype)
    if rule.maximize:
        grad = -grad
    if rule.weight_decay != 0:
        if rule.decoupled:
            param = param * (1 - rule.lr * rule.weight_decay)
        else:
            grad = grad + rule.weight_decay * param
    if isinstance(sum_factor, Tensor) or sum_factor != 1.0:
        state_sum.mul_(sum_factor)
    state_sum.addcmul_(grad, grad)
    if rule.eps_inside:
        denom = (state_sum + rule.eps).sqrt()
        # G + ε == 0 only where g == 0 (G ≥ g²): the update there is 0, not 0/0.
        denom = denom.masked_fill(denom == 0, 1.0)
    else:
        denom = state_sum.sqrt() + rule.eps
    return param.addcdiv(grad, denom, value=-rule.lr)


def dense_adagrad_(param: Tensor, grad: Tensor, state_sum: Tensor, rule: StepRule) -> None:
    """One dense Adagrad step (:ref:`algo-adagrad`), in place on ``param`` and ``state_sum``."""
    new_param = _adagrad_rows(param, grad, state_sum, rule, rule.accumulator_decay)
    param.copy_(new_param)


def _row_factors(clock: float, snapshots: Tensor | None, rows: Tensor) -> Tensor | float:
    """Pending decay factors ``exp(clock - snapshot[row])`` of ``rows``, on ``rows``'
    device (in float32 there if it has no float64); snapshots advance."""
    if snapshots is None:
        return 1.0
    at = rows.to(snapshots.device)
    factors = torch.exp(clock - snapshots[at])
    snapshots[at] = clock
    return factors.to(device=rows.device, dtype=factor_dtype(rows.device))


def summed_rows(indices: Tensor, values: Tensor, value_of: Tensor | None,
                scale: Tensor | None, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """A row gradient (see `sparse_adagrad_`) as its distinct rows, ascending, and each
    one's summed gradient in ``dtype`` (:ref:`algo-sparse`, step 1)."""
    if value_of is not None:
        values = values.index_select(0, value_of.long())
    if scale is not None:
        values = values * _broadcast(scale.to(values.dtype).expand(values.shape[0]), values)
    rows, inverse = torch.unique(indices.long(), return_inverse=True)
    grad = torch.zeros((rows.numel(),) + values.shape[1:], dtype=dtype, device=values.device)
    grad.index_add_(0, inverse, values.to(dtype))
    return rows, grad


def sparse_adagrad_(param: Tensor, state_sum: Tensor, indices: Tensor, values: Tensor,
                    rule: StepRule, clocks: RowClocks, value_of: Tensor | None = None,
                    scale: Tensor | None = None) -> None:
    """One sparse Adagrad step (:ref:`algo-sparse`) on a ``(rows, D)`` table.

    Position ``k`` of the gradient adds ``scale[k]·values[value_of[k]]`` to row
    ``indices[k]`` (``value_of`` defaults to the identity, ``scale`` to 1; a 1-element
    ``scale`` applies to every position). Duplicate ``indices`` are summed first; then
    each touched row is caught up on its lazy decay (``clocks``) and updated by the dense
    rule. ``rule.weight_decay`` is L2 on the touched rows ("touched" mode);
    ``rule.decoupled`` and ``rule.accumulator_decay`` are ignored: decoupled decay and ρ
    come through ``clocks``, so that untouched rows decay too. Indices must already be
    validated to lie in ``[0, rows)``.
    """
    rows, grad = summed_rows(indices, values, value_of, scale, state_sum.dtype)
    row_param = param.index_select(0, rows)
    param_factor = _row_factors(clocks.param_log, clocks.row_param_log, rows)
    if isinstance(param_factor, Tensor):
        row_param = row_param * _broadcast(param_factor, row_param)
    sum_factor = _row_factors(clocks.sum_log, clocks.row_sum_log, rows)
    if isinstance(sum_factor, Tensor):
        sum_factor = _broadcast(sum_factor, grad).to(state_sum.dtype)
    row_sum = state_sum.index_select(0, rows)
    row_rule = replace(rule, decoupled=False)
    new_rows = _adagrad_rows(row_param, grad, row_sum, row_rule, sum_factor)
    param.index_copy_(0, rows, new_rows.to(param.dtype))
    state_sum.index_copy_(0, rows, row_sum)


def flush_rows_(param: Tensor, state_sum: Tensor, clocks: RowClocks) -> None:
    """Bring every row up to date on its pending lazy decay (:ref:`algo-sparse`)."""
    every_row = torch.arange(param.shape[0], device=param.device)
    for tensor, clock, snapshots in ((param, clocks.param_log, clocks.row_param_log),
                                     (state_sum, clocks.sum_log, clocks.row_sum_log)):
        factors = _row_factors(clock, snapshots, every_row)
        if isinstance(factors, Tensor):
            tensor.mul_(_broadcast(factors, tensor).to(tensor.dtype))


def catch_up_rows_(param: Tensor, state_sum: Tensor, rows: Tensor, clocks: RowClocks) -> None:
    """Bring ``rows`` (may repeat) of a ``(rows, D)`` table up to date on their pending
    lazy decay (:ref:`algo-sparse`), in place: what a fused layer does at lookup, so that
    its forward reads the rows of the dense algorithm."""
    rows = rows.long()
    for tensor, clock, snapshots in ((param, clocks.param_log, clocks.row_param_log),
                                     (state_sum, clocks.sum_log, clocks.row_sum_log)):
        if snapshots is None:
            continue
        at = rows.to(snapshots.device)
        stale = torch.unique(at[snapshots[at] != clock]).to(tensor.device)
        factors = _row_factors(clock, snapshots, stale)
        caught_up = tensor.index_select(0, stale).to(factors.dtype) * _broadcast(factors, tensor)
        tensor.index_copy_(0, stale, caught_up.to(tensor.dtype))


def _broadcast(per_row: Tensor, like: Tensor) -> Tensor:
    return per_row.view((-1,) + (1,) * (like.dim() - 1))
