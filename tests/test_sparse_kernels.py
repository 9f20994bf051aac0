"""The sparse kernels (numba CPU and portable torch ops) against the float64 reference,
and a property test of the optimizer's sparse path (:ref:`algo-sparse`, issue 3).

`adagrad.kernels` documents no switch to force the portable path inside the optimizer, so
the kernels are called directly here (their functions are public), and the optimizer-level
tests force the portable path by making the CPU kernel decline (`sparse_cpu.supports`).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from unittest import mock

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sparse_support import DenseRef, SparseRef, assert_close64, coo, np64, run_opt, tol_for

from adagrad import Adagrad, kernels, reference
from adagrad.kernels import RowClocks, StepRule
from adagrad.kernels.adagrad import torch_ops as portable
from adagrad.kernels.engine import sparse_cpu

# torch.optim.Adagrad itself builds COO tensors without invariant checks.
pytestmark = pytest.mark.filterwarnings("ignore:Sparse invariant checks")

KERNELS = [
    pytest.param(sparse_cpu.sparse_adagrad_, id="numba"),
    pytest.param(portable.sparse_adagrad_, id="portable"),
    pytest.param(kernels.sparse_adagrad_, id="dispatch"),
]


@contextmanager
def portable_path():
    """Make the optimizer's sparse dispatch take the portable torch-ops kernel."""
    with mock.patch.object(sparse_cpu, "supports", lambda *args, **kwargs: False):
        yield


# ------------------------------------------------------------------ kernels, one call


def _kernel_case(seed: int, dtype, index_dtype, rows=40, width=5, nnz=60, id_range=15):
    gen = torch.Generator().manual_seed(seed)
    param = torch.randn(rows, width, generator=gen).to(dtype)
    state_sum = torch.rand(rows, width, generator=gen).to(dtype)
    indices = torch.randint(0, id_range, (nnz,), generator=gen).to(index_dtype)
    values = torch.randn(nnz, width, generator=gen).to(dtype)
    return param, state_sum, indices, values


