"""Row-wise Adagrad on the CPU (:ref:`algo-rowwise`, FBGEMM ``EXACT_ROWWISE_ADAGRAD``).

Per row of a ``(rows, D)`` table: one pass over the row for ``mean(g'²)``, then one pass
that updates it with the row's single factor ``m_r = lr_t / (sqrt(G_r) + ε)``. The
coefficients are `rule_tuple`'s (the :ref:`algo-adagrad` kernels' branch-free tuple; row-wise Adagrad
uses its lr, sign, L2 coefficient, decoupled shrink and outside ε), so one straight-line
row body serves every option::

    g'  = sign·g + l2·θ                 (l2 = wd in L2 mode, else 0)
    G_r ← G_r + mean_d(g'²)
    θ   ← shrink·θ - m_r·g'             (shrink = 1 - lr_t·wd when decoupled, else 1)

`rowwise_row` is that body for one row whose gradient is ``factor·grad_row``: the dense
kernels here and the sparse row engine run it. Arithmetic is in the accumulator's dtype.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch
from torch import Tensor

from adagrad.kernels.engine.clocks import RowClocks
from adagrad.kernels.engine.elementwise import (
    KERNEL_PARAM_DTYPES,
    KERNEL_STATE_DTYPES,
    PARALLEL_MIN_ELEMENTS,
    as_numpy,
    load_bf16,
    load_float,
    prefetch_entry,
    prefetch_row,
    rule_tuple,
    scalar_type,
    start_thread_pool,
    store_bf16,
    store_float,
)
from adagrad.kernels.engine.rule import StepRule
from adagrad.kernels.engine.sparse_cpu import (
    partition_positions,
    update_partition,
    update_rows_,
    update_rows_serial,
)


@numba.njit(inline="always", error_model="numpy")
def _decayed_grad(p, g, factor, rule):
    """``g' = sign·factor·g + l2·θ`` of one coordinate (``rule`` a `rule_tuple`)."""
    return rule[1] * (g * factor) + rule[2] * p


# Not inlined: numba's fastmath flags are per function, and only this sum may be
# reassociated (LLVM then vectorises it; the serial chain of adds ran 3x slower).
@numba.njit(fastmath={"reassoc"}, error_model="numpy")
def _mean_square(param, row, grad_row, factor, rule, load, load_grad):
    """``mean_d(g'²)`` of row ``row`` whose gradient is ``factor·grad_row``."""
    width = param.shape[1]
    total = rule[0] - rule[0]  # 0 in the compute type
    for d in range(width):
        g = _decayed_grad(load(param[row, d]), load_grad(grad_row[d]), factor, rule)
        total += g * g
    return total / width


@numba.njit(inline="always", error_model="numpy")
def rowwise_row(param, state_sum, row, grad_row, factor, rule, load, store, load_grad):
    """:ref:`algo-rowwise` on row ``row`` of ``param`` (accumulator ``state_sum[row]``) whose gradient is
    ``factor·grad_row``: the mean-square pass, then the update pass. ``load``/``store``
    convert the parameter's storage, ``load_grad`` the gradient row's. A row of width 0
    is left alone (its mean square would be 0/0)."""
    width = param.shape[1]
    if width == 0:
        return
    s = state_sum[row] + _mean_square(param, row, grad_row, factor, rule, load, load_grad)
    state_sum[row] = s
    m = rule[0] / (math.sqrt(s) + rule[6])
    shrink = rule[3]
    for d in range(width):
        p = load(param[row, d])
        g = _decayed_grad(p, load_grad(grad_row[d]), factor, rule)
        param[row, d] = store(shrink * p - m * g)


@numba.njit(inline="always", error_model="numpy")
def _dense_row(r, param, grad, state_sum, rule, load, store):
    one = rule[0] - rule[0] + 1  # 1 in the compute type
    rowwise_row(param, state_sum, r, grad[r], one, rule, load, store, load)


