"""FTRL-Proximal on the CPU: one numba pass over θ, g, z and n, no temporaries.

Implements `FtrlRule` (:ref:`algo-ftrl`) for contiguous float32/float64/bfloat16
parameters with float32 or float64 accumulators (z and n of one dtype, the compute type).
Dense: each element is read once and written once; large tensors are split over the
threads. Sparse: a client of the row engine of `sparse_cpu` (duplicates summed, each
touched row read and written once; rows shared out by hash over the threads).
`ftrl_coordinate` is the one body every FTRL kernel runs, dense and on table rows, so a
sparse step equals the dense step on the touched rows bit for bit.
"""

from __future__ import annotations


import numba
import torch
from torch import Tensor

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
from adagrad.kernels.engine.rule import FtrlRule
from adagrad.kernels.engine.sparse_cpu import (
    partition_positions,
    update_partition,
    update_rows_,
    update_rows_serial,
)
from adagrad.kernels.ftrl.coordinate import ftrl_coordinate, ftrl_tuple  # noqa: F401


@numba.njit(inline="always", error_model="numpy")
def _update_at(i, param, grad, z, n, rule, load, store):
    compute = n.dtype.type  # θ and g in the state's dtype, as the torch-ops path
    p, z[i], n[i] = ftrl_coordinate(compute(load(param[i])), compute(load(grad[i])), z[i], n[i],
                                    rule)
    param[i] = store(p)


# One kernel per (parameter storage, threading), as in dense_cpu: numba parallelises only a
# prange written in the compiled function itself.
@numba.njit(cache=True, error_model="numpy")
def _float_serial(param, grad, z, n, rule):
    for i in range(param.size):
        _update_at(i, param, grad, z, n, rule, load_float, store_float)


@numba.njit(parallel=True, cache=True, error_model="numpy")
def _float_parallel(param, grad, z, n, rule):
    for i in numba.prange(param.size):
        _update_at(i, param, grad, z, n, rule, load_float, store_float)


@numba.njit(cache=True, error_model="numpy")
def _bf16_serial(param, grad, z, n, rule):
    for i in range(param.size):
        _update_at(i, param, grad, z, n, rule, load_bf16, store_bf16)


@numba.njit(parallel=True, cache=True, error_model="numpy")
def _bf16_parallel(param, grad, z, n, rule):
    for i in numba.prange(param.size):
        _update_at(i, param, grad, z, n, rule, load_bf16, store_bf16)


_KERNELS = {(False, False): _float_serial, (False, True): _float_parallel,
            (True, False): _bf16_serial, (True, True): _bf16_parallel}


def supports(param: Tensor, grad: Tensor, z: Tensor, n: Tensor) -> bool:
    """Whether the dense kernel can run the step (CPU, contiguous, a supported dtype
    pair, z and n of one dtype)."""
    tensors = (param, grad, z, n)
    return (all(t.device.type == "cpu" and t.is_contiguous() for t in tensors)
            and param.dtype in KERNEL_PARAM_DTYPES and grad.dtype == param.dtype
            and n.dtype in KERNEL_STATE_DTYPES and z.dtype == n.dtype
            and (param.dtype != torch.bfloat16 or n.dtype == torch.float32))


def dense_ftrl_(param: Tensor, grad: Tensor, z: Tensor, n: Tensor, rule: FtrlRule) -> None:
    """One dense FTRL step (:ref:`algo-ftrl`), in place; see `supports` for the inputs."""
    parallel = param.numel() >= PARALLEL_MIN_ELEMENTS
    if parallel:
        start_thread_pool()
    kernel = _KERNELS[param.dtype == torch.bfloat16, parallel]
    kernel(as_numpy(param).reshape(-1), as_numpy(grad).reshape(-1), as_numpy(z).reshape(-1),
           as_numpy(n).reshape(-1), ftrl_tuple(rule, scalar_type(n)))


# ------------------------------------------------------------------ sparse, on the row engine


