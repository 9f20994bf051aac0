"""Dense Adagrad on the CPU: one numba pass over θ, g and G, no temporaries.

Implements `StepRule` (:ref:`algo-adagrad`) for contiguous float32/float64/bfloat16
parameters with a float32 or float64 accumulator. Each element is read once and written
once; large tensors are split over the threads. Many small tensors with the same rule
take one call between them (`dense_adagrad_batch_`), which also advances their step
counters: per tensor, a numba call and a torch op cost more than a small update.
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from torch import Tensor

from adagrad.kernels.engine.elementwise import (
    KERNEL_PARAM_DTYPES,
    KERNEL_STATE_DTYPES,
    PARALLEL_MIN_ELEMENTS,
    adagrad_coordinate,
    array_at,
    as_numpy,
    load_bf16,
    load_float,
    rule_tuple,
    scalar_type,
    start_thread_pool,
    store_bf16,
    store_float,
)
from adagrad.kernels.engine.rule import StepRule


@numba.njit(inline="always", error_model="numpy")
def _update_at(i, param, grad, state_sum, rule, load, store):
    p, s = adagrad_coordinate(load(param[i]), load(grad[i]), state_sum[i], rule)
    param[i] = store(p)
    state_sum[i] = s


# One kernel per (parameter storage, threading); numba parallelises only a prange written
# in the compiled function itself, hence four small wrappers around `_update_at`.
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


@numba.njit(inline="always", error_model="numpy")
def _batch(tensors, like_param, like_sum, like_step, rule, load, store):
    """Each row ``(θ, g, G, step, size)`` of ``tensors`` (addresses and an element count):
    its step counter advanced by 1, then the same per-coordinate update as `_float_serial`
    / `_bf16_serial` (`_update_at`), so results are bit for bit those of the per-tensor
    kernels. The ``like_*`` arrays (empty) carry only the element types."""
    for row in range(tensors.shape[0]):
        size = tensors[row, 4]
        param = array_at(tensors[row, 0], size, like_param)
        grad = array_at(tensors[row, 1], size, like_param)
        state_sum = array_at(tensors[row, 2], size, like_sum)
        step = array_at(tensors[row, 3], 1, like_step)
        step[0] = step[0] + 1  # the counter's own dtype: as torch's += 1
        for i in range(size):
            _update_at(i, param, grad, state_sum, rule, load, store)


@numba.njit(cache=True, error_model="numpy")
def _float_batch(tensors, like_param, like_sum, like_step, rule):
    _batch(tensors, like_param, like_sum, like_step, rule, load_float, store_float)


@numba.njit(cache=True, error_model="numpy")
def _bf16_batch(tensors, like_param, like_sum, like_step, rule):
    _batch(tensors, like_param, like_sum, like_step, rule, load_bf16, store_bf16)


_BATCH_KERNELS = {False: _float_batch, True: _bf16_batch}
_COUNTER_DTYPES = (torch.float32, torch.float64)
_ELEMENTS = {torch.float32: np.empty(0, np.float32), torch.float64: np.empty(0, np.float64),
             torch.bfloat16: np.empty(0, np.uint16)}  # the element type of each dtype's views


def supports(param: Tensor, grad: Tensor, state_sum: Tensor) -> bool:
    """Whether this kernel can run the step (CPU, contiguous, a supported dtype pair)."""
    return (param.device.type == "cpu" and grad.device == param.device
            and state_sum.device == param.device
            and param.dtype in KERNEL_PARAM_DTYPES and grad.dtype == param.dtype
            and state_sum.dtype in KERNEL_STATE_DTYPES
            and (param.dtype != torch.bfloat16 or state_sum.dtype == torch.float32)
            and param.is_contiguous() and grad.is_contiguous() and state_sum.is_contiguous())


def batch_supports(param: Tensor, grad: Tensor, state_sum: Tensor, step: Tensor) -> bool:
    """Whether `dense_adagrad_batch_` takes this tensor: what `supports` asks, fewer than
    `PARALLEL_MIN_ELEMENTS` elements (it runs on one thread), and a one-element float32 or
    float64 CPU step counter."""
    return (param.numel() < PARALLEL_MIN_ELEMENTS and param.is_cpu and grad.is_cpu
            and state_sum.is_cpu and step.is_cpu and step.dtype in _COUNTER_DTYPES
            and step.numel() == 1 and param.dtype in KERNEL_PARAM_DTYPES
            and grad.dtype == param.dtype and state_sum.dtype in KERNEL_STATE_DTYPES
            and (param.dtype != torch.bfloat16 or state_sum.dtype == torch.float32)
            and param.is_contiguous() and grad.is_contiguous() and state_sum.is_contiguous())


def dense_adagrad_batch_(params: list[Tensor], grads: list[Tensor], sums: list[Tensor],
                         steps: list[Tensor], rule: StepRule) -> None:
    """One dense Adagrad step (:ref:`algo-adagrad`) of each of ``params`` with the same
    ``rule``, in place, and each step counter in ``steps`` advanced by 1; every tensor as
    `batch_supports` says. One serial numba call per combination of dtypes, in the order
    given; each tensor's result is bit for bit `dense_adagrad_`'s.

    The kernel reaches the tensors through their addresses (`array_at`); that is safe
    because these lists hold every tensor for the whole call, `batch_supports` checked
    that each is a contiguous CPU tensor of the element type its column is read as, and
    ``size`` is each tensor's own element count.
    """
    tables: dict[tuple[torch.dtype, torch.dtype, torch.dtype], list[tuple[int, ...]]] = {}
    for param, grad, state_sum, step in zip(params, grads, sums, steps):
        tables.setdefault((param.dtype, state_sum.dtype, step.dtype), []).append(
            (param.data_ptr(), grad.data_ptr(), state_sum.data_ptr(), step.data_ptr(),
             param.numel()))
    for (param_dtype, sum_dtype, step_dtype), rows in tables.items():
        coefficients = rule_tuple(rule, np.float32 if sum_dtype == torch.float32 else np.float64)
        _BATCH_KERNELS[param_dtype == torch.bfloat16](
            np.array(rows, dtype=np.int64).reshape(-1, 5), _ELEMENTS[param_dtype],
            _ELEMENTS[sum_dtype], _ELEMENTS[step_dtype], coefficients)


def dense_adagrad_(param: Tensor, grad: Tensor, state_sum: Tensor, rule: StepRule) -> None:
    """One dense Adagrad step (:ref:`algo-adagrad`), in place; see `supports` for the inputs."""
    parallel = param.numel() >= PARALLEL_MIN_ELEMENTS
    if parallel:
        start_thread_pool()
    kernel = _KERNELS[param.dtype == torch.bfloat16, parallel]
    kernel(as_numpy(param).reshape(-1), as_numpy(grad).reshape(-1),
           as_numpy(state_sum).reshape(-1), rule_tuple(rule, scalar_type(state_sum)))
