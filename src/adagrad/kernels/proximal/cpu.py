"""Proximal Adagrad on the CPU (:ref:`algo-proximal`): one numba pass over θ, g and G.

`proximal_coordinate` is `ProximalRule` on one coordinate, written branch-free (l1 = 0
and l2 = 0 are neutral coefficients, not separate code); `zero_steps_row` is the
closed form of ``k`` steps with a zero gradient, which the lazy catch-up of untouched rows
(``sparse_catch_up=True``) applies. The dense kernels follow `dense_cpu`: serial below
65,536 elements, parallel above, float32/float64/bfloat16 parameters; the sparse kernels
are a client of the row engine in `adagrad.kernels.sparse_cpu`.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch
from torch import Tensor

from adagrad.kernels.engine.elementwise import (
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
from adagrad.kernels.engine.rule import ProximalRule
from adagrad.kernels.engine.sparse_cpu import (
    ALL_POSITIONS,
    PREFETCH_AHEAD,
    first_out_of_range,
    partition_positions,
    update_partition,
    update_rows_,
    update_rows_serial,
)
from adagrad.kernels.proximal.coordinate import proximal_coordinate, proximal_tuple  # noqa: F401


@numba.njit(inline="always", error_model="numpy")
def zero_steps_row(table, state_sum, row, pending, rule, scratch, load, store):
    """``pending`` steps of :ref:`algo-proximal` with g = 0 on row ``row`` of a table whose G is
    ``state_sum`` (so each coordinate's η is the same at every one of them), in float64.
    ``rule`` is a `zero_steps_tuple`; ``scratch`` a float64 ``(4, D)`` array.

    One such step maps x = |θ| to max(x - a, 0)/b with a = η·l1, b = 1 + η·l2. Its
    unclipped iterate is x·b⁻ᵏ - a·Σ_{j=1..k} b⁻ʲ, and once it reaches 0 the clipped
    one stays 0, so the k-step result is sign(θ)·max(u, 0) with

        u = x·q - (l1/l2)·(1 - q),   q = (1 + η·l2)⁻ᵏ      (l2 > 0)
        u = x - k·η·l1                                      (l2 = 0)

    q and 1 - q come from repeated squaring of (1 + η·l2)⁻¹ and of its complement,
    (1 - q₁q₂) = r₁ + r₂ - r₁r₂, so neither cancels and each is good to a few ulps
    times log₂(k); the squaring loops run over the whole row, so they vectorise (a
    log1p and an exp per coordinate cost 20x more).
    """
    lr, l1, l2, eps = rule
    width = table.shape[1]
    if l2 > 0:
        q_base = scratch[0]
        r_base = scratch[1]
        q = scratch[2]
        r = scratch[3]
        for d in range(width):
            a = lr / (math.sqrt(np.float64(state_sum[row, d])) + eps) * l2
            q_base[d] = 1.0 / (1.0 + a)
            r_base[d] = a * q_base[d]
            q[d] = 1.0
            r[d] = 0.0
        k = np.int64(pending)
        while k > 0:
            if k & 1:
                for d in range(width):
                    r[d] = r[d] + r_base[d] - r[d] * r_base[d]
                    q[d] = q[d] * q_base[d]
            k >>= 1
            if k > 0:
                for d in range(width):
                    r_base[d] = r_base[d] * (2.0 - r_base[d])
                    q_base[d] = q_base[d] * q_base[d]
        ratio = l1 / l2
        for d in range(width):
            p = np.float64(load(table[row, d]))
            u = abs(p) * q[d] - ratio * r[d]
            table[row, d] = store(math.copysign(0.0 if u < 0.0 else u, p))
    else:
        for d in range(width):
            p = np.float64(load(table[row, d]))
            u = abs(p) - pending * (lr / (math.sqrt(np.float64(state_sum[row, d])) + eps)) * l1
            table[row, d] = store(math.copysign(0.0 if u < 0.0 else u, p))


def zero_steps_tuple(rule: ProximalRule) -> tuple:
    """`ProximalRule` as `zero_steps_row` takes it: float64 (lr, l1, l2, ε)."""
    return (float(rule.lr), float(rule.l1), float(rule.l2), float(rule.eps))


@numba.njit(inline="always", error_model="numpy")
def _update_at(i, param, grad, state_sum, rule, load, store):
    p, s = proximal_coordinate(load(param[i]), load(grad[i]), state_sum[i], rule)
    param[i] = store(p)
    state_sum[i] = s


# One kernel per (parameter storage, threading), as in dense_cpu.
@numba.njit(cache=True, error_model="numpy")
def _float_serial(param, grad, state_sum, rule):
    for i in range(param.size):
        _update_at(i, param, grad, state_sum, rule, load_float, store_float)


@numba.njit(parallel=True, cache=True, error_model="numpy")
def _float_parallel(param, grad, state_sum, rule):
    for i in numba.prange(param.size):
        _update_at(i, param, grad, state_sum, rule, load_float, store_float)


@numba.njit(cache=True, error_model="numpy")
def _bf16_serial(param, grad, state_sum, rule):
    for i in range(param.size):
        _update_at(i, param, grad, state_sum, rule, load_bf16, store_bf16)


@numba.njit(parallel=True, cache=True, error_model="numpy")
def _bf16_parallel(param, grad, state_sum, rule):
    for i in numba.prange(param.size):
        _update_at(i, param, grad, state_sum, rule, load_bf16, store_bf16)


_KERNELS = {(False, False): _float_serial, (False, True): _float_parallel,
            (True, False): _bf16_serial, (True, True): _bf16_parallel}


def dense_proximal_(param: Tensor, grad: Tensor, state_sum: Tensor, rule: ProximalRule) -> None:
    """One dense proximal Adagrad step (:ref:`algo-proximal`), in place; the inputs are those
    `adagrad.kernels.dense_cpu.supports` accepts."""
    parallel = param.numel() >= PARALLEL_MIN_ELEMENTS
    if parallel:
        start_thread_pool()
    kernel = _KERNELS[param.dtype == torch.bfloat16, parallel]
    kernel(as_numpy(param).reshape(-1), as_numpy(grad).reshape(-1),
           as_numpy(state_sum).reshape(-1), proximal_tuple(rule, scalar_type(state_sum)))


@numba.njit(inline="always", error_model="numpy")
def _catch_up_part(table, state_sum, rows, row_step, up_to, rule, order, lo, hi, load, store):
    """Bring each row of ``rows[order[lo:hi]]`` (``order`` empty: positions ``lo..hi-1``)
    from its step ``row_step[row, 0]`` to step ``up_to`` by the zero-gradient closed form;
    rows already there are left alone (so repeats are free). Rows a few positions ahead
    are prefetched: looked-up rows are scattered in memory."""
    scratch = np.empty((4, table.shape[1]), np.float64)
    for j in range(lo, hi):
        ahead = j + PREFETCH_AHEAD
        if ahead < hi:
            upcoming = rows[order[ahead] if order.size > 0 else ahead]
            prefetch_row(row_step, upcoming)
            prefetch_row(table, upcoming)
            prefetch_row(state_sum, upcoming)
        row = rows[order[j] if order.size > 0 else j]
        pending = up_to - row_step[row, 0]
        if pending > 0:
            row_step[row, 0] = up_to
            zero_steps_row(table, state_sum, row, pending, rule, scratch, load, store)


# Serial and parallel kernels as the row engine's: in parallel the looked-up positions
# are shared out by a hash of their row (`partition_positions`), so that no two threads
# meet the same row.
@numba.njit(cache=True, error_model="numpy")
def _catch_up_float(table, state_sum, rows, row_step, up_to, rule):
    _catch_up_part(table, state_sum, rows, row_step, up_to, rule, ALL_POSITIONS, 0, rows.size,
                   load_float, store_float)


@numba.njit(parallel=True, cache=True, error_model="numpy")
def _catch_up_float_parallel(table, state_sum, rows, row_step, up_to, rule, parts):
    order, starts = partition_positions(rows, parts)
    for part in numba.prange(parts):
        _catch_up_part(table, state_sum, rows, row_step, up_to, rule, order, starts[part],
                       starts[part + 1], load_float, store_float)


@numba.njit(cache=True, error_model="numpy")
def _catch_up_bf16(table, state_sum, rows, row_step, up_to, rule):
    _catch_up_part(table, state_sum, rows, row_step, up_to, rule, ALL_POSITIONS, 0, rows.size,
                   load_bf16, store_bf16)


@numba.njit(parallel=True, cache=True, error_model="numpy")
def _catch_up_bf16_parallel(table, state_sum, rows, row_step, up_to, rule, parts):
    order, starts = partition_positions(rows, parts)
    for part in numba.prange(parts):
        _catch_up_part(table, state_sum, rows, row_step, up_to, rule, order, starts[part],
                       starts[part + 1], load_bf16, store_bf16)


_CATCH_UP = {(False, False): _catch_up_float, (False, True): _catch_up_float_parallel,
             (True, False): _catch_up_bf16, (True, True): _catch_up_bf16_parallel}


def catch_up_rows_(table: Tensor, state_sum: Tensor, rows: Tensor, row_step: Tensor,
                   up_to: int, rule: ProximalRule) -> None:
    """Apply the pending zero-gradient steps of ``rows`` (may repeat) of a ``(rows, D)``
    table up to step ``up_to``, in place; see `zero_steps_row`. IndexError, before
    any write, for a row outside the table. Parallel from 65,536 elements of rows."""
    rows = rows.long().contiguous().numpy()
    bad = first_out_of_range(rows, table.shape[0])
    if bad >= 0:
        raise IndexError(f"index {rows[bad]} is out of range for a table of {table.shape[0]} "
                         f"rows")
    args = (as_numpy(table), as_numpy(state_sum), rows, row_step.numpy().reshape(-1, 1),
            float(up_to), zero_steps_tuple(rule))
    parallel = rows.size * table.shape[1] >= PARALLEL_MIN_ELEMENTS
    if parallel:
        start_thread_pool()
        _CATCH_UP[table.dtype == torch.bfloat16, True](*args, numba.get_num_threads())
    else:
        _CATCH_UP[table.dtype == torch.bfloat16, False](*args)


# ------------------------------------------------------------------ sparse rows (the engine)


@numba.njit(inline="always", error_model="numpy")
def _proximal_row(tables, row, grad_row, factor, coefficients, load, store):
    """The engine's row update: catch the row up on its skipped zero-gradient steps (with
    a ``row_step`` table), then :ref:`algo-proximal` with its summed gradient. ``tables`` is ``(param, sum,
    row_step)`` (``row_step`` a ``(rows, 1)`` view, empty without the catch-up),
    ``coefficients`` ``(rule, zero-step rule, step)``."""
    param = tables[0]
    state_sum = tables[1]
    row_step = tables[2]
    rule = coefficients[0]
    if row_step.size > 0:
        step = coefficients[2]
        pending = step - 1 - row_step[row, 0]
        row_step[row, 0] = step
        if pending > 0:
            scratch = np.empty((4, param.shape[1]), np.float64)
            zero_steps_row(param, state_sum, row, pending, coefficients[1], scratch, load, store)
    for d in range(param.shape[1]):
        p, s = proximal_coordinate(load(param[row, d]), grad_row[d] * factor, state_sum[row, d],
                                   rule)
        param[row, d] = store(p)
        state_sum[row, d] = s


@numba.njit(inline="always", error_model="numpy")
def _proximal_prefetch(tables, row):
    prefetch_row(tables[0], row)
    prefetch_row(tables[1], row)
    if tables[2].size > 0:
        prefetch_row(tables[2], row)


# One kernel per (parameter storage, threading): see `adagrad.kernels.sparse_cpu`.
@numba.njit(cache=True, error_model="numpy")
def _sparse_float_serial(param, state_sum, row_step, indices, grad, rule, zero_rule, step):
    update_rows_serial((param, state_sum, row_step), indices, grad, (rule, zero_rule, step),
                       _proximal_row, _proximal_prefetch, load_float, store_float)


@numba.njit(parallel=True, cache=True, error_model="numpy")
def _sparse_float_parallel(param, state_sum, row_step, indices, grad, rule, zero_rule, step,
                           parts):
    order, starts = partition_positions(indices, parts)
    for part in numba.prange(parts):
        update_partition((param, state_sum, row_step), indices, grad, (rule, zero_rule, step),
                         order, starts, part, _proximal_row, _proximal_prefetch, load_float,
                         store_float)


@numba.njit(cache=True, error_model="numpy")
def _sparse_bf16_serial(param, state_sum, row_step, indices, grad, rule, zero_rule, step):
    update_rows_serial((param, state_sum, row_step), indices, grad, (rule, zero_rule, step),
                       _proximal_row, _proximal_prefetch, load_bf16, store_bf16)


@numba.njit(parallel=True, cache=True, error_model="numpy")
def _sparse_bf16_parallel(param, state_sum, row_step, indices, grad, rule, zero_rule, step,
                          parts):
    order, starts = partition_positions(indices, parts)
    for part in numba.prange(parts):
        update_partition((param, state_sum, row_step), indices, grad, (rule, zero_rule, step),
                         order, starts, part, _proximal_row, _proximal_prefetch, load_bf16,
                         store_bf16)


_SPARSE_SERIAL = {False: _sparse_float_serial, True: _sparse_bf16_serial}
_SPARSE_PARALLEL = {False: _sparse_float_parallel, True: _sparse_bf16_parallel}
_NO_ROW_STEP = torch.zeros(0, 1, dtype=torch.float64)


def sparse_proximal_(table: Tensor, state_sum: Tensor, indices: Tensor, values: Tensor,
                     rule: ProximalRule, step: int, row_step: Tensor | None = None,
                     value_of: Tensor | None = None, scale: Tensor | None = None) -> None:
    """Step ``step`` of :ref:`algo-proximal` on the touched rows of a ``(rows, D)`` table, in place: the
    contract of `adagrad.kernels.portable_proximal.sparse_proximal_`, on the inputs
    `adagrad.kernels.sparse_cpu.supports` accepts; indices are checked here, before
    anything is written (IndexError)."""
    tables = (table, state_sum, _NO_ROW_STEP if row_step is None else row_step.view(-1, 1))
    coefficients = (proximal_tuple(rule, scalar_type(state_sum)), zero_steps_tuple(rule),
                    float(step))
    update_rows_(_SPARSE_SERIAL, _SPARSE_PARALLEL, tables, indices, values, coefficients,
                 value_of, scale)