@numba.njit(inline="always", error_model="numpy")
def _ftrl_row(tables, row, grad_row, factor, coefficients, load, store):
    """:ref:`algo-ftrl` on one touched row with its summed gradient ``grad_row[d]·factor``; ``tables``
    is ``(param, z, n)``, ``coefficients`` ``(ftrl_tuple,)`` (indexed, not unpacked: see
    `sparse_cpu`)."""
    param = tables[0]
    z = tables[1]
    n = tables[2]
    rule = coefficients[0]
    compute = n.dtype.type  # θ and g in the state's dtype, as the torch-ops path
    for d in range(param.shape[1]):
        p, z[row, d], n[row, d] = ftrl_coordinate(compute(load(param[row, d])),
                                                  compute(grad_row[d] * factor), z[row, d],
                                                  n[row, d], rule)
        param[row, d] = store(p)


@numba.njit(inline="always", error_model="numpy")
def _ftrl_prefetch(tables, row):
    prefetch_row(tables[0], row)
    prefetch_row(tables[1], row)
    prefetch_row(tables[2], row)


@numba.njit(cache=True, error_model="numpy")
def _sparse_float_serial(param, z, n, indices, grad, rule):
    update_rows_serial((param, z, n), indices, grad, (rule,), _ftrl_row, _ftrl_prefetch,
                       load_float, store_float)


@numba.njit(parallel=True, cache=True, error_model="numpy")
def _sparse_float_parallel(param, z, n, indices, grad, rule, parts):
    order, starts = partition_positions(indices, parts)
    for part in numba.prange(parts):
        update_partition((param, z, n), indices, grad, (rule,), order, starts, part, _ftrl_row,
                         _ftrl_prefetch, load_float, store_float)


@numba.njit(cache=True, error_model="numpy")
def _sparse_bf16_serial(param, z, n, indices, grad, rule):
    update_rows_serial((param, z, n), indices, grad, (rule,), _ftrl_row, _ftrl_prefetch,
                       load_bf16, store_bf16)


@numba.njit(parallel=True, cache=True, error_model="numpy")
def _sparse_bf16_parallel(param, z, n, indices, grad, rule, parts):
    order, starts = partition_positions(indices, parts)
    for part in numba.prange(parts):
        update_partition((param, z, n), indices, grad, (rule,), order, starts, part, _ftrl_row,
                         _ftrl_prefetch, load_bf16, store_bf16)


_SPARSE_SERIAL = {False: _sparse_float_serial, True: _sparse_bf16_serial}  # by "bf16 param"
_SPARSE_PARALLEL = {False: _sparse_float_parallel, True: _sparse_bf16_parallel}


def supports_rows(param: Tensor, z: Tensor, n: Tensor, values: Tensor) -> bool:
    """Whether the sparse kernel can run the step: CPU, contiguous 2-D tables,
    float32/float64/bf16 parameters, float32/float64 values, z and n of one such dtype
    (float32 for bf16)."""
    return (all(t.device.type == "cpu" for t in (param, z, n, values))
            and param.dim() == 2 and param.is_contiguous() and z.is_contiguous()
            and n.is_contiguous() and param.dtype in KERNEL_PARAM_DTYPES
            and n.dtype in KERNEL_STATE_DTYPES and z.dtype == n.dtype
            and (param.dtype != torch.bfloat16 or n.dtype == torch.float32)
            and values.dtype in (torch.float32, torch.float64))


def sparse_ftrl_(param: Tensor, z: Tensor, n: Tensor, indices: Tensor, values: Tensor,
                 rule: FtrlRule, value_of: Tensor | None = None,
                 scale: Tensor | None = None) -> None:
    """One sparse FTRL step (:ref:`algo-sparse`, :ref:`algo-ftrl`) on a ``(rows, D)`` table, in place;
    see `supports_rows` for the inputs. Same contract as
    `adagrad.kernels.ftrl_portable.sparse_ftrl_`, except that indices are validated here,
    before anything is written (IndexError)."""
    update_rows_(_SPARSE_SERIAL, _SPARSE_PARALLEL, (param, z, n), indices, values,
                 (ftrl_tuple(rule, scalar_type(n)),), value_of, scale)
