"""The sparse row engine of `adagrad.kernels.sparse_cpu` with a second client: a "scatter"
row update that writes each touched row's summed gradient into an output table and counts
how often the row was handed over. Held to a numpy reference of the grouping (duplicates
summed in ascending position order, each touched row handed over exactly once), serial and
partitioned, at 1 and 2 numba threads, with repeated, empty and out-of-range indices.

The client writes through its ``tables`` and through an array in its ``coefficients``
from inside the prange, indexing the tuples: unpacking them instead (numba 0.68's dropped
writes, see `sparse_cpu`) fails these tests.
"""

from __future__ import annotations

from contextlib import contextmanager

import numba
import numpy as np
import pytest
import torch

from adagrad.kernels.engine import sparse_cpu
from adagrad.kernels.engine.elementwise import PARALLEL_MIN_ELEMENTS, load_float, store_float

ROWS = 3_000
WIDTH = 8


@numba.njit(inline="always", error_model="numpy")
def _scatter_row(tables, row, grad_row, factor, coefficients, load, store):
    out = tables[0]
    handed = coefficients[0]
    handed[row] += 1
    for d in range(out.shape[1]):
        out[row, d] = store(grad_row[d] * factor)


@numba.njit(error_model="numpy")
def _scatter_serial(out, indices, grad, handed):
    sparse_cpu.update_rows_serial((out,), indices, grad, (handed,), _scatter_row,
                                  sparse_cpu.prefetch_nothing, load_float, store_float)


@numba.njit(parallel=True, error_model="numpy")
def _scatter_parallel(out, indices, grad, handed, parts):
    order, starts = sparse_cpu.partition_positions(indices, parts)
    for part in numba.prange(parts):
        sparse_cpu.update_partition((out,), indices, grad, (handed,), order, starts, part,
                                    _scatter_row, sparse_cpu.prefetch_nothing, load_float,
                                    store_float)


_SERIAL = {False: _scatter_serial}
_PARALLEL = {False: _scatter_parallel}


@contextmanager
def numba_threads(n: int):
    if n > numba.config.NUMBA_NUM_THREADS:
        pytest.skip(f"numba allows at most {numba.config.NUMBA_NUM_THREADS} threads here")
    before = numba.get_num_threads()
    numba.set_num_threads(n)
    try:
        yield
    finally:
        numba.set_num_threads(before)


def _reference(indices, values, value_of, scale):
    """Each touched row's sum, in float32, position by position in ascending order; NaN
    for untouched rows."""
    out = np.full((ROWS, WIDTH), np.nan, np.float32)
    handed = np.zeros(ROWS, np.int64)
    source = np.arange(indices.size) if value_of is None else value_of
    factors = np.ones(indices.size, np.float32) if scale is None else scale
    for k, row in enumerate(indices):
        contribution = values[source[k]] * factors[k]
        out[row] = contribution if handed[row] == 0 else out[row] + contribution
        handed[row] = 1
    return out, handed


def _gradient(nnz: int, rng, bags: bool):
    indices = rng.integers(0, ROWS // 10, nnz)  # ~nnz/300 occurrences per touched row
    indices[: nnz // 2] = rng.integers(0, ROWS, nnz // 2)  # and some rows touched once
    if not bags:
        return indices, rng.standard_normal((nnz, WIDTH), dtype=np.float32), None, None
    values = rng.standard_normal((max(nnz // 4, 1), WIDTH), dtype=np.float32)
    return (indices, values, rng.integers(0, values.shape[0], nnz),
            rng.standard_normal(nnz, dtype=np.float32))


def _run(indices, values, value_of, scale):
    out = torch.full((ROWS, WIDTH), float("nan"))
    handed = np.zeros(ROWS, np.int64)
    sparse_cpu.update_rows_(_SERIAL, _PARALLEL, (out,), torch.from_numpy(indices),
                            torch.from_numpy(values), (handed,),
                            None if value_of is None else torch.from_numpy(value_of),
                            None if scale is None else torch.from_numpy(scale))
    return out.numpy(), handed


@pytest.mark.parametrize("threads", [1, pytest.param(2, marks=pytest.mark.slow)])
@pytest.mark.parametrize("nnz", [0, 1, 50, PARALLEL_MIN_ELEMENTS // WIDTH * 2],
                         ids=["empty", "one", "serial", "parallel"])
@pytest.mark.parametrize("bags", [False, True], ids=["coo", "value_of+scale"])
def test_engine_sums_each_row_in_position_order_once(threads, nnz, bags):
    """Random float32 values: another summation order would change the last bits."""
    indices, values, value_of, scale = _gradient(nnz, np.random.default_rng(nnz), bags)
    with numba_threads(threads):
        out, handed = _run(indices, values, value_of, scale)
    expected, touched = _reference(indices, values, value_of, scale)
    assert np.array_equal(handed, touched)  # every touched row once, no other row
    assert np.array_equal(out, expected, equal_nan=True)


@pytest.mark.parametrize("parts", [2, 3, 64, 257])
def test_engine_any_partition_count_equals_reference(parts):
    indices, values, value_of, scale = _gradient(5_000, np.random.default_rng(parts), True)
    out = np.full((ROWS, WIDTH), np.nan, np.float32)
    handed = np.zeros(ROWS, np.int64)
    grad = sparse_cpu._grad_arrays(torch.from_numpy(values), torch.from_numpy(value_of),
                                   torch.from_numpy(scale))
    _scatter_parallel(out, indices, grad, handed, parts)
    expected, touched = _reference(indices, values, value_of, scale)
    assert np.array_equal(handed, touched)
    assert np.array_equal(out, expected, equal_nan=True)


@pytest.mark.parametrize("bad", [-1, ROWS])
@pytest.mark.parametrize("nnz", [10, PARALLEL_MIN_ELEMENTS], ids=["serial", "parallel"])
def test_engine_refuses_out_of_range_indices_before_writing(bad, nnz):
    indices, values, _, _ = _gradient(nnz, np.random.default_rng(0), False)
    indices[nnz // 2] = bad
    with pytest.raises(IndexError, match=f"index {bad} is out of range for a table of "
                                         f"{ROWS} rows"):
        _run(indices, values, None, None)
    out = torch.full((ROWS, WIDTH), float("nan"))
    handed = np.zeros(ROWS, np.int64)
    with pytest.raises(IndexError):
        sparse_cpu.update_rows_(_SERIAL, _PARALLEL, (out,), torch.from_numpy(indices),
                                torch.from_numpy(values), (handed,))
    assert torch.isnan(out).all() and not handed.any()