# One kernel per (parameter storage, threading), as in dense_cpu; the gradient has the
# parameter's storage.
@numba.njit(cache=True, error_model="numpy")
def _float_serial(param, grad, state_sum, rule):
    for r in range(param.shape[0]):
        _dense_row(r, param, grad, state_sum, rule, load_float, store_float)


@numba.njit(parallel=True, cache=True, error_model="numpy")
def _float_parallel(param, grad, state_sum, rule):
    for r in numba.prange(param.shape[0]):
        _dense_row(r, param, grad, state_sum, rule, load_float, store_float)


@numba.njit(cache=True, error_model="numpy")
def _bf16_serial(param, grad, state_sum, rule):
    for r in range(param.shape[0]):
        _dense_row(r, param, grad, state_sum, rule, load_bf16, store_bf16)


@numba.njit(parallel=True, cache=True, error_model="numpy")
def _bf16_parallel(param, grad, state_sum, rule):
    for r in numba.prange(param.shape[0]):
        _dense_row(r, param, grad, state_sum, rule, load_bf16, store_bf16)


_KERNELS = {(False, False): _float_serial, (False, True): _float_parallel,
            (True, False): _bf16_serial, (True, True): _bf16_parallel}


def supports(param: Tensor, grad: Tensor, state_sum: Tensor) -> bool:
    """Whether the dense kernel can run the step: CPU, contiguous, ``param`` and ``grad``
    of one kernel dtype, a float32/float64 accumulator (float32 for bf16) of one entry
    per row."""
    return (param.device.type == "cpu" and grad.device == param.device
            and state_sum.device == param.device and param.dim() >= 1
            and state_sum.numel() == param.shape[0]
            and param.dtype in KERNEL_PARAM_DTYPES and grad.dtype == param.dtype
            and state_sum.dtype in KERNEL_STATE_DTYPES
            and (param.dtype != torch.bfloat16 or state_sum.dtype == torch.float32)
            and param.is_contiguous() and grad.is_contiguous() and state_sum.is_contiguous())


def dense_rowwise_adagrad_(param: Tensor, grad: Tensor, state_sum: Tensor,
                           rule: StepRule) -> None:
    """One dense row-wise step (:ref:`algo-rowwise`), in place, on ``param`` seen as ``(rows, D)`` with
    ``state_sum`` of ``rows`` entries; see `supports`. ``rule.eps_inside`` and
    ``rule.accumulator_decay`` must be off (:ref:`algo-rowwise` has neither)."""
    if param.numel() == 0:  # no rows, or rows of width 0: nothing changes
        return
    rows = param.shape[0]
    parallel = param.numel() >= PARALLEL_MIN_ELEMENTS
    if parallel:
        start_thread_pool()
    kernel = _KERNELS[param.dtype == torch.bfloat16, parallel]
    kernel(as_numpy(param).reshape(rows, -1), as_numpy(grad).reshape(rows, -1),
           as_numpy(state_sum).reshape(rows), rule_tuple(rule, scalar_type(state_sum)))


# ------------------------------------------------------------------ sparse: the row engine's client


@numba.njit(inline="always", error_model="numpy")
def _sparse_row(tables, row, grad_row, factor, coefficients, load, store):
    """The engine's row update: catch the row up on its lazy decoupled decay (``param_log``
    clock and per-row snapshots; none when the snapshots are empty), then :ref:`algo-rowwise` with the
    row's summed gradient ``factor·grad_row``. ``tables`` is ``(param, state_sum)``,
    ``coefficients`` ``(rule_tuple, param_log, row_param_log)``; indexed, not unpacked
    (see `sparse_cpu`)."""
    param = tables[0]
    state_sum = tables[1]
    snapshots = coefficients[2]
    if snapshots.size > 0:
        clock = coefficients[1]
        decay = math.exp(clock - snapshots[row])
        snapshots[row] = clock
        for d in range(param.shape[1]):
            param[row, d] = store(load(param[row, d]) * decay)
    rowwise_row(param, state_sum, row, grad_row, factor, coefficients[0], load, store,
                load_float)


