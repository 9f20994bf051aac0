"""Sparse Adagrad on the CPU: deduplicate, then one pass per touched row.

For a row gradient of an embedding table (``indices`` may repeat, unsorted), ALGORITHMS.md
§2: the contributions of each row are summed, and each touched row is read once and
written once (θ_r and G_r, plus its lazy-decay snapshots). No temporary the size of the
table and no coalesced copy of the gradient: the grouping is a hash of the touched rows,
and only rows touched more than once get a summed copy; the others are read in place.
In parallel, each thread takes the rows of one hash partition and groups, sums and
updates them on its own: one parallel region, no row shared, no merge.

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
def first_out_of_range(indices, num_rows):
    """The first position whose index lies outside ``[0, num_rows)``, or -1."""
    for k in range(indices.size):
        if indices[k] < 0 or indices[k] >= num_rows:
            return k
    return -1


@numba.njit(inline="always", error_model="numpy")
def _group_part(indices, part, parts):
    """Group the positions whose row falls in partition ``part`` of ``parts`` (rows are
    shared out by hash, so each partition's rows are its own), with a hash table.

    Returns ``(rows, first, counts, mine, row_of)``: the partition's distinct rows in
    first-seen order, the position of each one's first occurrence and its number of
    occurrences; the partition's positions in order, and the number of each one's row.
    """
    n = indices.size
    capacity = 2
    while capacity < 2 * n:
        capacity *= 2
    mask = np.uint64(capacity - 1)
    slots = np.full(capacity, -1, np.int32)
    rows = np.empty(n, np.int64)
    first = np.empty(n, np.int64)
    counts = np.zeros(n, np.int32)
    mine = np.empty(n, np.int64)
    row_of = np.empty(n, np.int32)
    distinct = owned = 0
    for k in range(n):
        row = np.int64(indices[k])
        hashed = np.uint64(row) * np.uint64(0x9E3779B97F4A7C15)
        if (hashed >> np.uint64(58)) % np.uint64(parts) != np.uint64(part):
            continue
        slot = (hashed >> np.uint64(32)) & mask  # bits apart from the partition's
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
        mine[owned] = k
        row_of[owned] = u
        owned += 1
        counts[u] += 1
    return rows[:distinct], first[:distinct], counts[:distinct], mine[:owned], row_of[:owned]


@numba.njit(inline="always", error_model="numpy")
def _sum_duplicates(grad, counts, mine, row_of):
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
    for j in range(mine.size):
        target = slot[row_of[j]]
        if target >= 0:
            k = mine[j]
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
def _update_part(part, parts, param, state_sum, indices, grad, rule, clocks, load, store):
    """Group, sum and update the rows of partition ``part`` of ``parts``."""
    rows, first, counts, mine, row_of = _group_part(indices, part, parts)
    slot, sums = _sum_duplicates(grad, counts, mine, row_of)
    for u in range(rows.size):
        _update_row(u, rows.size, param, state_sum, grad, rows, first, slot, sums, rule,
                    clocks, load, store)


# One kernel per (parameter storage, threading); see dense_cpu. Each takes the rows in
# ``parts`` hash partitions: the parallel ones one per thread, the serial ones one in all.
@numba.njit(cache=True, error_model="numpy")
def _float_serial(param, state_sum, indices, grad, rule, clocks, parts):
    for part in range(parts):
        _update_part(part, parts, param, state_sum, indices, grad, rule, clocks, load_float,
                     store_float)


@numba.njit(parallel=True, cache=True, error_model="numpy")
def _float_parallel(param, state_sum, indices, grad, rule, clocks, parts):
    for part in numba.prange(parts):
        _update_part(part, parts, param, state_sum, indices, grad, rule, clocks, load_float,
                     store_float)


@numba.njit(cache=True, error_model="numpy")
def _bf16_serial(param, state_sum, indices, grad, rule, clocks, parts):
    for part in range(parts):
        _update_part(part, parts, param, state_sum, indices, grad, rule, clocks, load_bf16,
                     store_bf16)


@numba.njit(parallel=True, cache=True, error_model="numpy")
def _bf16_parallel(param, state_sum, indices, grad, rule, clocks, parts):
    for part in numba.prange(parts):
        _update_part(part, parts, param, state_sum, indices, grad, rule, clocks, load_bf16,
                     store_bf16)


_KERNELS = {(False, False): _float_serial, (False, True): _float_parallel,
            (True, False): _bf16_serial, (True, True): _bf16_parallel}


def supports(param: Tensor, state_sum: Tensor, values: Tensor) -> bool:
    """Whether this kernel can run the step: CPU, contiguous 2-D tables, supported dtypes."""
    return (param.device.type == "cpu" and values.device == param.device
            and state_sum.device == param.device and param.dim() == 2
            and param.dtype in KERNEL_PARAM_DTYPES and state_sum.dtype in KERNEL_STATE_DTYPES
            and values.dtype in (torch.float32, torch.float64)
            and param.is_contiguous() and state_sum.is_contiguous())


def sparse_adagrad_(param: Tensor, state_sum: Tensor, indices: Tensor, values: Tensor,
                    rule: StepRule, clocks: RowClocks, value_of: Tensor | None = None,
                    scale: Tensor | None = None) -> None:
    """One sparse Adagrad step (ALGORITHMS.md §2) on a ``(rows, D)`` table, in place.

    Same contract as `adagrad.kernels.portable.sparse_adagrad_`, except that indices are
    validated here, before anything is written (IndexError).
    """
    rule = replace(rule, decoupled=False, accumulator_decay=1.0)  # both come through clocks
    indices = indices.contiguous().numpy()
    bad = first_out_of_range(indices, param.shape[0])
    if bad >= 0:
        raise IndexError(f"sparse gradient index {indices[bad]} is out of range for a table "
                         f"of {param.shape[0]} rows")
    scale = torch.ones(1, dtype=values.dtype) if scale is None else scale.to(values.dtype)
    grad = GradRows(values.detach().contiguous().numpy(),
                    _IDENTITY if value_of is None else value_of.long().contiguous().numpy(),
                    scale.detach().contiguous().numpy())
    parallel = indices.size * values.shape[1] >= PARALLEL_MIN_ELEMENTS
    if parallel:
        start_thread_pool()
    kernel = _KERNELS[param.dtype == torch.bfloat16, parallel]
    kernel(as_numpy(param), as_numpy(state_sum), indices, grad,
           rule_tuple(rule, scalar_type(state_sum)),
           (float(clocks.param_log), _snapshots(clocks.row_param_log),
            float(clocks.sum_log), _snapshots(clocks.row_sum_log)),
           numba.get_num_threads() if parallel else 1)


def _snapshots(row_log: Tensor | None) -> np.ndarray:
    return _NO_SNAPSHOTS if row_log is None else row_log.numpy()