RULES = [
    pytest.param(dict(lr=0.1, eps=1e-10), id="torch"),
    pytest.param(dict(lr=0.3, eps=1e-3, eps_inside=True, maximize=True), id="inside-maximize"),
    pytest.param(dict(lr=0.2, eps=1e-8, weight_decay=0.2), id="touched-l2"),
]


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("rule_kw", RULES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64], ids=["int32", "int64"])
def test_kernel_one_step_equals_reference(kernel, rule_kw, dtype, index_dtype):
    param, state_sum, indices, values = _kernel_case(31, dtype, index_dtype)
    if kernel is sparse_cpu.sparse_adagrad_:
        assert sparse_cpu.supports(param, state_sum, values)
    p0, s0 = np64(param), np64(state_sum)
    rule = StepRule(**rule_kw)
    kernel(param, state_sum, indices, values, rule, RowClocks())

    wd = rule_kw.get("weight_decay", 0.0)
    theta, state = reference.adagrad_sparse(
        p0, indices.long().numpy(), np64(values), {"step": 0, "sum": s0}, lr=rule.lr,
        eps=rule.eps, eps_placement="inside" if rule.eps_inside else "outside",
        maximize=rule.maximize, weight_decay=wd,
        sparse_weight_decay="touched" if wd else None)
    assert_close64(param, theta, **tol_for(dtype))
    assert_close64(state_sum, state["sum"], **tol_for(dtype))


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("scale", ["per-position", "one", None])
@pytest.mark.parametrize("nnz", [0, 1, 60, 20000])  # 20000 × 5 takes the parallel kernel
def test_kernel_reads_values_through_value_of_and_scale(kernel, scale, nnz):
    """Position k's gradient is scale[k]·values[value_of[k]] (what a fused embedding-bag
    backward passes): the reference gets those rows written out in float64."""
    gen = torch.Generator().manual_seed(nnz)
    id_range = max(150, nnz)  # duplicates, but float32 sums of a few terms only
    param, state_sum, _, _ = _kernel_case(32, torch.float32, torch.int64, rows=id_range + 10)
    indices = torch.randint(0, id_range, (nnz,), generator=gen)
    values = torch.randn(7, 5, generator=gen)
    value_of = torch.randint(0, 7, (nnz,), generator=gen)
    factors = {"per-position": torch.rand(nnz, generator=gen), "one": torch.tensor([0.5]),
               None: None}[scale]
    p0, s0 = np64(param), np64(state_sum)
    kernel(param, state_sum, indices, values, StepRule(lr=0.1, eps=1e-10), RowClocks(),
           value_of, factors)

    written_out = np64(values)[value_of.numpy()]
    if factors is not None:
        written_out *= np64(factors).reshape(-1, 1)
    theta, state = reference.adagrad_sparse(p0, indices.numpy(), written_out,
                                            {"step": 0, "sum": s0}, lr=0.1, eps=1e-10)
    assert_close64(param, theta, **tol_for(torch.float32))
    assert_close64(state_sum, state["sum"], **tol_for(torch.float32))
    untouched = sorted(set(range(40)) - set(indices.tolist()))
    assert np.array_equal(np64(param)[untouched], p0[untouched])


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_kernel_lazy_clocks_equal_reference(kernel, dtype):
    """Clocks encode a history: rows last brought up to date at various steps."""
    rows, t, wd, rho = 40, 7, 0.1, 0.9
    param, state_sum, indices, values = _kernel_case(32, dtype, torch.int64)
    lr_history = [0.5, 0.2, 0.3, 0.05, 0.4, 0.1, 0.25]  # lr_1..lr_7 (a scheduler)
    last = torch.randint(0, t, (rows,), generator=torch.Generator().manual_seed(3))
    logs = np.concatenate([[0.0], np.cumsum([math.log(1 - lr * wd) for lr in lr_history])])
    clocks = RowClocks(param_log=float(logs[t]),
                       row_param_log=torch.tensor(logs[last.numpy()], dtype=torch.float64),
                       sum_log=t * math.log(rho),
                       row_sum_log=last.to(torch.float64) * math.log(rho))
    p0, s0 = np64(param), np64(state_sum)
    kernel(param, state_sum, indices, values, StepRule(lr=lr_history[-1], eps=1e-10), clocks)

    state = {"step": t - 1, "sum": s0, "last": last.numpy().astype(np.int64),
             "lr_history": lr_history[:-1]}
    theta, new = reference.adagrad_sparse(
        p0, indices.numpy(), np64(values), state, lr=lr_history[-1], weight_decay=wd,
        sparse_weight_decay="lazy", accumulator_decay=rho)
    touched = np.unique(indices.numpy())
    assert_close64(param[touched], theta[touched], **tol_for(dtype))
    assert_close64(state_sum[touched], new["sum"][touched], **tol_for(dtype))
    # Touched rows' snapshots moved to now; the others did not.
    assert np.allclose(clocks.row_param_log.numpy()[touched], logs[t])
    untouched = np.setdiff1d(np.arange(rows), touched)
    assert np.array_equal(clocks.row_param_log.numpy()[untouched], logs[last.numpy()][untouched])

    # flush_rows_ brings the rest up to date.
    kernels.flush_rows_(param, state_sum, clocks)
    theta, new = reference.adagrad_sparse_flush(theta, new, weight_decay=wd,
                                                accumulator_decay=rho, sparse_weight_decay="lazy")
    assert_close64(param, theta, **tol_for(dtype))
    assert_close64(state_sum, new["sum"], **tol_for(dtype))


@pytest.mark.parametrize("kernel", [KERNELS[0], KERNELS[2]])
def test_kernel_bad_index_raises_before_writing(kernel):
    param, state_sum, indices, values = _kernel_case(33, torch.float32, torch.int64)
    indices[-1] = 40
    p0, s0 = param.clone(), state_sum.clone()
    with pytest.raises(IndexError, match="40"):
        kernel(param, state_sum, indices, values, StepRule(lr=0.1, eps=1e-10), RowClocks())
    assert torch.equal(param, p0) and torch.equal(state_sum, s0)


def test_kernel_bf16_table_with_float32_sum():
    param, state_sum, indices, values = _kernel_case(34, torch.float32, torch.int64)
    param = param.to(torch.bfloat16)
    p0, s0 = np64(param), np64(state_sum)
    kernels.sparse_adagrad_(param, state_sum, indices, values.to(torch.bfloat16),
                            StepRule(lr=0.1, eps=1e-10), RowClocks())
    theta, state = reference.adagrad_sparse(p0, indices.numpy(),
                                            np64(values.to(torch.bfloat16)),
                                            {"step": 0, "sum": s0}, lr=0.1)
    assert param.dtype == torch.bfloat16 and state_sum.dtype == torch.float32
    assert_close64(param, theta, rtol=2 ** -7, atol=1e-6)
    assert_close64(state_sum, state["sum"], rtol=1e-6, atol=1e-7)


# ------------------------------------------------------------------ optimizer, portable path


