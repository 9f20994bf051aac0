"""Sparse Adagrad on the CPU: deduplicate, then one parallel pass per touched row.

For a COO gradient of an embedding table (``indices`` may repeat, unsorted), ALGORITHMS.md
§2: the contributions of each row are summed, and each touched row is read once and
written once (θ_r and G_r, plus its lazy-decay snapshots). No coalesced copy of the
gradient and no temporary the size of the table: the grouping is a hash of the touched
rows, O(nnz) memory.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch
from torch import Tensor

from adagrad.kernels.clocks import RowClocks
from adagrad.kernels.elementwise import (KERNEL_PARAM_DTYPES, KERNEL_STATE_DTYPES,
                                         adagrad_coordinate, as_numpy, loader_pair,
                                         scalar_type)
from adagrad.kernels.rule import StepRule

_NO_SNAPSHOTS = np.zeros(0, np.float64)


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


@numba.njit(parallel=True, cache=True)
def _update_rows(param, state_sum, values, rows, offsets, order, lr, eps, eps_inside, maximize,
                 l2, param_log, row_param_log, sum_log, row_sum_log, load, store):
    width = param.shape[1]
    lazy_param = row_param_log.size > 0
    lazy_sum = row_sum_log.size > 0
    one = lr / lr
    for u in numba.prange(rows.size):
        row = rows[u]
        param_factor = one
        if lazy_param:
            param_factor = math.exp(param_log - row_param_log[row])
            row_param_log[row] = param_log
        sum_factor = one
        if lazy_sum:
            sum_factor = math.exp(sum_log - row_sum_log[row])
            row_sum_log[row] = sum_log
        first, last = offsets[u], offsets[u + 1]
        for d in range(width):
            g = lr - lr
            for j in range(first, last):
                g += values[order[j], d]
            p, s = adagrad_coordinate(load(param[row, d]) * param_factor, g,
                                      state_sum[row, d] * sum_factor, lr, eps, eps_inside,
                                      maximize, l2, False, one, one)
            param[row, d] = store(p)
            state_sum[row, d] = s


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
    rows, offsets, order = find_rows(indices, param.shape[0])
    scalar = scalar_type(state_sum)
    load, store = loader_pair(param.dtype)
    values_np = values.detach().contiguous().numpy()
    _update_rows(as_numpy(param), as_numpy(state_sum), values_np, rows, offsets, order,
                 scalar(rule.lr), scalar(rule.eps), rule.eps_inside, rule.maximize,
                 scalar(rule.weight_decay), float(clocks.param_log),
                 _snapshots(clocks.row_param_log), float(clocks.sum_log),
                 _snapshots(clocks.row_sum_log), load, store)


def _snapshots(row_log: Tensor | None) -> np.ndarray:
    return _NO_SNAPSHOTS if row_log is None else row_log.numpy()
