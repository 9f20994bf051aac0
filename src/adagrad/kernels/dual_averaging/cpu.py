"""Adagrad with dual averaging on the CPU (:ref:`algo-dual-averaging`): one numba pass over θ, g,
z and G.

`dual_averaging_weight` is :ref:`algo-dual-averaging`'s θ as a closed form of (z, G) for a `DualAveragingRule`'s
step T, written branch-free (l1 = 0 and l2 = 0 are neutral coefficients);
`dual_averaging_coordinate` adds the gradient to the sums first. The same closed form
brings an untouched row's θ to step T at lookup (``sparse_catch_up=True``), so a row
caught up reads bit for bit what the dense kernel writes. Dense kernels as in `dense_cpu`:
serial below 65,536 elements, parallel above, float32/float64/bfloat16 parameters; the
sparse kernels are a client of the row engine in `adagrad.kernels.sparse_cpu`.
"""

from __future__ import annotations

import functools
import math

import numba
import torch
from torch import Tensor

from adagrad.kernels.engine import sparse_cpu
from adagrad.kernels.engine.elementwise import (
    KERNEL_PARAM_DTYPES,
    KERNEL_STATE_DTYPES,
    PARALLEL_MIN_ELEMENTS,
    as_numpy,
    load_bf16,
    load_float,
    prefetch_row,
    scalar_type,
    start_thread_pool,
    store_bf16,
    store_float,
)
from adagrad.kernels.engine.rule import DualAveragingRule
from adagrad.kernels.engine.sparse_cpu import (
    ALL_POSITIONS,
    PREFETCH_AHEAD,
    first_out_of_range,
    partition_positions,
    update_partition,
    update_rows_,
    update_rows_serial,
)


@functools.lru_cache(maxsize=256)
def dual_averaging_tuple(rule: DualAveragingRule, scalar) -> tuple:
    """`DualAveragingRule` as the coefficients the kernels take, in the compute type:
    (lr, sign, l1·T, l2·T·lr, 0), the products formed in float64 first."""
    return (scalar(rule.lr), scalar(-1.0 if rule.maximize else 1.0),
            scalar(rule.l1 * rule.step), scalar(rule.l2 * rule.step * rule.lr), scalar(0.0))


@numba.njit(inline="always", error_model="numpy")
def dual_averaging_weight(z, s, rule):
    """:ref:`algo-dual-averaging`'s θ from the sums z and G = ``s`` (``rule`` a `dual_averaging_tuple`)."""
    lr, _, l1_t, l2_t_lr, zero = rule
    shrunk = abs(z) - l1_t
    shrunk = zero if shrunk < zero else shrunk  # max(·, 0) that keeps NaN and vectorises
    return -math.copysign(shrunk, z) * lr / (l2_t_lr + math.sqrt(s))


@numba.njit(inline="always", error_model="numpy")
def dual_averaging_coordinate(g, z, s, rule):
    """:ref:`algo-dual-averaging` on one coordinate; returns the new (θ, z, G)."""
    g = rule[1] * g
    z = z + g
    s = s + g * g
    return dual_averaging_weight(z, s, rule), z, s


@numba.njit(inline="always", error_model="numpy")
def _update_at(i, param, grad, grad_sum, state_sum, rule, load, store):
    p, z, s = dual_averaging_coordinate(load(grad[i]), grad_sum[i], state_sum[i], rule)
    param[i] = store(p)
    grad_sum[i] = z
    state_sum[i] = s


# One kernel per (parameter storage, threading), as in dense_cpu.
@numba.njit(cache=True, error_model="numpy")
def _float_serial(param, grad, grad_sum, state_sum, rule):
    for i in range(param.size):
        _update_at(i, param, grad, grad_sum, state_sum, rule, load_float, store_float)


@numba.njit(parallel=True, cache=True, error_model="numpy")
def _float_parallel(param, grad, grad_sum, state_sum, rule):
    for i in numba.prange(param.size):
        _update_at(i, param, grad, grad_sum, state_sum, rule, load_float, store_float)


