"""The Triton kernels (issue 13) in Triton's interpreter against the float64 reference:
every option, float32/bfloat16/float16, empty and odd sizes, several tensors per launch,
duplicate ids. A few cases run in the default suite; the full grid and the property tests
are slow (the interpreter runs each program in numpy)."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import to64
from hypothesis import given, settings
from hypothesis import strategies as st
from triton_support import ATOL, KERNEL_DTYPES, RTOL

from adagrad import reference as ref
from adagrad.kernels.adagrad import triton as triton_dense
from adagrad.kernels.adagrad import triton_sparse
from adagrad.kernels.engine.clocks import RowClocks
from adagrad.kernels.engine.rule import StepRule

# (maximize, weight decay, decoupled, eps inside, accumulator decay ρ)
DENSE_OPTIONS = list(itertools.product((False, True), (0.0, 0.05), (False, True),
                                       (False, True), (1.0, 0.9)))
BLOCK = triton_dense.BLOCK
SHAPES = [(0,), (1,), (3, 5), (BLOCK - 1,), (BLOCK + 1,), (2, BLOCK)]  # block edges


def _rule(lr, maximize=False, weight_decay=0.0, decoupled=False, eps_inside=False, rho=1.0):
    return StepRule(lr=lr, eps=1e-8, eps_inside=eps_inside, maximize=maximize,
                    weight_decay=weight_decay, decoupled=decoupled, accumulator_decay=rho)


def _reference_dense(param, grad, state_sum, rule):
    return ref.adagrad(to64(param), to64(grad), {"step": 0, "sum": to64(state_sum)},
                       lr=rule.lr, eps=rule.eps,
                       eps_placement="inside" if rule.eps_inside else "outside",
                       maximize=rule.maximize, weight_decay=rule.weight_decay,
                       decoupled_weight_decay=rule.decoupled,
                       accumulator_decay=rule.accumulator_decay)


def _assert_close(tensor, expected, dtype):
    np.testing.assert_allclose(to64(tensor), expected, rtol=RTOL[dtype], atol=ATOL)


def _check_dense(dtype, rule, shapes, lr_tensor=None, seed=0):
    """One launch over tensors of ``shapes``; each against the reference."""
    gen = torch.Generator().manual_seed(seed)
    params = [torch.randn(s, generator=gen).to(dtype) for s in shapes]
    grads = [torch.randn(s, generator=gen).to(dtype) for s in shapes]
    sums = [torch.rand(s, generator=gen) for s in shapes]
    expected = [_reference_dense(*args, rule) for args in zip(params, grads, sums)]
    # with a device lr the kernel steps by lr·rule.lr (rule.lr is then the decay factor)
    kernel_rule = rule if lr_tensor is None else replace(rule, lr=rule.lr / lr_tensor.item())
    triton_dense.dense_adagrad_(params, grads, sums, kernel_rule, lr_tensor)
    for param, state_sum, (theta, state) in zip(params, sums, expected):
        _assert_close(param, theta, dtype)
        np.testing.assert_allclose(to64(state_sum), state["sum"], rtol=2e-6, atol=ATOL)


@pytest.mark.parametrize("dtype", KERNEL_DTYPES)
def test_triton_dense_every_option_in_one_case_each(dtype):
    """Default suite: every dtype, all options on, sizes empty to odd, one launch."""
    _check_dense(dtype, _rule(0.1, True, 0.05, True, True, 0.9), SHAPES)
    _check_dense(dtype, _rule(0.1, False, 0.05, False, False, 1.0), [(7,), (BLOCK + 1,)])


def test_triton_dense_reads_the_learning_rate_from_the_device():
    """lr as a 0-d tensor: lr_t = lr·(decay factor), read by the kernel."""
    _check_dense(torch.float32, _rule(0.1, weight_decay=0.05, decoupled=True), [(5,), (BLOCK + 6,)],
                 lr_tensor=torch.tensor(0.2))


def test_triton_dense_splits_many_tensors_over_launches(monkeypatch):
    monkeypatch.setattr(triton_dense, "MAX_TENSORS", 3)
    _check_dense(torch.float32, _rule(0.1, eps_inside=True), [(2,), (0,), (3,), (1,), (4,),
                                                              (BLOCK + 1,), (6,)])


def test_triton_dense_eps_inside_zero_gradient_zero_sum_gives_zero_step():
    """G + ε == 0 only where g == 0: the update is 0, not 0/0 (reference's rule)."""
    param, grad, state_sum = torch.ones(4), torch.zeros(4), torch.zeros(4)
    triton_dense.dense_adagrad_([param], [grad], [state_sum],
                                StepRule(lr=0.1, eps=0.0, eps_inside=True))
    assert torch.equal(param, torch.ones(4)) and torch.equal(state_sum, torch.zeros(4))


def test_triton_dense_supports_only_what_it_computes():
    param = torch.zeros(4)
    assert triton_dense.supports(param, param.clone(), torch.zeros(4))
    assert not triton_dense.supports(param.double(), param.double(), torch.zeros(4))
    assert not triton_dense.supports(param, param.clone(), torch.zeros(4, dtype=torch.float64))
    assert not triton_dense.supports(param, param.bfloat16(), torch.zeros(4))
    strided = torch.zeros(4, 2)[:, 0]
    assert not triton_dense.supports(strided, strided.clone(), torch.zeros(4))


@pytest.mark.slow
@pytest.mark.parametrize("dtype", KERNEL_DTYPES)
@pytest.mark.parametrize("options", DENSE_OPTIONS)
def test_triton_dense_full_grid(dtype, options):
    _check_dense(dtype, _rule(0.1, *options), SHAPES)


@pytest.mark.slow
@settings(max_examples=15)
@given(dtype=st.sampled_from(KERNEL_DTYPES), options=st.sampled_from(DENSE_OPTIONS),
       sizes=st.lists(st.integers(0, 2 * triton_dense.BLOCK + 3), min_size=1, max_size=6),
       lr=st.floats(1e-3, 1.0), seed=st.integers(0, 2 ** 16))
def test_triton_dense_property(dtype, options, sizes, lr, seed):
    _check_dense(dtype, _rule(lr, *options), [(n,) for n in sizes], seed=seed)


# -- sparse rows ----------------------------------------------------------------------

SPARSE_OPTIONS = list(itertools.product((False, True), (0.0, 0.05), (False, True)))


def _check_sparse(dtype, rows, width, ids, options=(False, 0.0, False), form="coo", seed=0):
    """One sparse step from ``ids`` (may repeat) against reference.adagrad_sparse.

    ``form``: "coo" (values per position), "bags" (values per bag, value_of and
    per-position scale, as a fused embedding-bag backward passes them) or "shared" (one
    scale for every position)."""
    maximize, weight_decay, eps_inside = options
    gen = torch.Generator().manual_seed(seed)
    table = torch.randn(rows, width, generator=gen).to(dtype)
    state_sum = torch.rand(rows, width, generator=gen)
    indices = torch.tensor(ids, dtype=torch.long)
    nnz = indices.numel()
    value_of = scale = None
    if form == "coo":
        values = torch.randn(nnz, width, generator=gen).to(dtype)
        per_position = to64(values)
    else:
        values = torch.randn(3, width, generator=gen).to(dtype)
        value_of = torch.randint(0, 3, (nnz,), generator=gen)
        scale = torch.rand(nnz if form == "bags" else 1, generator=gen)
        per_position = to64(values)[value_of.numpy()] * to64(scale)[:, None]
    rule = _rule(0.1, maximize, weight_decay, False, eps_inside)
    theta, state = ref.adagrad_sparse(
        to64(table), indices.numpy(), per_position, {"step": 0, "sum": to64(state_sum)},
        lr=0.1, eps=rule.eps, eps_placement="inside" if eps_inside else "outside",
        maximize=maximize, weight_decay=weight_decay,
        sparse_weight_decay="touched" if weight_decay else None)
    triton_sparse.sparse_adagrad_(table, state_sum, indices, values, rule, RowClocks(),
                                  value_of, scale)
    _assert_close(table, theta, dtype)
    np.testing.assert_allclose(to64(state_sum), state["sum"], rtol=2e-6, atol=ATOL)


@pytest.mark.parametrize("dtype", KERNEL_DTYPES)
def test_triton_sparse_duplicates_and_options(dtype):
    """Default suite: duplicate ids, every option on, an odd width."""
    _check_sparse(dtype, 9, 5, [3, 0, 3, 8, 3, 1, 0], (True, 0.05, True))


def test_triton_sparse_bag_form_and_wide_rows():
    """The fused layer's form (value_of, per-position scale) on rows wider than one
    program (two column blocks)."""
    _check_sparse(torch.float32, 6, triton_sparse.MAX_BLOCK_D + 3, [5, 2, 5, 0], form="bags")


def test_triton_sparse_one_scale_for_every_position():
    _check_sparse(torch.bfloat16, 6, 4, [1, 1, 4], form="shared")


def test_triton_sparse_no_ids_changes_nothing():
    table, state_sum = torch.randn(4, 3), torch.rand(4, 3)
    before = table.clone(), state_sum.clone()
    triton_sparse.sparse_adagrad_(table, state_sum, torch.zeros(0, dtype=torch.long),
                                  torch.zeros(0, 3), _rule(0.1), RowClocks())
    assert torch.equal(table, before[0]) and torch.equal(state_sum, before[1])


def test_triton_sparse_segments_group_positions_by_row():
    """The device-side grouping against numpy's: rows ascending, one first slot per
    distinct row, every position sent to a slot of its own row."""
    indices = torch.tensor([7, 2, 7, 7, 0, 2, 9])
    sorted_rows, is_first, destination = triton_sparse.segments(indices)
    assert sorted_rows.tolist() == sorted(indices.tolist())
    assert sorted_rows[is_first].tolist() == np.unique(indices.numpy()).tolist()
    assert all(is_first[d] and sorted_rows[d] == row
               for d, row in zip(destination.tolist(), indices.tolist()))


@pytest.mark.slow
@pytest.mark.parametrize("dtype", KERNEL_DTYPES)
@pytest.mark.parametrize("options", SPARSE_OPTIONS)
@pytest.mark.parametrize("form", ["coo", "bags", "shared"])
def test_triton_sparse_full_grid(dtype, options, form):
    _check_sparse(dtype, 11, 7, [4, 10, 4, 0, 4, 7, 10, 2], options, form)


@pytest.mark.slow
@settings(max_examples=10)
@given(dtype=st.sampled_from(KERNEL_DTYPES), options=st.sampled_from(SPARSE_OPTIONS),
       rows=st.integers(1, 12), width=st.integers(1, 300),
       data=st.data(), form=st.sampled_from(["coo", "bags", "shared"]))
def test_triton_sparse_property(dtype, options, rows, width, data, form):
    ids = data.draw(st.lists(st.integers(0, rows - 1), max_size=10))
    _check_sparse(dtype, rows, width, ids, options, form)