@numba.njit(inline="always", error_model="numpy")
def _sparse_prefetch(tables, row):
    prefetch_row(tables[0], row)
    prefetch_entry(tables[1], row)


@numba.njit(cache=True, error_model="numpy")
def _sparse_float_serial(param, state_sum, indices, grad, rule, param_log, row_param_log):
    update_rows_serial((param, state_sum), indices, grad, (rule, param_log, row_param_log),
                       _sparse_row, _sparse_prefetch, load_float, store_float)


@numba.njit(parallel=True, cache=True, error_model="numpy")
def _sparse_float_parallel(param, state_sum, indices, grad, rule, param_log, row_param_log,
                           parts):
    order, starts = partition_positions(indices, parts)
    for part in numba.prange(parts):
        update_partition((param, state_sum), indices, grad, (rule, param_log, row_param_log),
                         order, starts, part, _sparse_row, _sparse_prefetch, load_float,
                         store_float)


@numba.njit(cache=True, error_model="numpy")
def _sparse_bf16_serial(param, state_sum, indices, grad, rule, param_log, row_param_log):
    update_rows_serial((param, state_sum), indices, grad, (rule, param_log, row_param_log),
                       _sparse_row, _sparse_prefetch, load_bf16, store_bf16)


@numba.njit(parallel=True, cache=True, error_model="numpy")
def _sparse_bf16_parallel(param, state_sum, indices, grad, rule, param_log, row_param_log,
                          parts):
    order, starts = partition_positions(indices, parts)
    for part in numba.prange(parts):
        update_partition((param, state_sum), indices, grad, (rule, param_log, row_param_log),
                         order, starts, part, _sparse_row, _sparse_prefetch, load_bf16,
                         store_bf16)


_SPARSE_SERIAL = {False: _sparse_float_serial, True: _sparse_bf16_serial}
_SPARSE_PARALLEL = {False: _sparse_float_parallel, True: _sparse_bf16_parallel}
_NO_SNAPSHOTS = np.zeros(0, np.float64)


def sparse_supports(param: Tensor, state_sum: Tensor, values: Tensor) -> bool:
    """Whether the sparse kernel can run the step: CPU, a contiguous ``(rows, D)`` table
    of a kernel dtype with a float32/float64 accumulator of ``rows`` entries, float32/
    float64 gradient values."""
    return (param.device.type == "cpu" and values.device == param.device
            and state_sum.device == param.device and param.dim() == 2
            and state_sum.dim() == 1 and state_sum.numel() == param.shape[0]
            and param.dtype in KERNEL_PARAM_DTYPES and state_sum.dtype in KERNEL_STATE_DTYPES
            and values.dtype in (torch.float32, torch.float64)
            and param.is_contiguous() and state_sum.is_contiguous())


def sparse_rowwise_adagrad_(param: Tensor, state_sum: Tensor, indices: Tensor, values: Tensor,
                            rule: StepRule, clocks: RowClocks, value_of: Tensor | None = None,
                            scale: Tensor | None = None) -> None:
    """One sparse row-wise step (:ref:`algo-sparse`, :ref:`algo-rowwise`) on a ``(rows, D)`` table through
    the sparse row engine; same contract as `adagrad.kernels.rowwise_portable.sparse_rowwise_adagrad_`,
    except that indices are validated here, before anything is written (IndexError)."""
    snapshots = _NO_SNAPSHOTS if clocks.row_param_log is None else clocks.row_param_log.numpy()
    coefficients = (rule_tuple(rule, scalar_type(state_sum)), float(clocks.param_log), snapshots)
    update_rows_(_SPARSE_SERIAL, _SPARSE_PARALLEL, (param, state_sum), indices, values,
                 coefficients, value_of, scale)
