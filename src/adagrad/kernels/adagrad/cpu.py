"""Dense Adagrad on the CPU: one numba pass over θ, g and G, no temporaries.

Implements `StepRule` (:ref:`algo-adagrad`) for contiguous float32/float64/bfloat16
parameters with a float32 or float64 accumulator. Each element is read once and written
once; large tensors are split over the threads. The optimizer steps all of a step's
tensors with the same rule in one call (`dense_adagrad_batch_`: one serial kernel for
the small ones, one parallel region for the large), which also advances their step
counters: per tensor, a numba call and a torch op cost more than a small update, and a
parallel region per tensor more than one for all.
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


# The batched kernels: a table of tensors, one row ``(θ, g, G, step, size)`` each (the
# addresses of the three tensors and of the step counter, and the element count), reached
# through `array_at`; the ``like_*`` arrays (empty) carry only the element types.


@numba.njit(inline="always", error_model="numpy")
def _tensor_of(tensors, row, like_param, like_sum):
    size = tensors[row, 4]
    return (array_at(tensors[row, 0], size, like_param),
            array_at(tensors[row, 1], size, like_param),
            array_at(tensors[row, 2], size, like_sum))


@numba.njit(inline="always", error_model="numpy")
def _advance_counter(tensors, row, like_step):
    step = array_at(tensors[row, 3], 1, like_step)
    step[0] = step[0] + 1  # in the counter's own dtype, as torch's += 1


@numba.njit(inline="always", error_model="numpy")
def _batch_serial(tensors, like_param, like_sum, like_step, rule, load, store):
    """Row by row: the counter advanced, then `_update_at` over the tensor (the loop of
    `_float_serial` / `_bf16_serial`, hence their results bit for bit)."""
    for row in range(tensors.shape[0]):
        _advance_counter(tensors, row, like_step)
        param, grad, state_sum = _tensor_of(tensors, row, like_param, like_sum)
        for i in range(param.size):
            _update_at(i, param, grad, state_sum, rule, load, store)


BATCH_CHUNK = 1 << 14
"""Elements per piece of work of the parallel batched kernel: all of a call's tensors are
cut into pieces of this size (the last of each shorter), shared out among the threads in
one parallel region instead of one region per tensor."""


@numba.njit(inline="always", error_model="numpy")
def _chunks(tensors, like_step):
    """Advance every counter; return the ``(row, first element)`` of each piece of work."""
    count = 0
    for row in range(tensors.shape[0]):
        _advance_counter(tensors, row, like_step)
        count += (tensors[row, 4] + BATCH_CHUNK - 1) // BATCH_CHUNK
    chunks = np.empty((count, 2), np.int64)
    k = 0
    for row in range(tensors.shape[0]):
        for start in range(0, tensors[row, 4], BATCH_CHUNK):
            chunks[k, 0] = row
            chunks[k, 1] = start
            k += 1
    return chunks


@numba.njit(cache=True, error_model="numpy")
def _float_batch_serial(tensors, like_param, like_sum, like_step, rule):
    _batch_serial(tensors, like_param, like_sum, like_step, rule, load_float, store_float)


@numba.njit(cache=True, error_model="numpy")
def _bf16_batch_serial(tensors, like_param, like_sum, like_step, rule):
    _batch_serial(tensors, like_param, like_sum, like_step, rule, load_bf16, store_bf16)


@numba.njit(inline="always", error_model="numpy")
def _piece(tensors, chunks, k, like_param, like_sum):
    """Piece ``k`` of the work: its tensor's θ, g and G sliced to [start, start + BATCH_CHUNK).
    Slices, so that the element loop starts at 0: the same loop run from ``start`` was
    4x slower (measured; not vectorised, we believe because of numba's negative-index
    wraparound)."""
    param, grad, state_sum = _tensor_of(tensors, chunks[k, 0], like_param, like_sum)
    start = chunks[k, 1]
    stop = min(start + BATCH_CHUNK, param.size)
    return param[start:stop], grad[start:stop], state_sum[start:stop]


@numba.njit(parallel=True, cache=True, error_model="numpy")
def _float_batch_parallel(tensors, like_param, like_sum, like_step, rule):
    chunks = _chunks(tensors, like_step)
    for k in numba.prange(chunks.shape[0]):
        param, grad, state_sum = _piece(tensors, chunks, k, like_param, like_sum)
        for i in range(param.size):
            _update_at(i, param, grad, state_sum, rule, load_float, store_float)


@numba.njit(parallel=True, cache=True, error_model="numpy")
def _bf16_batch_parallel(tensors, like_param, like_sum, like_step, rule):
    chunks = _chunks(tensors, like_step)
    for k in numba.prange(chunks.shape[0]):
        param, grad, state_sum = _piece(tensors, chunks, k, like_param, like_sum)
        for i in range(param.size):
            _update_at(i, param, grad, state_sum, rule, load_bf16, store_bf16)


_BATCH_KERNELS = {(False, False): _float_batch_serial, (False, True): _float_batch_parallel,
                  (True, False): _bf16_batch_serial, (True, True): _bf16_batch_parallel}
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
    """Whether `dense_adagrad_batch_` takes this tensor: what `supports` asks, and a
    one-element float32 or float64 CPU step counter."""
    return (param.is_cpu and grad.is_cpu and state_sum.is_cpu and step.is_cpu
            and step.dtype in _COUNTER_DTYPES and step.numel() == 1
            and param.dtype in KERNEL_PARAM_DTYPES and grad.dtype == param.dtype
            and state_sum.dtype in KERNEL_STATE_DTYPES
            and (param.dtype != torch.bfloat16 or state_sum.dtype == torch.float32)
            and param.is_contiguous() and grad.is_contiguous() and state_sum.is_contiguous())


def dense_adagrad_batch_(params: list[Tensor], grads: list[Tensor], sums: list[Tensor],
                         steps: list[Tensor], rule: StepRule) -> None:
    """One dense Adagrad step (:ref:`algo-adagrad`) of each of ``params`` with the same
    ``rule``, in place, and each step counter in ``steps`` advanced by 1; every tensor as
    `batch_supports` says. Per combination of dtypes, one serial numba call for the
    tensors of fewer than `PARALLEL_MIN_ELEMENTS` elements, in the order given, and one
    parallel call for the others, cut into pieces of `BATCH_CHUNK` elements (one parallel
    region for all of them). Each element's arithmetic is `dense_adagrad_`'s, so results
    are bit for bit the same.

    The kernels reach the tensors through their addresses (`array_at`); that is safe
    because these lists hold every tensor for the whole call, `batch_supports` checked
    that each is a contiguous CPU tensor of the element type its column is read as, and
    each row's ``size`` is its own tensor's element count.
    """
    tables: dict[tuple[torch.dtype, torch.dtype, torch.dtype, bool], list[tuple[int, ...]]] = {}
    for param, grad, state_sum, step in zip(params, grads, sums, steps):
        size = param.numel()
        tables.setdefault(
            (param.dtype, state_sum.dtype, step.dtype, size >= PARALLEL_MIN_ELEMENTS), []
        ).append((param.data_ptr(), grad.data_ptr(), state_sum.data_ptr(), step.data_ptr(),
                  size))
    for (param_dtype, sum_dtype, step_dtype, parallel), rows in tables.items():
        if parallel:
            start_thread_pool()
        coefficients = rule_tuple(rule, np.float32 if sum_dtype == torch.float32 else np.float64)
        _BATCH_KERNELS[param_dtype == torch.bfloat16, parallel](
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
