"""Sparse Adagrad on the CPU: deduplicate, then one parallel pass per touched row.

For a row gradient of an embedding table (``indices`` may repeat, unsorted), ALGORITHMS.md
§2: the contributions of each row are summed, and each touched row is read once and
written once (θ_r and G_r, plus its lazy-decay snapshots). No temporary the size of the
table and no coalesced copy of the gradient: the grouping is a hash of the touched rows,
and only rows touched more than once get a summed copy; the others are read in place.

Position ``k`` contributes ``scale[k]·values[value_of[k]]`` to row ``indices[k]`` (a
`GradRows`): for a COO gradient ``value_of`` is the identity and the scale 1; a fused
embedding-bag backward passes its output gradient with each position's bag (and
per-sample weight), so that the ``(nnz, D)`` gradient is never built.
"""

from __future__ import annotations

import math
from collections import namedtuple
from dataclasses import replace

import numba
import numpy as np
import torch
from torch import Tensor

from adagrad.kernels.clocks import RowClocks
from adagrad.kernels.elementwise import (
    KERNEL_PARAM_DTYPES,
    KERNEL_STATE_DTYPES,
    PARALLEL_MIN_ELEMENTS,
    adagrad_coordinate,
    as_numpy,
    load_bf16,
    load_float,
    prefetch_row,
    rule_tuple,
    scalar_type,
    start_thread_pool,
    store_bf16,
    store_float,
)
from adagrad.kernels.rule import StepRule

_NO_SNAPSHOTS = np.zeros(0, np.float64)
_IDENTITY = np.zeros(0, np.int64)  # value_of for a COO gradient: position k reads row k
_PREFETCH_AHEAD = 8  # rows: touched rows are scattered, so their loads are overlapped
_CHUNKS = 64  # slices of the touched rows that the parallel kernels share out


