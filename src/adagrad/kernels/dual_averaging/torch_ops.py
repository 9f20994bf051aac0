"""Adagrad-with-dual-averaging kernels built from torch ops (:ref:`algo-dual-averaging`): any
device, any floating dtype, autograd-friendly.

The semantics are `DualAveragingRule`'s; `adagrad.kernels.dual_averaging_cpu` implements
the same rule on the CPU, and the tests hold both to the float64 reference. Arithmetic
runs in the accumulators' dtype (float32 for bf16/fp16 parameters by default).
"""

from __future__ import annotations

import torch
from torch import Tensor

from adagrad.kernels.adagrad.torch_ops import summed_rows
from adagrad.kernels.engine.rule import DualAveragingRule


def _weights(grad_sum: Tensor, state_sum: Tensor, rule: DualAveragingRule) -> Tensor:
    """:ref:`algo-dual-averaging`'s θ from the sums z and G at the rule's step T."""
    shrunk = (grad_sum.abs() - rule.l1 * rule.step).clamp_min(0)
    return -torch.copysign(shrunk, grad_sum) * rule.lr / (
        state_sum.sqrt() + rule.l2 * rule.step * rule.lr)


def _add_to_sums(grad: Tensor, grad_sum: Tensor, state_sum: Tensor,
                 rule: DualAveragingRule) -> None:
    grad = grad.to(state_sum.dtype)
    if rule.maximize:
        grad = -grad
    grad_sum.add_(grad)
    state_sum.addcmul_(grad, grad)


def dense_dual_averaging_(param: Tensor, grad: Tensor, grad_sum: Tensor, state_sum: Tensor,
                          rule: DualAveragingRule) -> None:
    """One dense step of :ref:`algo-dual-averaging`, in place on ``param`` and both sums."""
    _add_to_sums(grad, grad_sum, state_sum, rule)
    param.copy_(_weights(grad_sum, state_sum, rule))


def sparse_dual_averaging_(table: Tensor, grad_sum: Tensor, state_sum: Tensor, indices: Tensor,
                           values: Tensor, rule: DualAveragingRule,
                           value_of: Tensor | None = None, scale: Tensor | None = None) -> None:
    """One step of :ref:`algo-dual-averaging` with a row gradient of a ``(rows, D)`` table, in place.

    Position ``k`` adds ``scale[k]·values[value_of[k]]`` to row ``indices[k]`` (as in
    `adagrad.kernels.portable.sparse_adagrad_`); duplicates are summed first, then the
    touched rows' sums grow and their θ is recomputed at the rule's step. Untouched rows
    keep z, G (as dense) and θ (stale until `weights_of_rows_`). Indices must lie in
    ``[0, rows)``.
    """
    rows, grad = summed_rows(indices, values, value_of, scale, state_sum.dtype)
    row_grad_sum = grad_sum.index_select(0, rows)
    row_sum = state_sum.index_select(0, rows)
    _add_to_sums(grad, row_grad_sum, row_sum, rule)
    grad_sum.index_copy_(0, rows, row_grad_sum)
    state_sum.index_copy_(0, rows, row_sum)
    table.index_copy_(0, rows, _weights(row_grad_sum, row_sum, rule).to(table.dtype))


def weights_of_rows_(table: Tensor, grad_sum: Tensor, state_sum: Tensor, rows: Tensor,
                     row_step: Tensor, rule: DualAveragingRule) -> None:
    """Recompute θ of ``rows`` (may repeat) of a ``(rows, D)`` table from its sums at the
    rule's step, in place, skipping rows whose ``row_step`` (float64, one per row,
    advanced here) says they are computed at that step already: the lazy catch-up of :ref:`algo-dual-averaging`."""
    rows = torch.unique(rows.long())
    rows = rows[row_step[rows] != rule.step]
    weights = _weights(grad_sum.index_select(0, rows), state_sum.index_select(0, rows), rule)
    table.index_copy_(0, rows, weights.to(table.dtype))
    row_step[rows] = float(rule.step)


def recompute_weights_(param: Tensor, grad_sum: Tensor, state_sum: Tensor,
                       rule: DualAveragingRule) -> None:
    """Recompute all of θ from its sums at the rule's step, in place (any layout)."""
    param.copy_(_weights(grad_sum, state_sum, rule))