@pytest.mark.parametrize("path", ["numba", "portable"])
def test_optimizer_paths_equal_dense_reference(path):
    lr, wd = 0.2, 0.1
    gen = torch.Generator().manual_seed(35)
    p0 = torch.randn(30, 4, generator=gen)
    grads = [coo(torch.randint(0, 12 + k, (20,), generator=gen),
                 torch.randn(20, 4, generator=gen), (30, 4)) for k in range(6)]
    options = dict(lr=lr, lr_decay=0.1, weight_decay=wd, sparse_weight_decay="lazy",
                   accumulator_decay=0.9, eps_placement="inside", eps=1e-6)
    p = p0.clone().requires_grad_(True)
    opt = Adagrad([p], **options)
    calls = []
    real = portable.sparse_adagrad_

    def spy(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    with mock.patch.object(portable, "sparse_adagrad_", spy):
        if path == "portable":
            with portable_path():
                run_opt(opt, p, grads)
        else:
            run_opt(opt, p, grads)
    assert bool(calls) == (path == "portable")
    opt.flush()
    dense = DenseRef(p0, lr=lr, lr_decay=0.1, weight_decay=wd, decoupled_weight_decay=True,
                     accumulator_decay=0.9, eps_placement="inside", eps=1e-6)
    for g in grads:
        dense.step(g)
    assert_close64(p, dense.theta, **tol_for(torch.float32))
    assert_close64(opt.state[p]["sum"], dense.sum, **tol_for(torch.float32))


# ------------------------------------------------------------------ property test


@st.composite
def sparse_problems(draw):
    rows = draw(st.integers(1, 40))
    width = draw(st.integers(0, 6))  # 0: a 1-D parameter
    steps = draw(st.integers(1, 4))
    mode = draw(st.sampled_from([None, "lazy", "touched"]))
    options = dict(
        lr=draw(st.sampled_from([0.01, 0.1, 0.5])),
        lr_decay=draw(st.sampled_from([0.0, 0.3])),
        maximize=draw(st.booleans()),
        eps_placement=draw(st.sampled_from(["outside", "inside"])),
        eps=draw(st.sampled_from([1e-10, 1e-3])),
        initial_accumulator_value=draw(st.sampled_from([0.0, 0.1])),
        accumulator_decay=draw(st.sampled_from([1.0, 0.9])),
        sparse_weight_decay=mode,
        weight_decay=0.15 if mode else 0.0,
    )
    # Per step: nnz, the id range (small => heavy duplication), a scheduler's lr factor.
    shape = [(draw(st.integers(0, 50)), draw(st.integers(1, rows)),
              draw(st.sampled_from([1.0, 1.0, 0.5, 2.0]))) for _ in range(steps)]
    return dict(rows=rows, width=width, options=options, shape=shape,
                dtype=draw(st.sampled_from([torch.float32, torch.float64])),
                portable=draw(st.booleans()), seed=draw(st.integers(0, 2 ** 16)))


@settings(max_examples=40, deadline=None)
@given(sparse_problems())
def test_property_optimizer_equals_reference(problem):
    rows, width, dtype = problem["rows"], problem["width"], problem["dtype"]
    options = problem["options"]
    rng = np.random.default_rng(problem["seed"])
    shape = (rows, width) if width else (rows,)
    p0 = torch.from_numpy(rng.normal(size=shape)).to(dtype)
    grads, lrs = [], []
    for nnz, id_range, lr_factor in problem["shape"]:
        idx = torch.from_numpy(rng.integers(0, id_range, size=nnz))
        # Multiples of 1/64: sums of duplicates are exact in float32 too, so the float32
        # run and the float64 reference see the same g (no sign flips of tiny sums).
        vals = np.round(rng.normal(size=(nnz,) + shape[1:]) * 64) / 64
        grads.append(coo(idx, torch.from_numpy(vals).to(dtype), shape))
        lrs.append(options["lr"] * lr_factor)

    p = p0.clone().requires_grad_(True)
    opt = Adagrad([p], **options)

    def run():
        for g, lr in zip(grads, lrs):
            opt.param_groups[0]["lr"] = lr  # as an LR scheduler does
            run_opt(opt, p, [g])

    if problem["portable"]:
        with portable_path():
            run()
    else:
        run()
    opt.flush()

    hp = {k: v for k, v in options.items() if k not in ("initial_accumulator_value", "lr")}
    ref = SparseRef(p0, options["initial_accumulator_value"], **hp)
    for g, lr in zip(grads, lrs):
        ref.step(g, lr=lr)
    ref.flush()
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-12)
    assert_close64(p, ref.theta, **tol)
    assert_close64(opt.state[p]["sum"], ref.sum, **tol)
    assert float(opt.state[p]["step"]) == len(grads)
    if options["sparse_weight_decay"] != "touched":  # dense-equivalent modes
        dense_hp = dict(hp, decoupled_weight_decay=True)
        dense_hp.pop("sparse_weight_decay")
        dense = DenseRef(p0, options["initial_accumulator_value"], **dense_hp)
        for g, lr in zip(grads, lrs):
            dense.step(g, lr=lr)
        assert_close64(p, dense.theta, **tol)
