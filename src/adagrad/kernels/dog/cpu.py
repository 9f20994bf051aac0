"""`DoGAdagrad`'s sparse step on the CPU (:ref:`algo-dog`): a client of the sparse row
engine (`sparse_cpu`).

Each touched row, once, its duplicates summed by the engine (the portable kernel's rule,
`adagrad.kernels.dog`)::

    g' = ±g ;  G ← G + g'² ;  x ← x - c·g' / (sqrt(G) + ε)        (c = lr·r̄)

and the change of the row's distance terms ``sqrt(G)·(x - x0)²`` and ``sqrt(G)`` (float64:
the row's terms before and after its update, while it is in cache), added into the slot of
the row's partition. The partitions are a fixed number, `PARTS`, whatever the thread count
(one thread per partition, rows in position order within it), and the slots are summed in
order: the same bits on any number of threads. Float32 tables only (the embedding case; the update in float32, as the
portable kernel's): float64 and bf16 tables take the portable kernel, which spares the
compile of two more kernels per dtype.
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from torch import Tensor

from adagrad.kernels.engine.elementwise import load_float, prefetch_row, store_float
from adagrad.kernels.engine.sparse_cpu import (
    partition_of,
    partition_positions,
    update_partition,
    update_rows_,
    update_rows_serial,
)

PARTS = 64
"""Partitions of a parallel step, and slots of its distance sums."""


# Not inlined: numba's fastmath flags are per function, and only these sums may be
# reassociated (LLVM then vectorises them, as `rowwise_cpu._mean_square`).
@numba.njit(fastmath={"reassoc"}, error_model="numpy")
def _row_terms(param, state_sum, initial, row, load):
    """``(Σ_d sqrt(G)·(x - x0)², Σ_d sqrt(G))`` of row ``row``, in float64."""
    moved = 0.0
    weight = 0.0
    for d in range(param.shape[1]):
        root = np.float64(np.sqrt(state_sum[row, d]))
        diff = np.float64(load(param[row, d])) - np.float64(initial[row, d])
        moved += root * diff * diff
        weight += root
    return moved, weight


@numba.njit(inline="always", error_model="numpy")
def _dog_row(tables, row, grad_row, factor, coefficients, load, store):
    """:ref:`algo-dog` on row ``row`` whose gradient is ``factor·grad_row``, and the change of its
    distance terms into its partition's slot. ``tables`` is ``(param, state_sum,
    initial)``, ``coefficients`` ``(scale, eps, sign, slots, parts)``; indexed, not
    unpacked (see `sparse_cpu`)."""
    param = tables[0]
    state_sum = tables[1]
    initial = tables[2]
    scale = coefficients[0]
    eps = coefficients[1]
    sign = coefficients[2]
    slots = coefficients[3]
    zero = scale - scale
    moved_before, weight_before = _row_terms(param, state_sum, initial, row, load)
    for d in range(param.shape[1]):
        g = sign * (grad_row[d] * factor)
        s = state_sum[row, d] + g * g
        denom = np.sqrt(s) + eps
        step = g / denom if denom > zero else zero
        param[row, d] = store(load(param[row, d]) - scale * step)
        state_sum[row, d] = s
    moved, weight = _row_terms(param, state_sum, initial, row, load)
    slot = partition_of(row, coefficients[4]) if coefficients[4] > 1 else 0
    slots[slot, 0] += moved - moved_before
    slots[slot, 1] += weight - weight_before


@numba.njit(inline="always", error_model="numpy")
def _dog_prefetch(tables, row):
    prefetch_row(tables[0], row)
    prefetch_row(tables[1], row)
    prefetch_row(tables[2], row)


@numba.njit(cache=True, error_model="numpy")
def _float_serial(param, state_sum, initial, indices, grad, scale, eps, sign, slots):
    update_rows_serial((param, state_sum, initial), indices, grad,
                       (scale, eps, sign, slots, 1), _dog_row, _dog_prefetch, load_float,
                       store_float)


@numba.njit(parallel=True, cache=True, error_model="numpy")
def _float_parallel(param, state_sum, initial, indices, grad, scale, eps, sign, slots, parts):
    order, starts = partition_positions(indices, parts)
    for part in numba.prange(parts):
        update_partition((param, state_sum, initial), indices, grad,
                         (scale, eps, sign, slots, parts), order, starts, part, _dog_row,
                         _dog_prefetch, load_float, store_float)


# Keyed by "bfloat16 parameter", as the engine wants; bf16 tables go to the portable kernel.
_SERIAL = {False: _float_serial}
_PARALLEL = {False: _float_parallel}


def supports(table: Tensor, state_sum: Tensor, initial: Tensor, values: Tensor) -> bool:
    """Whether the kernel runs the step: CPU, contiguous float32 ``(rows, D)`` tables, the
    gradient values float32 too."""
    tables = (table, state_sum, initial, values)
    return (all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tables)
            and table.dim() == 2 and all(t.is_contiguous() for t in tables[:3]))


def sparse_dog_adagrad_(table: Tensor, state_sum: Tensor, initial: Tensor, indices: Tensor,
                        values: Tensor, scale: float, eps: float, maximize: bool,
                        value_of: Tensor | None = None,
                        scale_of: Tensor | None = None) -> tuple[float, float]:
    """One sparse step (:ref:`algo-dog`) of a ``(rows, D)`` table through the row engine; position
    ``k`` adds ``scale_of[k]·values[value_of[k]]`` to row ``indices[k]`` (`SparseGrad`).
    Returns the change of ``(moved, weight)`` over the touched rows. Indices are checked
    before anything is written (IndexError)."""
    slots = np.zeros((PARTS, 2), np.float64)
    coefficients = (np.float32(scale), np.float32(eps), np.float32(-1.0 if maximize else 1.0),
                    slots)
    update_rows_(_SERIAL, _PARALLEL, (table, state_sum, initial), indices, values,
                 coefficients, value_of, scale_of, parts=PARTS)
    moved, weight = slots.sum(axis=0)
    return float(moved), float(weight)
