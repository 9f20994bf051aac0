"""The numba sparse kernel's partitioned (parallel) path: the counting sort of positions by
hash partition, any number of partitions (above 64 too), results bit-identical whatever
the number of threads or partitions, and the parallel kernel against the float64
reference at a size that takes it (:ref:`algo-sparse`).

The internals (`sparse_cpu._partition_positions`, `_float_parallel`, ...) are called
directly where a partition count other than the thread count is wanted.
"""

from __future__ import annotations

import math
from contextlib import contextmanager

import numba
import numpy as np
import pytest
import torch
from sparse_support import assert_close64, np64, tol_for

from adagrad import reference
from adagrad.kernels import RowClocks, StepRule
from adagrad.kernels.engine import sparse_cpu
from adagrad.kernels.engine.elementwise import PARALLEL_MIN_ELEMENTS, as_numpy, rule_tuple

WIDTH = 8
NNZ = PARALLEL_MIN_ELEMENTS // WIDTH  # nnz·D at the threshold: the parallel kernel
ROWS = 20_000
RULE = StepRule(lr=0.1, eps=1e-10)

# bf16 tables compile the kernels' second signature: that case runs in the slow pass
DTYPES = [pytest.param(torch.float32, id="f32"),
          pytest.param(torch.bfloat16, id="bf16", marks=pytest.mark.slow)]


@contextmanager
def numba_threads(n: int):
    """Run with ``n`` numba threads, then restore the previous count."""
    if n > numba.config.NUMBA_NUM_THREADS:
        pytest.skip(f"numba allows at most {numba.config.NUMBA_NUM_THREADS} threads here")
    before = numba.get_num_threads()
    numba.set_num_threads(n)
    try:
        yield
    finally:
        numba.set_num_threads(before)


def _ids(kind: str, gen: torch.Generator, nnz: int = NNZ) -> torch.Tensor:
    """``repeated``: ~27 occurrences per touched row; ``unique``: no row twice."""
    if kind == "repeated":
        return torch.randint(0, 300, (nnz,), generator=gen)
    return torch.randperm(ROWS, generator=gen)[:nnz]


def _table(dtype, gen: torch.Generator, rows: int = ROWS, width: int = WIDTH):
    param = torch.randn(rows, width, generator=gen).to(dtype)
    state_sum = torch.rand(rows, width, generator=gen)
    return param, state_sum


# ------------------------------------------------------------------ the counting sort


@pytest.mark.parametrize("parts", [1, 2, 3, 64, 100, 200])
def test_partition_positions_is_a_stable_sort_by_partition(parts):
    indices = np.random.default_rng(parts).integers(0, 5_000, 20_000)
    order, starts = sparse_cpu._partition_positions(indices, parts)
    assert starts.shape == (parts + 1,) and starts[0] == 0 and starts[-1] == indices.size
    if parts == 1:  # no pass: an empty order stands for positions 0..n-1
        assert order.size == 0
        return
    assert np.array_equal(np.sort(order), np.arange(indices.size))
    sizes = np.diff(starts)
    for p in range(parts):
        mine = order[starts[p]:starts[p + 1]]
        assert np.all(np.diff(mine) > 0)  # ascending: duplicates are summed in order
        assert all(sparse_cpu.partition_of(indices[k], parts) == p for k in mine[:50])
    # The hash spreads rows evenly: no partition far above its share.
    assert sizes.max() < 2 * indices.size / parts


def test_partition_count_is_bounded_by_the_16_bit_notes():
    with pytest.raises(ValueError, match="65536"):
        sparse_cpu._partition_positions(np.zeros(4, np.int64), (1 << 16) + 1)


def test_partition_and_slot_use_independent_bits():
    """Rows of one partition still spread over all the slots of its hash table."""
    rows = np.arange(100_000)
    parts = 100
    mine = [r for r in rows if sparse_cpu.partition_of(r, parts) == 7]
    slots = {int(sparse_cpu._mix(r)) & 1023 for r in mine}
    assert len(mine) > 800 and len(slots) > 0.5 * 1024


# ------------------------------------------------------------------ any number of partitions


def _run_internal(parts, param, state_sum, indices, grad, clocks=None):
    """One step through the numba internals with ``parts`` partitions (0: the serial kernel)."""
    bf16 = param.dtype == torch.bfloat16
    args = (as_numpy(param), as_numpy(state_sum), indices.numpy(), grad,
            rule_tuple(RULE, np.float32), sparse_cpu._clock_tuple(clocks or RowClocks()))
    if parts == 0:
        sparse_cpu._SERIAL[bf16](*args)
    else:
        sparse_cpu._PARALLEL[bf16](*args, parts)


@pytest.mark.parametrize("dtype", DTYPES)
def test_partition_counts_above_64_are_bit_identical_to_serial(dtype):
    """Random values (float32 sums depend on their order) and heavy duplication: every
    partition count gives the serial kernel's bits, lazy clocks included."""
    gen = torch.Generator().manual_seed(1)
    param0, state0 = _table(dtype, gen, rows=500, width=5)
    indices = torch.randint(0, 400, (3_000,), generator=gen)
    values = torch.randn(3_000, 5, generator=gen)
    grad = sparse_cpu._grad_arrays(values, None, None)
    last = torch.randint(0, 5, (500,), generator=gen).to(torch.float64)
    results = {}
    for parts in [0, 1, 2, 7, 64, 100, 200]:
        param, state_sum = param0.clone(), state0.clone()
        clocks = RowClocks(param_log=-0.5, row_param_log=last * -0.1, sum_log=-0.2,
                           row_sum_log=last * -0.04)
        _run_internal(parts, param, state_sum, indices, grad, clocks)
        results[parts] = (param, state_sum, clocks.row_param_log, clocks.row_sum_log)
    for parts, got in results.items():
        assert all(torch.equal(a, b) for a, b in zip(got, results[0])), parts