@numba.njit(cache=True, error_model="numpy")
def _bf16_serial(param, grad, grad_sum, state_sum, rule):
    for i in range(param.size):
        _update_at(i, param, grad, grad_sum, state_sum, rule, load_bf16, store_bf16)


@numba.njit(parallel=True, cache=True, error_model="numpy")
def _bf16_parallel(param, grad, grad_sum, state_sum, rule):
    for i in numba.prange(param.size):
        _update_at(i, param, grad, grad_sum, state_sum, rule, load_bf16, store_bf16)


_KERNELS = {(False, False): _float_serial, (False, True): _float_parallel,
            (True, False): _bf16_serial, (True, True): _bf16_parallel}


def supports(param: Tensor, grad: Tensor, grad_sum: Tensor, state_sum: Tensor) -> bool:
    """Whether the numba kernels can run the step: CPU, contiguous, a float32/float64/
    bfloat16 parameter and gradient of one dtype, both sums of one float32/float64
    dtype (float32 for bfloat16)."""
    tensors = (param, grad, grad_sum, state_sum)
    return (all(t.device.type == "cpu" and t.is_contiguous() for t in tensors)
            and param.dtype in KERNEL_PARAM_DTYPES and grad.dtype == param.dtype
            and state_sum.dtype in KERNEL_STATE_DTYPES and grad_sum.dtype == state_sum.dtype
            and (param.dtype != torch.bfloat16 or state_sum.dtype == torch.float32))


def dense_dual_averaging_(param: Tensor, grad: Tensor, grad_sum: Tensor, state_sum: Tensor,
                          rule: DualAveragingRule) -> None:
    """One dense step of :ref:`algo-dual-averaging`, in place (inputs as `supports` accepts)."""
    parallel = param.numel() >= PARALLEL_MIN_ELEMENTS
    if parallel:
        start_thread_pool()
    kernel = _KERNELS[param.dtype == torch.bfloat16, parallel]
    kernel(as_numpy(param).reshape(-1), as_numpy(grad).reshape(-1),
           as_numpy(grad_sum).reshape(-1), as_numpy(state_sum).reshape(-1),
           dual_averaging_tuple(rule, scalar_type(state_sum)))


@numba.njit(inline="always", error_model="numpy")
def _weights_of_part(table, grad_sum, state_sum, rows, row_step, rule, step, order, lo, hi,
                     store):
    """θ of each row of ``rows[order[lo:hi]]`` (``order`` empty: positions ``lo..hi-1``)
    not yet computed at ``step`` (``row_step[row, 0]``) recomputed from its sums, so that
    a row looked up many times is computed once; rows a few positions ahead are
    prefetched."""
    for j in range(lo, hi):
        ahead = j + PREFETCH_AHEAD
        if ahead < hi:
            upcoming = rows[order[ahead] if order.size > 0 else ahead]
            prefetch_row(row_step, upcoming)
            prefetch_row(grad_sum, upcoming)
            prefetch_row(state_sum, upcoming)
            prefetch_row(table, upcoming)
        row = rows[order[j] if order.size > 0 else j]
        if row_step[row, 0] != step:
            row_step[row, 0] = step
            for d in range(table.shape[1]):
                table[row, d] = store(dual_averaging_weight(grad_sum[row, d], state_sum[row, d],
                                                            rule))


# Serial and parallel kernels as the row engine's: in parallel the looked-up positions
# are shared out by a hash of their row (`partition_positions`), so that no two threads
# meet the same row.
@numba.njit(cache=True, error_model="numpy")
def _weights_float(table, grad_sum, state_sum, rows, row_step, rule, step):
    _weights_of_part(table, grad_sum, state_sum, rows, row_step, rule, step, ALL_POSITIONS, 0,
                     rows.size, store_float)


