"""Sparse Adagrad rows on CUDA: deduplication by a sort on the device, then one Triton
pass over the touched rows (issue 13; :ref:`algo-sparse`, semantics of
`portable.sparse_adagrad_`).

For ``nnz`` positions (row ``indices[k]``, gradient ``scale[k]·values[value_of[k]]``):

1. the positions are sorted by row (``torch.sort``, stable); a slot of the sorted order
   is a row's first when its row differs from the previous slot's, and every slot knows
   its segment's first slot from a running maximum: no host synchronisation, since no
   output size depends on the data (the unique rows are never counted on the host);
2. `_sum_duplicates` adds each position's scaled gradient row into its segment's first
   slot of a float32 ``(nnz, D)`` buffer (atomic adds: a row's duplicates are summed in
   no fixed order, so repeated rows may differ in the last bit between runs);
3. `_update_rows` applies, at each first slot, the row's pending lazy decay factors
   (``exp(clock - snapshot)``, :ref:`algo-sparse`, computed in float64 where the device has
   it) and the :ref:`algo-adagrad` rule to θ and G of that row: each touched row is read and written once.

Kernels take float32, bfloat16 and float16 tables with a float32 accumulator; arithmetic
is float32.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from adagrad.kernels.engine.clocks import RowClocks
from adagrad.kernels.adagrad.torch_ops import _row_factors
from adagrad.kernels.engine.rule import StepRule
from adagrad.kernels.adagrad.triton import PARAM_DTYPES

MAX_BLOCK_D = 256  # columns per program (wider rows take several programs)


def supports(param: Tensor, state_sum: Tensor, values: Tensor) -> bool:
    """Whether the kernels take this table: contiguous ``(rows, D)`` θ in a kernel dtype,
    its float32 accumulator, contiguous gradient rows in a kernel dtype."""
    return (param.dim() == 2 and param.dtype in PARAM_DTYPES
            and state_sum.dtype == torch.float32 and values.dtype in PARAM_DTYPES
            and param.is_contiguous() and state_sum.is_contiguous()
            and values.is_contiguous())


@triton.jit
def _sum_duplicates(summed, destination, values, value_of, scale, nnz, width,
                    HAS_VALUE_OF: tl.constexpr, SCALE_STRIDE: tl.constexpr,
                    HAS_SCALE: tl.constexpr, BLOCK_D: tl.constexpr):
    position = tl.program_id(0).to(tl.int64)
    columns = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    mask = columns < width
    source = position
    if HAS_VALUE_OF:
        source = tl.load(value_of + position).to(tl.int64)
    row = tl.load(values + source * width + columns, mask=mask).to(tl.float32)
    if HAS_SCALE:
        row = row * tl.load(scale + position * SCALE_STRIDE).to(tl.float32)
    slot = tl.load(destination + position)
    tl.atomic_add(summed + slot * width + columns, row, mask=mask)


@triton.jit
def _update_rows(param, state_sum, summed, sorted_rows, is_first, param_factors, sum_factors,
                 width, lr, eps, weight_decay, HAS_PARAM_CLOCK: tl.constexpr,
                 HAS_SUM_CLOCK: tl.constexpr, MAXIMIZE: tl.constexpr,
                 HAS_WEIGHT_DECAY: tl.constexpr, EPS_INSIDE: tl.constexpr,
                 BLOCK_D: tl.constexpr):
    slot = tl.program_id(0).to(tl.int64)
    columns = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    # only a row's first slot works: the others' columns are all masked off
    mask = columns < tl.where(tl.load(is_first + slot) != 0, width, 0)
    row = tl.load(sorted_rows + slot)
    at = row * width + columns
    theta = tl.load(param + at, mask=mask).to(tl.float32)
    state = tl.load(state_sum + at, mask=mask)
    g = tl.load(summed + slot * width + columns, mask=mask)
    if HAS_PARAM_CLOCK:
        theta = theta * tl.load(param_factors + slot)
    if HAS_SUM_CLOCK:
        state = state * tl.load(sum_factors + slot)
    if MAXIMIZE:
        g = -g
    if HAS_WEIGHT_DECAY:
        g = g + weight_decay * theta  # L2 on the touched rows ("touched" mode)
    state = state + g * g
    if EPS_INSIDE:
        denom = tl.sqrt_rn(state + eps)
        denom = tl.where(denom == 0, 1.0, denom)
    else:
        denom = tl.sqrt_rn(state) + eps
    theta = theta - lr * tl.div_rn(g, denom)
    tl.store(param + at, theta.to(param.dtype.element_ty), mask=mask)
    tl.store(state_sum + at, state, mask=mask)


def segments(indices: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The positions grouped by row, on the device and without host synchronisation:
    ``(sorted_rows, is_first, destination)``: the rows in ascending order (stable),
    whether each sorted slot is its row's first, and each original position's segment
    (the sorted slot of its row's first position)."""
    sorted_rows, order = torch.sort(indices.long(), stable=True)
    is_first = torch.ones_like(sorted_rows, dtype=torch.bool)
    is_first[1:] = sorted_rows[1:] != sorted_rows[:-1]
    slots = torch.arange(sorted_rows.numel(), device=indices.device)
    first_slot = torch.cummax(torch.where(is_first, slots, 0), 0).values
    destination = torch.empty_like(first_slot)
    destination[order] = first_slot
    return sorted_rows, is_first, destination


