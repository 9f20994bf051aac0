"""Per-coordinate pieces shared by the numba CPU kernels.

`adagrad_coordinate` is ALGORITHMS.md §1 on one coordinate; the `load_*`/`store_*` pairs
let one kernel body serve float32/float64 parameters and bfloat16 parameters (held as raw
16-bit words, since numba has no bfloat16 type), with arithmetic in float32.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic
from torch import Tensor


@numba.njit(inline="always")
def adagrad_coordinate(p, g, s, lr, eps, eps_inside, maximize, wd, decoupled, rho, shrink):
    """§1 on one coordinate; returns the new (θ, G).

    Scalars come in the accumulator's dtype, so float32 arithmetic stays float32 (and
    vectorises). ``shrink`` is ``1 - lr·wd``, the decoupled decay factor.
    """
    if maximize:
        g = -g
    if wd != 0:
        if decoupled:
            p = p * shrink
        else:
            g = g + wd * p
    s = rho * s + g * g
    if eps_inside:
        denom = math.sqrt(s + eps)
        step = g / denom if denom != 0 else g - g  # G + ε == 0 only where g == 0
    else:
        step = g / (math.sqrt(s) + eps)
    return p - lr * step, s


@numba.njit(inline="always")
def load_float(value):
    return value


@numba.njit(inline="always")
def store_float(value):
    return value


@intrinsic
def _float32_from_bits(typingctx, bits):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())
    return types.float32(types.uint32), codegen


@intrinsic
def _bits_from_float32(typingctx, value):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(32))
    return types.uint32(types.float32), codegen


@numba.njit(inline="always")
def load_bf16(word):
    return _float32_from_bits(np.uint32(word) << np.uint32(16))


@numba.njit(inline="always")
def store_bf16(value):
    """Round to the nearest-even bfloat16, as torch does; NaN stays a (quiet) NaN."""
    bits = _bits_from_float32(np.float32(value))
    if (bits & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000):
        return np.uint16((bits >> np.uint32(16)) | np.uint32(0x0040))
    rounded = bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))
    return np.uint16(rounded >> np.uint32(16))


def as_numpy(t: Tensor) -> np.ndarray:
    """A numpy view of a contiguous CPU tensor's memory (bfloat16 as uint16 words)."""
    t = t.detach()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(np.uint16)
    return t.numpy()


def loader_pair(dtype: torch.dtype):
    """The (load, store) functions for parameters of ``dtype``."""
    if dtype == torch.bfloat16:
        return load_bf16, store_bf16
    return load_float, store_float


def scalar_type(state_sum: Tensor):
    """The numpy scalar type the kernels compute in: the accumulator's."""
    return np.float32 if state_sum.dtype == torch.float32 else np.float64


KERNEL_PARAM_DTYPES = (torch.float32, torch.float64, torch.bfloat16)
KERNEL_STATE_DTYPES = (torch.float32, torch.float64)
