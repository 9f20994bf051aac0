"""Per-coordinate pieces shared by the numba CPU kernels.

`adagrad_coordinate` is :ref:`algo-adagrad` on one coordinate; the `load_*`/`store_*` pairs
let one kernel body serve float32/float64 parameters and bfloat16 parameters (held as raw
16-bit words, since numba has no bfloat16 type), with arithmetic in float32.
"""

from __future__ import annotations

import functools

import numba
import numpy as np
import torch
from llvmlite import ir
from numba.core import cgutils, types
from numba.extending import intrinsic
from torch import Tensor

from adagrad.kernels.adagrad.coordinate import adagrad_coordinate, rule_tuple  # noqa: F401

PARALLEL_MIN_ELEMENTS = 1 << 16
"""Below this many elements a kernel runs on one thread: starting the thread pool costs
more than it saves, and far more on a loaded machine."""


@functools.cache
def start_thread_pool() -> None:
    """Start numba's thread pool, leaving torch's thread count as the user set it.

    Numba's OpenMP layer calls ``omp_set_num_threads`` as it starts, which resets torch's
    intra-op threads (a user's ``torch.set_num_threads(1)`` would silently become 2).
    Call before the first parallel kernel.
    """
    torch_threads = torch.get_num_threads()
    numba.get_num_threads()
    torch.set_num_threads(torch_threads)


@numba.njit(inline="always", error_model="numpy")
def load_float(value):
    return value


@numba.njit(inline="always", error_model="numpy")
def store_float(value):
    return value


@intrinsic
def _float32_from_bf16(typingctx, word):
    """The float32 whose upper half is the bfloat16 ``word`` (exact)."""
    def codegen(context, builder, signature, args):
        bits = builder.shl(builder.zext(args[0], ir.IntType(32)), ir.Constant(ir.IntType(32), 16))
        return builder.bitcast(bits, ir.FloatType())
    return types.float32(types.uint16), codegen


@intrinsic
def _bf16_from_float32(typingctx, value):
    """Round a float32 to the nearest-even bfloat16, as torch does; NaN stays a quiet NaN.

    Written in LLVM IR so that the integer steps stay 32-bit lanes: numba's own integer
    arithmetic widens to 64 bits and would halve the vector width.
    """
    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        bits = builder.bitcast(args[0], i32)
        high = builder.lshr(bits, ir.Constant(i32, 16))
        lsb = builder.and_(high, ir.Constant(i32, 1))
        rounded = builder.lshr(builder.add(builder.add(bits, ir.Constant(i32, 0x7FFF)), lsb),
                               ir.Constant(i32, 16))
        quiet_nan = builder.or_(high, ir.Constant(i32, 0x0040))
        is_nan = builder.fcmp_unordered("uno", args[0], args[0])
        return builder.trunc(builder.select(is_nan, quiet_nan, rounded), ir.IntType(16))
    return types.uint16(types.float32), codegen


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


@intrinsic
def _pointer_like(typingctx, address, like):
    """``address`` (an integer) as a pointer to elements of the array ``like``'s dtype."""
    if not isinstance(address, types.Integer) or not isinstance(like, types.Array):
        return None

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(signature.return_type))
    return types.CPointer(like.dtype)(address, like), codegen


@numba.njit(inline="always", error_model="numpy")
def array_at(address, size, like):
    """The ``size`` elements at ``address`` as a 1-D C-contiguous array of ``like``'s dtype
    (a view, nothing copied): how a kernel over many tensors reaches each of them from one
    table of addresses. The caller guarantees what numba cannot check: ``address`` is the
    first element of a live, contiguous buffer of at least ``size`` such elements, kept
    alive by the caller for the whole call (`adagrad.kernels.adagrad.cpu.dense_adagrad_batch_`
    holds the tensors)."""
    return numba.carray(_pointer_like(address, like), size)


@numba.njit(inline="always", error_model="numpy")
def prefetch_row(table, row):
    """Start loading row ``row`` of a C-contiguous 2-D array into the cache."""
    row_bytes = table.shape[1] * table.itemsize
    start = table.ctypes.data + row * row_bytes
    for offset in range(0, row_bytes, 64):
        _prefetch_address(start + offset)


@numba.njit(inline="always", error_model="numpy")
def prefetch_entry(array, index):
    """Start loading entry ``index`` of a contiguous 1-D array into the cache (no view is
    made: a reshaped view per row cost 12 % of the row-wise sparse kernel, measured)."""
    _prefetch_address(array.ctypes.data + index * array.itemsize)


@numba.njit(inline="always", error_model="numpy")
def load_bf16(word):
    return _float32_from_bf16(word)


@numba.njit(inline="always", error_model="numpy")
def store_bf16(value):
    return _bf16_from_float32(np.float32(value))


def as_numpy(t: Tensor) -> np.ndarray:
    """A numpy view of a contiguous CPU tensor's memory (bfloat16 as uint16 words)."""
    if t.requires_grad:
        t = t.detach()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(np.uint16)
    return t.numpy()


def scalar_type(state_sum: Tensor):
    """The numpy scalar type the kernels compute in: the accumulator's."""
    return np.float32 if state_sum.dtype == torch.float32 else np.float64


KERNEL_PARAM_DTYPES = (torch.float32, torch.float64, torch.bfloat16)
KERNEL_STATE_DTYPES = (torch.float32, torch.float64)
