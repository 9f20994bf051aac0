"""Catching rows up on their pending lazy decay at lookup, on the CPU (:ref:`algo-sparse`).

A fused embedding layer calls this before its forward, so that the rows it reads are those
of the dense algorithm. Positions may repeat: a row is caught up the first time it is met
(its snapshot then equals the clock, and later meetings change nothing), so no grouping
pass is needed, and rows already up to date cost one comparison.
"""

from __future__ import annotations

import math

import numba
import numpy as np
from torch import Tensor

from adagrad.kernels.engine.clocks import RowClocks
from adagrad.kernels.engine.elementwise import (
    KERNEL_PARAM_DTYPES,
    KERNEL_STATE_DTYPES,
    as_numpy,
    load_bf16,
    load_float,
    store_bf16,
    store_float,
)
from adagrad.kernels.engine.sparse_cpu import first_out_of_range


@numba.njit(inline="always", error_model="numpy")
def _catch_up(table, rows, clock, snapshots, load, store):
    """Multiply each stale row of ``rows`` by ``exp(clock - snapshot)`` and advance its
    snapshot, in the arithmetic of the update kernels' own catch-up (`sparse_cpu`)."""
    width = table.shape[1]
    for k in range(rows.size):
        row = rows[k]
        if snapshots[row] != clock:
            factor = math.exp(clock - snapshots[row])
            snapshots[row] = clock
            for d in range(width):
                table[row, d] = store(load(table[row, d]) * factor)


@numba.njit(cache=True, error_model="numpy")
def _catch_up_float(table, rows, clock, snapshots):
    _catch_up(table, rows, clock, snapshots, load_float, store_float)


@numba.njit(cache=True, error_model="numpy")
def _catch_up_bf16(table, rows, clock, snapshots):
    _catch_up(table, rows, clock, snapshots, load_bf16, store_bf16)


def supports(param: Tensor, state_sum: Tensor, rows: Tensor) -> bool:
    """CPU, contiguous 2-D tables of the kernels' dtypes."""
    return (param.device.type == "cpu" and rows.device.type == "cpu"
            and state_sum.device.type == "cpu" and param.dim() == 2
            and param.dtype in KERNEL_PARAM_DTYPES and state_sum.dtype in KERNEL_STATE_DTYPES
            and param.is_contiguous() and state_sum.is_contiguous())


def catch_up_rows_(param: Tensor, state_sum: Tensor, rows: Tensor, clocks: RowClocks) -> None:
    """Bring ``rows`` (in ``[0, rows)``, may repeat) of a ``(rows, D)`` table up to date on
    their pending lazy decay, in place (see `adagrad.kernels.portable.catch_up_rows_`)."""
    rows = rows.contiguous().numpy()
    bad = first_out_of_range(rows, param.shape[0])
    if bad >= 0:
        raise IndexError(f"index {rows[bad]} is out of range for a table of {param.shape[0]} "
                         f"rows")
    for table, clock, snapshots in ((param, clocks.param_log, clocks.row_param_log),
                                    (state_sum, clocks.sum_log, clocks.row_sum_log)):
        if snapshots is None:
            continue
        array = as_numpy(table)
        kernel = _catch_up_bf16 if array.dtype == np.uint16 else _catch_up_float
        kernel(array, rows, float(clock), snapshots.numpy())