def _pending_factors(clock: float, snapshots: Tensor | None, rows: Tensor) -> Tensor | None:
    """The sorted slots' pending decay factors in float32 (snapshots advanced to
    ``clock``; duplicates write the same value), or None without snapshots."""
    factors = _row_factors(clock, snapshots, rows)
    return factors.to(torch.float32) if isinstance(factors, Tensor) else None


def sparse_adagrad_(param: Tensor, state_sum: Tensor, indices: Tensor, values: Tensor,
                    rule: StepRule, clocks: RowClocks, value_of: Tensor | None = None,
                    scale: Tensor | None = None) -> None:
    """One sparse Adagrad step on a ``(rows, D)`` table, in place; arguments and result as
    `portable.sparse_adagrad_` (the tables pass `supports`, indices lie in ``[0, rows)``)."""
    nnz, width = indices.numel(), param.shape[1]
    if nnz == 0 or width == 0:
        return
    sorted_rows, is_first, destination = segments(indices.reshape(-1))
    summed = torch.zeros((nnz, width), dtype=torch.float32, device=param.device)
    block_d = min(MAX_BLOCK_D, triton.next_power_of_2(width))
    grid = (nnz, triton.cdiv(width, block_d))
    if scale is not None:
        scale = scale.reshape(-1)
    _sum_duplicates[grid](
        summed, destination, values, indices if value_of is None else value_of,
        indices if scale is None else scale, nnz, width, HAS_VALUE_OF=value_of is not None,
        SCALE_STRIDE=0 if scale is None or scale.numel() == 1 else 1,
        HAS_SCALE=scale is not None, BLOCK_D=block_d)
    param_factors = _pending_factors(clocks.param_log, clocks.row_param_log, sorted_rows)
    sum_factors = _pending_factors(clocks.sum_log, clocks.row_sum_log, sorted_rows)
    _update_rows[grid](
        param, state_sum, summed, sorted_rows, is_first,
        summed if param_factors is None else param_factors,
        summed if sum_factors is None else sum_factors, width, rule.lr, rule.eps,
        rule.weight_decay, HAS_PARAM_CLOCK=param_factors is not None,
        HAS_SUM_CLOCK=sum_factors is not None, MAXIMIZE=rule.maximize,
        HAS_WEIGHT_DECAY=rule.weight_decay != 0, EPS_INSIDE=rule.eps_inside, BLOCK_D=block_d)
