"""Dense Adagrad on the CPU: one numba pass over θ, g and G, no temporaries.

Implements `StepRule` (:ref:`algo-adagrad`) for contiguous float32/float64/bfloat16
parameters with a float32 or float64 accumulator. Each element is read once and written
once; large tensors are split over the threads.
"""

from __future__ import annotations

import numba
import torch
from torch import Tensor

from adagrad.kernels.engine.elementwise import (
    KERNEL_PARAM_DTYPES,
    KERNEL_STATE_DTYPES,
    PARALLEL_MIN_ELEMENTS,
    adagrad_coordinate,
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


def supports(param: Tensor, grad: Tensor, state_sum: Tensor) -> bool:
    """Whether this kernel can run the step (CPU, contiguous, a supported dtype pair)."""
    return (param.device.type == "cpu" and grad.device == param.device
            and state_sum.device == param.device
            and param.dtype in KERNEL_PARAM_DTYPES and grad.dtype == param.dtype
            and state_sum.dtype in KERNEL_STATE_DTYPES
            and (param.dtype != torch.bfloat16 or state_sum.dtype == torch.float32)
            and param.is_contiguous() and grad.is_contiguous() and state_sum.is_contiguous())


def dense_adagrad_(param: Tensor, grad: Tensor, state_sum: Tensor, rule: StepRule) -> None:
    """One dense Adagrad step (:ref:`algo-adagrad`), in place; see `supports` for the inputs."""
    parallel = param.numel() >= PARALLEL_MIN_ELEMENTS
    if parallel:
        start_thread_pool()
    kernel = _KERNELS[param.dtype == torch.bfloat16, parallel]
    kernel(as_numpy(param).reshape(-1), as_numpy(grad).reshape(-1),
           as_numpy(state_sum).reshape(-1), rule_tuple(rule, scalar_type(state_sum)))
