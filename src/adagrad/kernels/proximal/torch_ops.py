"""Proximal Adagrad kernels built from torch ops (:ref:`algo-proximal`): any device, any
floating dtype, autograd-friendly.

The semantics are `ProximalRule`'s; `adagrad.kernels.proximal_cpu` implements the same
rule on the CPU, and the tests hold both to the float64 reference. Arithmetic runs in the
accumulator's dtype (float32 for bf16/fp16 parameters by default); the lazy catch-up in
float64.
"""

from __future__ import annotations

import torch
from torch import Tensor

from adagrad.kernels.adagrad.torch_ops import summed_rows
from adagrad.kernels.engine.rule import ProximalRule


def _proximal_rows(param: Tensor, grad: Tensor, state_sum: Tensor, rule: ProximalRule) -> Tensor:
    """:ref:`algo-proximal` on matching tensors, in the accumulator's dtype; returns the new θ. ``param``
    is not modified; ``state_sum`` is, in place."""
    grad = grad.to(state_sum.dtype)
    param = param.to(state_sum.dtype)
    if rule.maximize:
        grad = -grad
    state_sum.addcmul_(grad, grad)
    eta = rule.lr / (state_sum.sqrt() + rule.eps)
    v = param - eta * grad
    shrunk = (v.abs() - eta * rule.l1).clamp_min(0)
    return torch.copysign(shrunk, v) / (eta * rule.l2 + 1)


def dense_proximal_(param: Tensor, grad: Tensor, state_sum: Tensor, rule: ProximalRule) -> None:
    """One dense proximal Adagrad step (:ref:`algo-proximal`), in place on ``param`` and
    ``state_sum``."""
    param.copy_(_proximal_rows(param, grad, state_sum, rule))


def sparse_proximal_(table: Tensor, state_sum: Tensor, indices: Tensor, values: Tensor,
                     rule: ProximalRule, step: int, row_step: Tensor | None = None,
                     value_of: Tensor | None = None, scale: Tensor | None = None) -> None:
    """Step ``step`` of :ref:`algo-proximal` with a row gradient of a ``(rows, D)`` table, in place.

    Position ``k`` adds ``scale[k]·values[value_of[k]]`` to row ``indices[k]`` (as in
    `adagrad.kernels.portable.sparse_adagrad_`); duplicates are summed first, then only
    the touched rows get the rule. With ``row_step`` (the lazy catch-up's float64 ``(rows,)``
    table: the step each row is up to date at), each touched row first gets its pending
    zero-gradient steps up to ``step - 1`` (`catch_up_rows_`) and is then at ``step``;
    without it untouched rows are simply not shrunk (TensorFlow's semantics). Indices must
    lie in ``[0, rows)``.
    """
    rows, grad = summed_rows(indices, values, value_of, scale, state_sum.dtype)
    if row_step is not None:
        catch_up_rows_(table, state_sum, rows, row_step, step - 1, rule)
    row_sum = state_sum.index_select(0, rows)
    new_rows = _proximal_rows(table.index_select(0, rows), grad, row_sum, rule)
    table.index_copy_(0, rows, new_rows.to(table.dtype))
    state_sum.index_copy_(0, rows, row_sum)
    if row_step is not None:
        row_step[rows] = float(step)


def catch_up_rows_(table: Tensor, state_sum: Tensor, rows: Tensor, row_step: Tensor,
                   up_to: int, rule: ProximalRule) -> None:
    """Bring ``rows`` (may repeat) of a ``(rows, D)`` table from their steps in
    ``row_step`` to step ``up_to`` by the closed form of zero-gradient :ref:`algo-proximal` steps with G
    fixed (see `adagrad.kernels.proximal_cpu.zero_steps_row`), in float64."""
    rows = torch.unique(rows.long())
    pending = up_to - row_step[rows]
    stale = pending > 0
    rows, pending = rows[stale], pending[stale].unsqueeze(1)
    theta = table.index_select(0, rows).to(torch.float64)
    eta = rule.lr / (state_sum.index_select(0, rows).to(torch.float64).sqrt() + rule.eps)
    if rule.l2 > 0:
        log_q = -pending * torch.log1p(eta * rule.l2)
        kept = theta.abs() * torch.exp(log_q) + (rule.l1 / rule.l2) * torch.expm1(log_q)
    else:
        kept = theta.abs() - pending * eta * rule.l1
    table.index_copy_(0, rows, torch.copysign(kept.clamp_min(0), theta).to(table.dtype))
    row_step[rows] = float(up_to)
