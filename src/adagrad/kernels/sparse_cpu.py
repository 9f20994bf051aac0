"""Sparse Adagrad on the CPU: deduplicate, then one parallel pass per touched row.

For a COO gradient of an embedding table (``indices`` may repeat, unsorted), ALGORITHMS.md
§2: the contributions of each row are summed, and each touched row is read once and
written once (θ_r and G_r, plus its lazy-decay snapshots). No coalesced copy of the
gradient and no temporary the size of the table: the grouping is a hash of the touched
rows, O(nnz) memory.
"""

from __future__ import annotations

import math
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
    store_bf16,
    store_float,
)
from adagrad.kernels.rule import StepRule

_NO_SNAPSHOTS = np.zeros(0, np.float64)
_PREFETCH_AHEAD = 8  # rows: touched rows are scattered, so their loads are overlapped
_CHUNKS = 64  # slices of the touched rows that the parallel kernels share out


@numba.njit(cache=True)
def group_rows(indices, num_rows):
    """Group positions of ``indices`` by row, in first-seen order.

    Returns ``(rows, offsets, order, bad)``: the distinct rows; for the u-th of them the
    positions ``order[offsets[u]:offsets[u+1]]`` of ``indices`` holding it; and ``bad``,
    the first position whose index lies outside ``[0, num_rows)`` (-1 if none; the other
    outputs are then empty).
    """
    n = indices.size
    capacity = 2
    while capacity < 2 * n:
        capacity *= 2
    mask = np.uint64(capacity - 1)
    slots = np.full(capacity, -1, np.int64)
    rows = np.empty(n, np.int64)
    row_of = np.empty(n, np.int64)
    offsets = np.zeros(n + 1, np.int64)
    distinct = 0
    for k in range(n):
        row = np.int64(indices[k])
        if row < 0 or row >= num_rows:
            return rows[:0], offsets[:1], row_of[:0], k
        slot = ((np.uint64(row) * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(32)) & mask
        while True:
            u = slots[slot]
            if u == -1:
                u = distinct
                slots[slot] = u
                rows[u] = row
                distinct += 1
                break
            if rows[u] == row:
                break
            slot = (slot + np.uint64(1)) & mask
        row_of[k] = u
        offsets[u + 1] += 1
    for u in range(distinct):
        offsets[u + 1] += offsets[u]
    order = np.empty(n, np.int64)
    fill = offsets[:distinct].copy()
    for k in range(n):
        u = row_of[k]
        order[fill[u]] = k
        fill[u] += 1
    return rows[:distinct], offsets[:distinct + 1], order, -1


@numba.njit(inline="always")
def _update_row(u, stop, param, state_sum, values, rows, offsets, order, rule, clocks, scratch,
                load, store):
    """Sum row ``rows[u]``'s contributions, catch up its lazy decay, apply §1 to it.

    Each loop over the row's width is a plain vectorisable loop; duplicates are summed
    into ``scratch`` first. Rows a few places ahead (below ``stop``) are prefetched.
    """
    if u + _PREFETCH_AHEAD < stop:
        prefetch_row(param, rows[u + _PREFETCH_AHEAD])
        prefetch_row(state_sum, rows[u + _PREFETCH_AHEAD])
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
    first, last = offsets[u], offsets[u + 1]
    grad = values[order[first]]
    if last - first > 1:
        grad = scratch
        grad[:] = values[order[first]]
        for j in range(first + 1, last):
            grad += values[order[j]]
    for d in range(width):
        p, s = adagrad_coordinate(load(param[row, d]), grad[d], state_sum[row, d], rule)
        param[row, d] = store(p)
        state_sum[row, d] = s


@numba.njit(inline="always")
def _update_chunk(chunk, chunks, param, state_sum, values, rows, offsets, order, rule, clocks,
                  load, store):
    """`_update_row` over the ``chunk``-th of ``chunks`` equal slices of the rows."""
    start = rows.size * chunk // chunks
    stop = rows.size * (chunk + 1) // chunks
    scratch = np.empty(values.shape[1], values.dtype)
    for u in range(start, stop):
        _update_row(u, stop, param, state_sum, values, rows, offsets, order, rule, clocks,
                    scratch, load, store)


# One kernel per (parameter storage, threading); see dense_cpu. The parallel ones hand out
# `_CHUNKS` slices of the touched rows to the threads.
@numba.njit(cache=True)
def _float_serial(param, state_sum, values, rows, offsets, order, rule, clocks):
    _update_chunk(0, 1, param, state_sum, values, rows, offsets, order, rule, clocks,
                  load_float, store_float)


@numba.njit(parallel=True, cache=True)
def _float_parallel(param, state_sum, values, rows, offsets, order, rule, clocks):
    for chunk in numba.prange(_CHUNKS):
        _update_chunk(chunk, _CHUNKS, param, state_sum, values, rows, offsets, order, rule,
                      clocks, load_float, store_float)


@numba.njit(cache=True)
def _bf16_serial(param, state_sum, values, rows, offsets, order, rule, clocks):
    _update_chunk(0, 1, param, state_sum, values, rows, offsets, order, rule, clocks,
                  load_bf16, store_bf16)


@numba.njit(parallel=True, cache=True)
def _bf16_parallel(param, state_sum, values, rows, offsets, order, rule, clocks):
    for chunk in numba.prange(_CHUNKS):
        _update_chunk(chunk, _CHUNKS, param, state_sum, values, rows, offsets, order, rule,
                      clocks, load_bf16, store_bf16)


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
    rows, offsets, order, bad = group_rows(indices.numpy(), num_rows)
    if bad >= 0:
        raise IndexError(f"sparse gradient index {int(indices[bad])} is out of range for "
                         f"a table of {num_rows} rows")
    return rows, offsets, order


def sparse_adagrad_(param: Tensor, state_sum: Tensor, indices: Tensor, values: Tensor,
                    rule: StepRule, clocks: RowClocks) -> None:
    """One sparse Adagrad step (ALGORITHMS.md §2) on a ``(rows, D)`` table, in place.

    Same contract as `adagrad.kernels.portable.sparse_adagrad_`, except that indices are
    validated here, before anything is written (IndexError).
    """
    rule = replace(rule, decoupled=False, accumulator_decay=1.0)  # both come through clocks
    rows, offsets, order = find_rows(indices, param.shape[0])
    parallel = values.numel() >= PARALLEL_MIN_ELEMENTS
    kernel = _KERNELS[param.dtype == torch.bfloat16, parallel]
    kernel(as_numpy(param), as_numpy(state_sum), values.detach().contiguous().numpy(), rows,
           offsets, order, rule_tuple(rule, scalar_type(state_sum)),
           (float(clocks.param_log), _snapshots(clocks.row_param_log),
            float(clocks.sum_log), _snapshots(clocks.row_sum_log)))


def _snapshots(row_log: Tensor | None) -> np.ndarray:
    return _NO_SNAPSHOTS if row_log is None else row_log.numpy()