@numba.njit(parallel=True, cache=True, error_model="numpy")
def _weights_float_parallel(table, grad_sum, state_sum, rows, row_step, rule, step, parts):
    order, starts = partition_positions(rows, parts)
    for part in numba.prange(parts):
        _weights_of_part(table, grad_sum, state_sum, rows, row_step, rule, step, order,
                         starts[part], starts[part + 1], store_float)


@numba.njit(cache=True, error_model="numpy")
def _weights_bf16(table, grad_sum, state_sum, rows, row_step, rule, step):
    _weights_of_part(table, grad_sum, state_sum, rows, row_step, rule, step, ALL_POSITIONS, 0,
                     rows.size, store_bf16)


@numba.njit(parallel=True, cache=True, error_model="numpy")
def _weights_bf16_parallel(table, grad_sum, state_sum, rows, row_step, rule, step, parts):
    order, starts = partition_positions(rows, parts)
    for part in numba.prange(parts):
        _weights_of_part(table, grad_sum, state_sum, rows, row_step, rule, step, order,
                         starts[part], starts[part + 1], store_bf16)


_WEIGHTS = {(False, False): _weights_float, (False, True): _weights_float_parallel,
            (True, False): _weights_bf16, (True, True): _weights_bf16_parallel}


def weights_of_rows_(table: Tensor, grad_sum: Tensor, state_sum: Tensor, rows: Tensor,
                     row_step: Tensor, rule: DualAveragingRule) -> None:
    """Recompute θ of ``rows`` (may repeat) of a ``(rows, D)`` table from its sums at the
    rule's step, in place, skipping rows whose ``row_step`` (float64, one per row,
    advanced here) says they are computed at that step already: the lazy catch-up of :ref:`algo-dual-averaging`.
    IndexError, before any write, for a row outside the table. Parallel from 65,536
    elements of rows."""
    rows = rows.long().contiguous().numpy()
    bad = first_out_of_range(rows, table.shape[0])
    if bad >= 0:
        raise IndexError(f"index {rows[bad]} is out of range for a table of {table.shape[0]} "
                         f"rows")
    args = (as_numpy(table), as_numpy(grad_sum), as_numpy(state_sum), rows,
            row_step.numpy().reshape(-1, 1), dual_averaging_tuple(rule, scalar_type(state_sum)),
            float(rule.step))
    bf16 = table.dtype == torch.bfloat16
    if rows.size * table.shape[1] >= PARALLEL_MIN_ELEMENTS:
        start_thread_pool()
        _WEIGHTS[bf16, True](*args, numba.get_num_threads())
    else:
        _WEIGHTS[bf16, False](*args)


@numba.njit(inline="always", error_model="numpy")
def _weights_flat(param, grad_sum, state_sum, rule, store):
    for i in range(param.size):
        param[i] = store(dual_averaging_weight(grad_sum[i], state_sum[i], rule))


@numba.njit(cache=True, error_model="numpy")
def _weights_flat_float(param, grad_sum, state_sum, rule):
    _weights_flat(param, grad_sum, state_sum, rule, store_float)


@numba.njit(cache=True, error_model="numpy")
def _weights_flat_bf16(param, grad_sum, state_sum, rule):
    _weights_flat(param, grad_sum, state_sum, rule, store_bf16)


def recompute_weights_(param: Tensor, grad_sum: Tensor, state_sum: Tensor,
                       rule: DualAveragingRule) -> None:
    """Recompute all of θ from its sums at the rule's step, in place (inputs as
    `supports` accepts, with θ itself as the gradient)."""
    kernel = _weights_flat_bf16 if param.dtype == torch.bfloat16 else _weights_flat_float
    kernel(as_numpy(param).reshape(-1), as_numpy(grad_sum).reshape(-1),
           as_numpy(state_sum).reshape(-1), dual_averaging_tuple(rule, scalar_type(state_sum)))


# ------------------------------------------------------------------ sparse rows (the engine)


