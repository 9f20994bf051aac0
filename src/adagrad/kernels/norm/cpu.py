"""``||g||²`` on the CPU in one numba pass with float64 accumulators (:ref:`algo-norm`).

AdaGrad-Norm's b² is a sum over every coordinate of every step, so the reduction's error
enters each step size. torch's CPU ``linalg.vector_norm`` of a float32 tensor accumulates
in float32 lane by lane (measured: relative error ~300 units of roundoff at 2²⁰ elements,
~7,700 at 2²³), and an exact ``square().sum()`` needs a temporary the size of ``g``.
Here each element's square is added in float64, in fixed chunks of `CHUNK` elements
(vectorised within a chunk), chunks summed in order: serial and parallel runs give the
same bits, whatever the thread count.
Float32, float64 and bfloat16 gradients (bf16 as raw 16-bit words).
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from torch import Tensor

from adagrad.kernels.engine.elementwise import (
    PARALLEL_MIN_ELEMENTS,
    as_numpy,
    load_bf16,
    load_float,
    start_thread_pool,
)

CHUNK = 1 << 14
"""Elements per partial sum: the unit of work of the parallel kernel, and of the order
of summation of both."""


# Reassociation lets LLVM vectorise the float64 sum (~4x a strict-order loop here): the
# order within a chunk is then the compiled loop's, fixed for a machine, and the same in
# the serial and parallel kernels, which share these functions (not inlined at numba's
# level, so that their flags stay their own).
@numba.njit(cache=True, error_model="numpy", fastmath={"reassoc", "contract"})
def _float_chunk_sum(values, lo, hi):
    """Σ values[i]² over ``[lo, hi)`` in float64."""
    chunk = values[lo:hi]  # indices from 0: no negative-index wraparound to block SIMD
    total = 0.0
    for i in range(chunk.size):
        x = np.float64(load_float(chunk[i]))
        total += x * x
    return total


@numba.njit(cache=True, error_model="numpy", fastmath={"reassoc", "contract"})
def _bf16_chunk_sum(words, lo, hi):
    """Σ words[i]² over ``[lo, hi)`` in float64, ``words`` bfloat16 bit patterns."""
    chunk = words[lo:hi]
    total = 0.0
    for i in range(chunk.size):
        x = np.float64(load_bf16(chunk[i]))
        total += x * x
    return total


@numba.njit(inline="always", error_model="numpy")
def _chunks(n):
    return (n + CHUNK - 1) // CHUNK


@numba.njit(inline="always", error_model="numpy")
def _in_order(partials):
    total = 0.0
    for c in range(partials.size):
        total += partials[c]
    return total


# One kernel per (storage, threading), as in `dense_cpu`: numba parallelises only a prange
# written in the compiled function itself.
@numba.njit(cache=True, error_model="numpy")
def _float_serial(values):
    partials = np.empty(_chunks(values.size), np.float64)
    for c in range(partials.size):
        partials[c] = _float_chunk_sum(values, c * CHUNK, min((c + 1) * CHUNK, values.size))
    return _in_order(partials)


@numba.njit(parallel=True, cache=True, error_model="numpy")
def _float_parallel(values):
    partials = np.empty(_chunks(values.size), np.float64)
    for c in numba.prange(partials.size):
        partials[c] = _float_chunk_sum(values, c * CHUNK, min((c + 1) * CHUNK, values.size))
    return _in_order(partials)


@numba.njit(cache=True, error_model="numpy")
def _bf16_serial(values):
    partials = np.empty(_chunks(values.size), np.float64)
    for c in range(partials.size):
        partials[c] = _bf16_chunk_sum(values, c * CHUNK, min((c + 1) * CHUNK, values.size))
    return _in_order(partials)


@numba.njit(parallel=True, cache=True, error_model="numpy")
def _bf16_parallel(values):
    partials = np.empty(_chunks(values.size), np.float64)
    for c in numba.prange(partials.size):
        partials[c] = _bf16_chunk_sum(values, c * CHUNK, min((c + 1) * CHUNK, values.size))
    return _in_order(partials)


_KERNELS = {(False, False): _float_serial, (False, True): _float_parallel,
            (True, False): _bf16_serial, (True, True): _bf16_parallel}

_DTYPES = (torch.float32, torch.float64, torch.bfloat16)


def supports(grad: Tensor) -> bool:
    """Whether `squared_norm` takes ``grad`` (a CPU float32/float64/bfloat16 tensor; any
    layout: a non-contiguous one is copied first)."""
    return grad.device.type == "cpu" and grad.dtype in _DTYPES and not grad.is_sparse


def squared_norm(grad: Tensor) -> float:
    """``||grad||²`` accumulated in float64; serial below 65,536 elements."""
    flat = grad.detach().contiguous().view(-1)
    parallel = flat.numel() >= PARALLEL_MIN_ELEMENTS
    if parallel:
        start_thread_pool()
    return float(_KERNELS[flat.dtype == torch.bfloat16, parallel](as_numpy(flat)))
