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
from numba.core import cgutils, types
from numba.extending import intrinsic
from torch import Tensor

from adagrad.kernels.rule import StepRule

PARALLEL_MIN_ELEMENTS = 1 << 16
"""Below this many elements a kernel runs on one thread: starting the thread pool costs
more than it saves, and far more on a loaded machine."""


def rule_tuple(rule: StepRule, scalar) -> tuple:
    """`StepRule` as the tuple the numba kernels take, scalars in the compute type."""
    return (scalar(rule.lr), scalar(rule.eps), rule.eps_inside, rule.maximize,
            scalar(rule.weight_decay), rule.decoupled, scalar(rule.accumulator_decay),
            scalar(1 - rule.lr * rule.weight_decay))


@numba.njit(inline="always")
def adagrad_coordinate(p, g, s, rule):
    """§1 on one coordinate; returns the new (θ, G). ``rule`` is a `rule_tuple`.

    Scalars come in the accumulator's dtype, so float32 arithmetic stays float32 (and
    vectorises). ``shrink`` is ``1 - lr·wd``, the decoupled decay factor.
    """
    lr, eps, eps_inside, maximize, wd, decoupled, rho, shrink = rule
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


@intrinsic
def _prefetch_address(typingctx, address):
    """Hint the CPU to fetch the cache line at ``address`` for writing (llvm.prefetch)."""
    def codegen(context, builder, signature, args):
        byte_pointer = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        prefetch = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [byte_pointer, i32, i32, i32]),
            "llvm.prefetch.p0")
        builder.call(prefetch, [builder.inttoptr(args[0], byte_pointer), ir.Constant(i32, 1),
                                ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()
    return types.void(types.intp), codegen


@numba.njit(inline="always")
def prefetch_row(table, row):
    """Start loading row ``row`` of a C-contiguous 2-D array into the cache."""
    row_bytes = table.shape[1] * table.itemsize
    start = table.ctypes.data + row * row_bytes
    for offset in range(0, row_bytes, 64):
        _prefetch_address(start + offset)


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


def scalar_type(state_sum: Tensor):
    """The numpy scalar type the kernels compute in: the accumulator's."""
    return np.float32 if state_sum.dtype == torch.float32 else np.float64


KERNEL_PARAM_DTYPES = (torch.float32, torch.float64, torch.bfloat16)
KERNEL_STATE_DTYPES = (torch.float32, torch.float64)