def test_partition_counts_above_64_equal_reference():
    gen = torch.Generator().manual_seed(2)
    param, state_sum = _table(torch.float32, gen, rows=500, width=5)
    indices = torch.randint(0, 300, (2_000,), generator=gen)
    values = torch.randint(-64, 65, (2_000, 5), generator=gen) / 64  # sums exact in float32
    p0, s0 = np64(param), np64(state_sum)
    _run_internal(200, param, state_sum, indices, sparse_cpu._grad_arrays(values, None, None))
    theta, state = reference.adagrad_sparse(p0, indices.numpy(), np64(values),
                                            {"step": 0, "sum": s0}, lr=RULE.lr, eps=RULE.eps)
    assert_close64(param, theta, **tol_for(torch.float32))
    assert_close64(state_sum, state["sum"], **tol_for(torch.float32))


# ------------------------------------------------------------------ public kernel, parallel size


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("ids", ["repeated", "unique"])
@pytest.mark.parametrize("read", ["coo", "value_of+scale"])
def test_parallel_kernel_equals_reference(dtype, ids, read):
    """At the parallel threshold, 1 and 2 threads: bit-identical, and the reference."""
    gen = torch.Generator().manual_seed(3)
    param0, state0 = _table(dtype, gen)
    indices = _ids(ids, gen)
    if read == "coo":
        values = torch.randint(-64, 65, (NNZ, WIDTH), generator=gen) / 64
        value_of = factors = None
        written_out = np64(values)
    else:  # a fused embedding-bag backward: bag rows, per-sample weights
        values = torch.randint(-64, 65, (NNZ // 4, WIDTH), generator=gen) / 64
        value_of = torch.randint(0, NNZ // 4, (NNZ,), generator=gen)
        factors = torch.randint(0, 9, (NNZ,), generator=gen) / 8  # sums stay exact
        written_out = np64(values)[value_of.numpy()] * np64(factors).reshape(-1, 1)
    assert indices.numel() * WIDTH >= PARALLEL_MIN_ELEMENTS
    runs = []
    for threads in (1, 2):
        param, state_sum = param0.clone(), state0.clone()
        with numba_threads(threads):
            sparse_cpu.sparse_adagrad_(param, state_sum, indices, values, RULE, RowClocks(),
                                       value_of, factors)
        runs.append((param, state_sum))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])

    theta, state = reference.adagrad_sparse(np64(param0), indices.numpy(), written_out,
                                            {"step": 0, "sum": np64(state0)}, lr=RULE.lr,
                                            eps=RULE.eps)
    param, state_sum = runs[1]
    if dtype == torch.bfloat16:  # the reference from the bf16 table, rounded once
        assert_close64(param, theta, rtol=2 ** -7, atol=1e-6)
    else:
        assert_close64(param, theta, **tol_for(torch.float32))
    assert_close64(state_sum, state["sum"], **tol_for(torch.float32))


def test_parallel_kernel_bit_identical_across_thread_counts_with_inexact_sums():
    """Random float32 values, ~27 duplicates per row: a different summation order would
    change the last bits; the partitioned kernel sums in position order at any count."""
    gen = torch.Generator().manual_seed(4)
    param0, state0 = _table(torch.float32, gen)
    indices = _ids("repeated", gen)
    values = torch.randn(NNZ, WIDTH, generator=gen)
    runs = []
    for threads in (1, 2):
        param, state_sum = param0.clone(), state0.clone()
        with numba_threads(threads):
            sparse_cpu.sparse_adagrad_(param, state_sum, indices, values, RULE, RowClocks())
        runs.append((param, state_sum))
    serial_param, serial_sum = param0.clone(), state0.clone()
    _run_internal(0, serial_param, serial_sum, indices, sparse_cpu._grad_arrays(values, None,
                                                                                None))
    for param, state_sum in runs:
        assert torch.equal(param, serial_param) and torch.equal(state_sum, serial_sum)
    assert not math.isclose(float(runs[0][0].sum()), float(param0.sum()))  # it moved


def test_optimizer_both_lazy_decays_at_parallel_size_equal_reference():
    """Lazy weight decay and accumulator decay together, steps that take the parallel
    kernel: both snapshots of every touched row must move to now (a numba bug once left
    the accumulator's stale in the parallel kernel, decaying those rows twice)."""
    from sparse_support import SparseRef, coo, run_opt

    from adagrad import Adagrad

    gen = torch.Generator().manual_seed(5)
    p0 = torch.randn(ROWS, WIDTH, generator=gen)
    options = dict(lr=0.1, weight_decay=0.1, sparse_weight_decay="lazy",
                   accumulator_decay=0.9, eps=1e-10)
    grads = [coo(_ids("repeated", gen) + 300 * k,
                 torch.randint(-64, 65, (NNZ, WIDTH), generator=gen) / 64, (ROWS, WIDTH))
             for k in range(3)]  # overlapping row ranges: rows come back after a gap
    p = p0.clone().requires_grad_(True)
    opt = Adagrad([p], **options)
    with numba_threads(2):
        run_opt(opt, p, grads)
    ref = SparseRef(p0, **{k: v for k, v in options.items() if k != "lr"})
    for g in grads:
        ref.step(g, lr=options["lr"])
    opt.flush()
    ref.flush()
    assert_close64(p, ref.theta, rtol=1e-5, atol=1e-6)
    assert_close64(opt.state[p]["sum"], ref.sum, rtol=1e-5, atol=1e-6)