@numba.njit(cache=True, error_model="numpy")
def group_rows(indices, num_rows):
    """Find the distinct rows of ``indices``, in first-seen order, with a hash table.

    Returns ``(rows, first, counts, row_of, bad)``: the distinct rows; the position of
    each one's first occurrence and its number of occurrences; for every position the
    number of its distinct row; and ``bad``, the first position whose index lies outside
    ``[0, num_rows)`` (-1 if none; the other outputs are then empty).
    """
    n = indices.size
    capacity = 2
    while capacity < 2 * n:
        capacity *= 2
    mask = np.uint64(capacity - 1)
    slots = np.full(capacity, -1, np.int64)
    rows = np.empty(n, np.int64)
    first = np.empty(n, np.int64)
    counts = np.zeros(n, np.int64)
    row_of = np.empty(n, np.int64)
    distinct = 0
    for k in range(n):
        row = np.int64(indices[k])
        if row < 0 or row >= num_rows:
            return rows[:0], first[:0], counts[:0], row_of[:0], k
        slot = ((np.uint64(row) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(32)) & mask
        while True:
            u = slots[slot]
            if u == -1:
                u = distinct
                slots[slot] = u
                rows[u] = row
                first[u] = k
                distinct += 1
                break
            if rows[u] == row:
                break
            slot = (slot + np.uint64(1)) & mask
        row_of[k] = u
        counts[u] += 1
    return rows[:distinct], first[:distinct], counts[:distinct], row_of, -1


GradRows = namedtuple("GradRows", "values value_of scale")
"""Where the kernels read position ``k``'s gradient: ``scale[k]·values[value_of[k]]``;
``value_of`` empty means the identity, a 1-element ``scale`` applies to every position."""


@numba.njit(inline="always", error_model="numpy")
def _source(value_of, k):
    """The row of ``values`` that position ``k`` reads."""
    return value_of[k] if value_of.size > 0 else k


@numba.njit(inline="always", error_model="numpy")
def _scale(scale, k):
    """Position ``k``'s factor."""
    return scale[k] if scale.size > 1 else scale[0]


@numba.njit(cache=True, error_model="numpy")
def sum_duplicates(grad, counts, row_of):
    """Sum the contributions (a `GradRows`) of every row touched more than once, in
    position order (one streaming pass). Returns ``(slot, sums)``: row u's sum is
    ``sums[slot[u]]`` where ``slot[u] >= 0``; rows touched once keep ``slot[u] == -1``
    and are read in place.
    """
    slot = np.full(counts.size, -1, np.int64)
    repeated = 0
    for u in range(counts.size):
        if counts[u] > 1:
            slot[u] = repeated
            repeated += 1
    values = grad.values
    sums = np.zeros((repeated, values.shape[1]), values.dtype)
    for k in range(row_of.size):
        target = slot[row_of[k]]
        if target >= 0:
            source = _source(grad.value_of, k)
            factor = _scale(grad.scale, k)
            for d in range(values.shape[1]):
                sums[target, d] += values[source, d] * factor
    return slot, sums


@numba.njit(inline="always", error_model="numpy")
def _update_row(u, stop, param, state_sum, grad, rows, first, slot, sums, rule, clocks,
                load, store):
    """Catch row ``rows[u]`` up on its lazy decay and apply §1 to it with its summed
    gradient. Each loop over the row's width is a plain vectorisable loop. Rows a few
    places ahead (below ``stop``) are prefetched, with their gradient rows: touched rows
    are scattered in memory.
    """
    ahead = u + _PREFETCH_AHEAD
    if ahead < stop:
        prefetch_row(param, rows[ahead])
        prefetch_row(state_sum, rows[ahead])
        if slot[ahead] < 0:
            prefetch_row(grad.values, _source(grad.value_of, first[ahead]))
    param_log, row_param_log, sum_log, row_sum_log = clocks
    row = rows[u]
    width = param.shape[1]
    if row_param_log.size > 0:
        factor = math.exp(param_log - row_param_log[row])
        row_param_log[row] = param_log
        for d in range(width):
            param[row, d] = store(load(param[row, d]) * factor)
    if row_sum_log.size > 0:
        factor = math.exp(sum_log - row_sum_log[row])
        row_sum_log[row] = sum_log
        for d in range(width):
            state_sum[row, d] = state_sum[row, d] * factor
    if slot[u] >= 0:
        row_grad, factor = sums[slot[u]], sums.dtype.type(1.0)
    else:
        row_grad = grad.values[_source(grad.value_of, first[u])]
        factor = _scale(grad.scale, first[u])
    for d in range(width):
        p, s = adagrad_coordinate(load(param[row, d]), row_grad[d] * factor, state_sum[row, d],
                                  rule)
        param[row, d] = store(p)
        state_sum[row, d] = s


@numba.njit(inline="always", error_model="numpy")
def _update_chunk(chunk, chunks, param, state_sum, grad, rows, first, slot, sums, rule,
                  clocks, load, store):
    """`_update_row` over the ``chunk``-th of ``chunks`` equal slices of the rows."""
    start = rows.size * chunk // chunks
    stop = rows.size * (chunk + 1) // chunks
    for u in range(start, stop):
        _update_row(u, stop, param, state_sum, grad, rows, first, slot, sums, rule, clocks,
                    load, store)


# One kernel per (parameter storage, threading); see dense_cpu. The parallel ones hand out
# `_CHUNKS` slices of the touched rows to the threads.
@numba.njit(cache=True, error_model="numpy")
def _float_serial(param, state_sum, grad, rows, first, slot, sums, rule, clocks):
    _update_chunk(0, 1, param, state_sum, grad, rows, first, slot, sums, rule, clocks,
                  load_float, store_float)


@numba.njit(parallel=True, cache=True, error_model="numpy")
def _float_parallel(param, state_sum, grad, rows, first, slot, sums, rule, clocks):
    for chunk in numba.prange(_CHUNKS):
        _update_chunk(chunk, _CHUNKS, param, state_sum, grad, rows, first, slot, sums,
                      rule, clocks, load_float, store_float)


@numba.njit(cache=True, error_model="numpy")
def _bf16_serial(param, state_sum, grad, rows, first, slot, sums, rule, clocks):
    _update_chunk(0, 1, param, state_sum, grad, rows, first, slot, sums, rule, clocks,
                  load_bf16, store_bf16)


@numba.njit(parallel=True, cache=True, error_model="numpy")
def _bf16_parallel(param, state_sum, grad, rows, first, slot, sums, rule, clocks):
    for chunk in numba.prange(_CHUNKS):
        _update_chunk(chunk, _CHUNKS, param, state_sum, grad, rows, first, slot, sums,
                      rule, clocks, load_bf16, store_bf16)


_KERNELS = {(False, False): _float_serial, (False, True): _float_parallel,
            (True, False): _bf16_serial, (True, True): _bf16_parallel}


def supports(param: Tensor, state_sum: Tensor, values: Tensor) -> bool:
    """Whether this kernel can run the step: CPU, contiguous 2-D tables, supported dtypes."""
    return (param.device.type == "cpu" and values.device == param.device
            and state_sum.device == param.device and param.dim() == 2
            and param.dtype in KERNEL_PARAM_DTYPES and state_sum.dtype in KERNEL_STATE_DTYPES
            and values.dtype in (torch.float32, torch.float64)
            and param.is_contiguous() and state_sum.is_contiguous())


def find_rows(indices: Tensor, num_rows: int):
    """`group_rows` on a tensor of indices; raises IndexError naming a bad index."""
    rows, first, counts, row_of, bad = group_rows(indices.numpy(), num_rows)
    if bad >= 0:
        raise IndexError(f"sparse gradient index {int(indices[bad])} is out of range for "
                         f"a table of {num_rows} rows")
    return rows, first, counts, row_of


def sparse_adagrad_(param: Tensor, state_sum: Tensor, indices: Tensor, values: Tensor,
                    rule: StepRule, clocks: RowClocks, value_of: Tensor | None = None,
                    scale: Tensor | None = None) -> None:
    """One sparse Adagrad step (ALGORITHMS.md §2) on a ``(rows, D)`` table, in place.

    Same contract as `adagrad.kernels.portable.sparse_adagrad_`, except that indices are
    validated here, before anything is written (IndexError).
    """
    rule = replace(rule, decoupled=False, accumulator_decay=1.0)  # both come through clocks
    rows, first, counts, row_of = find_rows(indices, param.shape[0])
    scale = torch.ones(1, dtype=values.dtype) if scale is None else scale.to(values.dtype)
    grad = GradRows(values.detach().contiguous().numpy(),
                    _IDENTITY if value_of is None else value_of.long().contiguous().numpy(),
                    scale.detach().contiguous().numpy())
    slot, sums = sum_duplicates(grad, counts, row_of)
    parallel = indices.numel() * values.shape[1] >= PARALLEL_MIN_ELEMENTS
    if parallel:
        start_thread_pool()
    kernel = _KERNELS[param.dtype == torch.bfloat16, parallel]
    kernel(as_numpy(param), as_numpy(state_sum), grad, rows, first, slot, sums,
           rule_tuple(rule, scalar_type(state_sum)),
           (float(clocks.param_log), _snapshots(clocks.row_param_log),
            float(clocks.sum_log), _snapshots(clocks.row_sum_log)))


def _snapshots(row_log: Tensor | None) -> np.ndarray:
    return _NO_SNAPSHOTS if row_log is None else row_log.numpy()