@numba.njit(inline="always", error_model="numpy")
def _dual_averaging_row(tables, row, grad_row, factor, coefficients, load, store):
    """The engine's row update: :ref:`algo-dual-averaging` with the row's summed gradient. ``tables`` is
    ``(param, z, G)``, ``coefficients`` ``(rule,)``."""
    param = tables[0]
    grad_sum = tables[1]
    state_sum = tables[2]
    rule = coefficients[0]
    for d in range(param.shape[1]):
        p, z, s = dual_averaging_coordinate(grad_row[d] * factor, grad_sum[row, d],
                                            state_sum[row, d], rule)
        param[row, d] = store(p)
        grad_sum[row, d] = z
        state_sum[row, d] = s


@numba.njit(inline="always", error_model="numpy")
def _dual_averaging_prefetch(tables, row):
    prefetch_row(tables[0], row)
    prefetch_row(tables[1], row)
    prefetch_row(tables[2], row)


# One kernel per (parameter storage, threading): see `adagrad.kernels.sparse_cpu`.
@numba.njit(cache=True, error_model="numpy")
def _sparse_float_serial(param, grad_sum, state_sum, indices, grad, rule):
    update_rows_serial((param, grad_sum, state_sum), indices, grad, (rule,),
                       _dual_averaging_row, _dual_averaging_prefetch, load_float, store_float)


@numba.njit(parallel=True, cache=True, error_model="numpy")
def _sparse_float_parallel(param, grad_sum, state_sum, indices, grad, rule, parts):
    order, starts = partition_positions(indices, parts)
    for part in numba.prange(parts):
        update_partition((param, grad_sum, state_sum), indices, grad, (rule,), order, starts,
                         part, _dual_averaging_row, _dual_averaging_prefetch, load_float,
                         store_float)


@numba.njit(cache=True, error_model="numpy")
def _sparse_bf16_serial(param, grad_sum, state_sum, indices, grad, rule):
    update_rows_serial((param, grad_sum, state_sum), indices, grad, (rule,),
                       _dual_averaging_row, _dual_averaging_prefetch, load_bf16, store_bf16)


@numba.njit(parallel=True, cache=True, error_model="numpy")
def _sparse_bf16_parallel(param, grad_sum, state_sum, indices, grad, rule, parts):
    order, starts = partition_positions(indices, parts)
    for part in numba.prange(parts):
        update_partition((param, grad_sum, state_sum), indices, grad, (rule,), order, starts,
                         part, _dual_averaging_row, _dual_averaging_prefetch, load_bf16,
                         store_bf16)


_SPARSE_SERIAL = {False: _sparse_float_serial, True: _sparse_bf16_serial}
_SPARSE_PARALLEL = {False: _sparse_float_parallel, True: _sparse_bf16_parallel}


def sparse_dual_averaging_(table: Tensor, grad_sum: Tensor, state_sum: Tensor, indices: Tensor,
                           values: Tensor, rule: DualAveragingRule,
                           value_of: Tensor | None = None, scale: Tensor | None = None) -> None:
    """One step of :ref:`algo-dual-averaging` on the touched rows of a ``(rows, D)`` table, in place: the contract
    of `adagrad.kernels.portable_dual_averaging.sparse_dual_averaging_`, on the inputs
    `sparse_supports` accepts; indices are checked here, before anything is written
    (IndexError)."""
    update_rows_(_SPARSE_SERIAL, _SPARSE_PARALLEL, (table, grad_sum, state_sum), indices,
                 values, (dual_averaging_tuple(rule, scalar_type(state_sum)),), value_of, scale)


def sparse_supports(table: Tensor, grad_sum: Tensor, state_sum: Tensor, values: Tensor) -> bool:
    """Whether the sparse kernels can run the step: those of
    `adagrad.kernels.sparse_cpu.supports`, with z contiguous and of G's dtype."""
    return (sparse_cpu.supports(table, state_sum, values) and grad_sum.device == table.device
            and grad_sum.dtype == state_sum.dtype and grad_sum.is_contiguous())
