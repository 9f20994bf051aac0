"""`adagrad.AdagradDA` (:ref:`algo-dual-averaging`) against the float64 rule and closed forms.

Every path is held to `adagrad.reference.adagrad_da` (dense) and `adagrad_da_sparse`
(sparse: touched rows recomputed at T, untouched rows keep θ): each step from the sums the
optimizer holds before it, and for float32/float64 the whole run against an independent
float64 run. θ is a closed form of (z, G, T), so with ``sparse_catch_up=True`` a sparse or
fused run equals the dense run on every row, bit for bit on one kernel.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from regularized_support import (
    EXPECTED_SPARSE,
    HALF,
    N_EXAMPLES,
    N_PARALLEL,
    N_SLOW,
    PARALLEL,
    SPARSE_PATHS,
    UNIT,
    K,
    KernelSpy,
    assert_bit_identical,
    assert_within,
    coo,
    cpu_kernels_off,
    densify,
    dyadic,
    examples,
    feed,
    resumed,
    run_examples,
    sparse_case,
    sparse_grads,
    start,
    subnormal,
    sum_dtype_of,
    to64,
)

import adagrad
import adagrad.nn
from adagrad import reference
from adagrad.kernels.dual_averaging import cpu as dual_averaging_cpu
from adagrad.kernels.dual_averaging import torch_ops as portable_dual_averaging


def _hp(kw: dict) -> dict:
    """The reference's keywords for ``AdagradDA(**kw)``."""
    return dict(lr=kw.get("lr", 1e-2), l1=kw.get("l1", 0.0), l2=kw.get("l2", 0.0),
                maximize=kw.get("maximize", False))


@st.composite
def _options(draw) -> dict:
    return dict(lr=draw(st.sampled_from([0.01, 0.1, 0.5])),
                l1=draw(st.sampled_from([0.0, 0.01, 0.5])),
                l2=draw(st.sampled_from([0.0, 0.01, 0.5])),
                initial_accumulator_value=draw(st.sampled_from([0.1, 0.5])),
                maximize=draw(st.booleans()))


def _parameter(value: torch.Tensor, differentiable: bool) -> torch.Tensor:
    """A parameter holding ``value`` (a non-leaf in differentiable mode, as torch.optim's
    differentiable steps need)."""
    leaf = value.clone().requires_grad_()
    return leaf.clone() if differentiable else leaf


def _check_step(theta, sums, expected, hp, T, param_dtype, sum_dtype, what):
    """One step against the exact float64 step from the same sums: z and G within a few
    roundings, θ within one rounding to its dtype plus the error the rounded sums and the
    arithmetic make (|z| and l1·T may nearly cancel: the bound is on lr·(|z| + l1·T)/den)."""
    theta_star, star = expected
    u_p, u_s = UNIT[param_dtype], UNIT[sum_dtype]
    for key in ("grad_sum", "sum"):
        assert_within(sums[key], star[key], K * u_s * (np.abs(star[key]) + 1)
                      + subnormal(sum_dtype), f"{what} {key}")
    den = hp["l2"] * T * hp["lr"] + np.sqrt(star["sum"])
    scale = hp["lr"] * (np.abs(star["grad_sum"]) + hp["l1"] * T + 1) / den
    assert_within(theta, theta_star, u_p * np.abs(theta_star) + K * u_s * scale
                  + subnormal(param_dtype), f"{what} θ")


def _trajectory_tol(*dtypes: torch.dtype) -> dict:
    if all(dtype == torch.float64 for dtype in dtypes):
        return {"rtol": 1e-10, "atol": 1e-12}
    return {"rtol": 2e-5, "atol": 2e-6}


# ================================================================== closed forms


@pytest.mark.parametrize("differentiable", [False, True], ids=["numba", "torch-ops"])
def test_constant_gradient_closed_form(differentiable):
    """l1 = l2 = 0, constant g: z = T·g, G = G₀ + T·g², θ_T = -lr·T·g / sqrt(G₀ + T·g²),
    whatever θ started at."""
    g = torch.tensor([0.5, -2.0, 0.25], dtype=torch.float64)
    param = _parameter(torch.tensor([3.0, 1.0, -1.0], dtype=torch.float64), differentiable)
    opt = adagrad.AdagradDA([param], lr=0.3, differentiable=differentiable)
    for T in range(1, 10):
        param.grad = g.clone()
        opt.step()
        expected = -0.3 * T * g / torch.sqrt(0.1 + T * g ** 2)
        torch.testing.assert_close(param.detach(), expected, rtol=1e-15, atol=0)


@pytest.mark.parametrize("differentiable", [False, True], ids=["numba", "torch-ops"])
def test_l1_gives_exact_zeros_while_the_mean_gradient_is_below_it(differentiable):
    """|z| ≤ l1·T ⇔ |mean gradient| ≤ l1: θ is exactly 0 there, whatever T and G; with
    l2 the rest follows the closed form -sign(z)·lr·(|z| - l1·T)/(l2·T·lr + sqrt(G))."""
    param = _parameter(torch.ones(3, dtype=torch.float64), differentiable)
    lr, l1, l2 = 0.2, 0.5, 0.1
    opt = adagrad.AdagradDA([param], lr=lr, l1=l1, l2=l2, differentiable=differentiable)
    g = torch.tensor([0.5, -0.25, 0.75], dtype=torch.float64)
    for T in range(1, 15):
        param.grad = g.clone()
        opt.step()
        assert param[0] == 0 and param[1] == 0
        z, G = T * 0.75, 0.1 + T * 0.75 ** 2
        expected = -lr * (z - l1 * T) / (l2 * T * lr + math.sqrt(G))
        assert math.isclose(param[2].item(), expected, rel_tol=1e-15)


def test_steps_count_per_tensor():
    """T is each tensor's own step count: a parameter without a gradient in a step does
    not advance (TensorFlow's global step is the same when every step steps every
    parameter)."""
    a = torch.zeros(2, requires_grad=True)
    b = torch.zeros(2, requires_grad=True)
    opt = adagrad.AdagradDA([a, b], lr=0.5, l1=0.1, l2=0.2)
    g = torch.tensor([0.4, -0.3])
    for step in range(6):
        a.grad = g.clone()
        b.grad = g.clone() if step % 2 == 0 else None
        opt.step()
    assert opt.state[a]["step"].item() == 6 and opt.state[b]["step"].item() == 3
    for param, T in ((a, 6), (b, 3)):
        z, G = T * g.double().numpy(), 0.1 + T * g.double().numpy() ** 2
        expected = reference.adagrad_da_weights(z, G, T, lr=0.5, l1=0.1, l2=0.2)
        np.testing.assert_allclose(to64(param), expected, rtol=1e-6)


# ================================================================== dense paths


DENSE_PATHS = ["numba-serial", "numba-parallel", "torch-ops"]
NUMBA_DTYPES = [torch.float32, torch.float64, torch.bfloat16]
SMALL_SHAPES = [(0,), (3, 0), (), (1,), (7,), (4, 5), (2, 3, 4), (PARALLEL - 1,)]
LARGE_SHAPES = [(PARALLEL,), (256, 257)]
EXPECTED_DENSE = {"numba-serial": {"dense:numba", "numba-serial"},
                  "numba-parallel": {"dense:numba", "numba-parallel"},
                  "torch-ops": {"dense:torch-ops"}}


@st.composite
def _dense_case(draw, path: str, slow: bool = False) -> dict:
    """A configuration for ``path``; the torch-ops path draws ≥ 65,536 elements only in the
    slow pass (it has no serial/parallel split)."""
    kw = draw(_options())
    kw["differentiable"] = False
    if path == "torch-ops":
        variant = draw(st.sampled_from(["differentiable", "float16", "half sum",
                                        "bf16 with float64 sum"]))
        dtype, state_dtype = {
            "differentiable": (draw(st.sampled_from(NUMBA_DTYPES)), None),
            "float16": (torch.float16, draw(st.sampled_from([None, torch.float16]))),
            "half sum": (draw(st.sampled_from([torch.float32, torch.float64])),
                         draw(st.sampled_from(HALF))),
            "bf16 with float64 sum": (torch.bfloat16, torch.float64)}[variant]
        kw["differentiable"] = variant == "differentiable"
        shape = draw(st.sampled_from(SMALL_SHAPES + LARGE_SHAPES if slow else SMALL_SHAPES[:-1]))
    else:
        dtype = draw(st.sampled_from(NUMBA_DTYPES))
        state_dtype = None if dtype == torch.bfloat16 else draw(
            st.sampled_from([None, torch.float32, torch.float64]))
        shape = draw(st.sampled_from(LARGE_SHAPES if path == "numba-parallel" else SMALL_SHAPES))
    kw["state_dtype"] = state_dtype
    return dict(dtype=dtype, shape=shape, kw=kw, steps=draw(st.integers(1, 4)),
                seed=draw(st.integers(0, 2 ** 16)), zero_frac=draw(st.sampled_from([0.0, 0.3])))


@pytest.mark.parametrize("path", ["numba-serial", "torch-ops"])
@settings(max_examples=N_EXAMPLES)
@given(data=st.data())
def test_dense_paths_follow_the_reference(path, data):
    """Every dense path, dtype and shape class (empty, 0-d, small, one short of 65,536,
    ≥ 65,536) and every option, step by step and (float32/float64) over the whole run."""
    _run_dense(data.draw(_dense_case(path), label="case"), path)


@settings(max_examples=N_PARALLEL)
@given(data=st.data())
def test_dense_parallel_kernel_follows_the_reference(data):
    """The parallel numba kernel (≥ 65,536 elements), as above."""
    _run_dense(data.draw(_dense_case("numba-parallel"), label="case"), "numba-parallel")


@pytest.mark.slow
@pytest.mark.parametrize("path", DENSE_PATHS)
@settings(max_examples=N_SLOW)
@given(data=st.data())
def test_dense_paths_follow_the_reference_slow(path, data):
    _run_dense(data.draw(_dense_case(path, slow=True), label="case"), path)


def _run_dense(case: dict, path: str) -> None:
    dtype, kw, hp = case["dtype"], case["kw"], _hp(case["kw"])
    sum_dtype = sum_dtype_of(dtype, kw["state_dtype"])
    gen = torch.Generator().manual_seed(case["seed"])
    param = _parameter(start(case["shape"], gen).to(dtype), kw["differentiable"])
    opt = adagrad.AdagradDA([param], **kw)
    G0 = float(torch.tensor(kw["initial_accumulator_value"], dtype=sum_dtype))
    traj = (to64(param), reference.adagrad_da_init(to64(param), G0))
    spy = KernelSpy([(dual_averaging_cpu, "dense_dual_averaging_", "dense:numba"),
                     (portable_dual_averaging, "dense_dual_averaging_", "dense:torch-ops")],
                    [dual_averaging_cpu._KERNELS])
    with spy:
        for T in range(1, case["steps"] + 1):
            g = dyadic(case["shape"], gen, case["zero_frac"]).to(dtype)
            state = opt.state.get(param)
            before = ({"step": T - 1, "sum": to64(state["sum"]),
                       "grad_sum": to64(state["grad_sum"])} if state
                      else reference.adagrad_da_init(to64(param), G0))
            param.grad = g.clone()
            opt.step()
            assert spy.take() == EXPECTED_DENSE[path]
            state = opt.state[param]
            assert state["sum"].dtype == state["grad_sum"].dtype == sum_dtype
            assert float(state["step"]) == T
            expected = reference.adagrad_da(to64(param), to64(g), before, **hp)
            _check_step(to64(param), {k: to64(state[k]) for k in ("sum", "grad_sum")}, expected,
                        hp, T, dtype, sum_dtype, f"step {T}")
            traj = reference.adagrad_da(traj[0], to64(g), traj[1], **hp)
            if dtype not in HALF and sum_dtype not in HALF:
                np.testing.assert_allclose(to64(param), traj[0],
                                           **_trajectory_tol(dtype, sum_dtype))
    if kw["differentiable"]:
        assert param.grad_fn is not None


@pytest.mark.parametrize("differentiable", [False, True], ids=["numba", "torch-ops"])
def test_complex_parameters_are_two_real_coordinates(differentiable):
    """As torch.optim: a complex θ is stepped as its real view, G₀ = complex(v, v)."""
    gen = torch.Generator().manual_seed(6)
    real = start((4, 3, 2), gen).float()
    param = _parameter(torch.view_as_complex(real), differentiable)
    opt = adagrad.AdagradDA([param], lr=0.2, l1=0.05, l2=0.1, differentiable=differentiable)
    theta, state = to64(real), reference.adagrad_da_init(to64(real), 0.1)
    for _ in range(4):
        g = dyadic((4, 3, 2), gen, 0.2).float()
        param.grad = torch.view_as_complex(g.clone())
        opt.step()
        theta, state = reference.adagrad_da(theta, to64(g), state, lr=0.2, l1=0.05, l2=0.1)
    assert opt.state[param]["sum"].dtype == torch.complex64
    np.testing.assert_allclose(to64(torch.view_as_real(param)), theta, rtol=1e-6, atol=1e-7)


def test_reference_sparse_rule_is_the_dense_rule_on_touched_rows():
    """The float64 rules agree with each other: a sparse step is the dense step on the
    touched rows (θ, z, G); untouched rows keep everything."""
    rng = np.random.default_rng(0)
    theta, grads = rng.normal(size=(6, 2)), rng.normal(size=(3, 2))
    indices = np.array([4, 1, 4])
    state = reference.adagrad_da_init(theta)
    sparse, sparse_state = reference.adagrad_da_sparse(theta, indices, grads, state, lr=0.3,
                                                       l1=0.1, l2=0.2)
    dense_grad = np.zeros((6, 2))
    np.add.at(dense_grad, indices, grads)
    dense, dense_state = reference.adagrad_da(theta, dense_grad, state, lr=0.3, l1=0.1, l2=0.2)
    np.testing.assert_array_equal(sparse[[1, 4]], dense[[1, 4]])
    np.testing.assert_array_equal(sparse[[0, 2, 3, 5]], theta[[0, 2, 3, 5]])
    for key in ("sum", "grad_sum"):
        np.testing.assert_array_equal(sparse_state[key], dense_state[key])


# ================================================================== sparse paths


def _sparse_spy() -> KernelSpy:
    return KernelSpy([(dual_averaging_cpu, "sparse_dual_averaging_", "sparse:numba"),
                      (portable_dual_averaging, "sparse_dual_averaging_", "sparse:torch-ops")],
                     [dual_averaging_cpu._SPARSE_SERIAL, dual_averaging_cpu._SPARSE_PARALLEL])


@st.composite
def _sparse_case(draw, path: str, catch_up: bool, float32_only: bool = False) -> dict:
    case = draw(sparse_case(path, {**draw(_options()), "sparse_catch_up": catch_up},
                            float32_only))
    case["lr_change"] = catch_up and draw(st.booleans())
    return case


@pytest.mark.parametrize("path", SPARSE_PATHS)
def test_sparse_steps_touched_rows_only(path):
    """Without catch-up, every sparse path: each step equals the reference's sparse step
    (touched rows' sums grow and their θ is recomputed at T), untouched rows keep θ, z
    and G bit for bit; over the run, float32/float64 against an independent float64 run."""
    run_examples(_sparse_case(path, catch_up=False, float32_only=True), _run_sparse, examples(path))


@pytest.mark.slow
@pytest.mark.parametrize("path", SPARSE_PATHS)
def test_sparse_steps_touched_rows_only_slow(path):
    run_examples(_sparse_case(path, catch_up=False), _run_sparse, N_SLOW)


def _run_sparse(case: dict) -> None:
    dtype, kw, hp = case["dtype"], case["kw"], _hp(case["kw"])
    sum_dtype = sum_dtype_of(dtype, kw["state_dtype"])
    gen = torch.Generator().manual_seed(case["seed"])
    param = start((case["rows"], case["width"]), gen).to(dtype).requires_grad_()
    opt = adagrad.AdagradDA([param], **kw)
    G0 = float(torch.tensor(kw["initial_accumulator_value"], dtype=sum_dtype))
    traj = (to64(param), reference.adagrad_da_init(to64(param), G0))
    with cpu_kernels_off(case["path"] == "torch-ops"), _sparse_spy() as spy:
        for T, (indices, values) in enumerate(sparse_grads(case, gen), start=1):
            theta_prev = to64(param)
            state = opt.state.get(param)
            before = ({"step": T - 1, "sum": to64(state["sum"]),
                       "grad_sum": to64(state["grad_sum"])} if state
                      else reference.adagrad_da_init(theta_prev, G0))
            feed(opt, param, indices, values, case["feed"])
            assert spy.take() == EXPECTED_SPARSE[case["path"]]
            state = opt.state[param]
            sums = {k: to64(state[k]) for k in ("sum", "grad_sum")}
            expected = reference.adagrad_da_sparse(theta_prev, indices, to64(values), before,
                                                   **hp)
            _check_step(to64(param), sums, expected, hp, T, dtype, sum_dtype, f"step {T}")
            untouched = np.setdiff1d(np.arange(case["rows"]), indices.numpy())
            assert np.array_equal(to64(param)[untouched], theta_prev[untouched])
            for key in ("sum", "grad_sum"):
                assert np.array_equal(sums[key][untouched], before[key][untouched])
            traj = reference.adagrad_da_sparse(traj[0], indices, to64(values), traj[1], **hp)
            if dtype not in HALF and sum_dtype not in HALF:
                np.testing.assert_allclose(to64(param), traj[0],
                                           **_trajectory_tol(dtype, sum_dtype))


CATCH_UP_PATHS = ["numba-serial", "numba-parallel", "torch-ops"]


@pytest.mark.parametrize("path", CATCH_UP_PATHS)
def test_sparse_catch_up_equals_dense(path):
    """With ``sparse_catch_up=True``: touched rows, rows brought up to date by
    `catch_up_rows`, and after `flush` every row equal the dense rule fed the gradient
    with zero rows; also when lr changes between steps (the catch-up replays the last
    step's lr, not the group's new one)."""
    run_examples(_sparse_case(path, catch_up=True, float32_only=True), _run_sparse_catch_up,
                 examples(path))


@pytest.mark.slow
@pytest.mark.parametrize("path", CATCH_UP_PATHS)
def test_sparse_catch_up_equals_dense_slow(path):
    run_examples(_sparse_case(path, catch_up=True), _run_sparse_catch_up, N_SLOW)


def _run_sparse_catch_up(case: dict) -> None:
    dtype, kw, hp = case["dtype"], case["kw"], _hp(case["kw"])
    tol = _trajectory_tol(dtype, sum_dtype_of(dtype, kw["state_dtype"]))
    if dtype == torch.bfloat16:  # θ is recomputed from float32 sums: one rounding each
        tol = {"rtol": 2 ** -8, "atol": 1e-6}
    gen = torch.Generator().manual_seed(case["seed"])
    param = start((case["rows"], case["width"]), gen).to(dtype).requires_grad_()
    opt = adagrad.AdagradDA([param], **kw)
    dense = (to64(param), reference.adagrad_da_init(to64(param), kw["initial_accumulator_value"]))
    with cpu_kernels_off(case["path"] == "torch-ops"), _sparse_spy() as spy:
        for indices, values in sparse_grads(case, gen):
            feed(opt, param, indices, values, case["feed"])
            assert spy.take() == EXPECTED_SPARSE[case["path"]]
            dense = reference.adagrad_da(dense[0], densify(indices, values, param.shape),
                                         dense[1], **hp)
            if case["lr_change"]:  # a scheduler's change, read by the next step only
                opt.param_groups[0]["lr"] = hp["lr"] = hp["lr"] * 0.5
            touched = np.unique(indices.numpy())
            np.testing.assert_allclose(to64(param)[touched], dense[0][touched], **tol)
            looked_up = torch.randint(0, case["rows"], (3,), generator=gen)
            opt.catch_up_rows(param, looked_up)
            rows = looked_up.numpy()
            np.testing.assert_allclose(to64(param)[rows], dense[0][rows], **tol)
        opt.flush()
    np.testing.assert_allclose(to64(param), dense[0], **tol)
    np.testing.assert_allclose(to64(opt.state[param]["grad_sum"]), dense[1]["grad_sum"], **tol)


def test_sparse_with_catch_up_is_bit_identical_to_dense():
    """On exact (dyadic) gradients the sums agree bit for bit, and the sparse kernel and the
    catch-up compute θ with the dense kernel's arithmetic (on the CPU; torch's float32
    sqrt is not correctly rounded, numba's is): touched rows, looked-up rows and the
    flushed table are the dense table's, bit for bit."""
    gen = torch.Generator().manual_seed(4)
    theta = start((40, 3), gen).float()
    sparse = theta.clone().requires_grad_()
    dense = theta.clone().requires_grad_()
    kw = dict(lr=0.3, l1=0.05, l2=0.1)
    sparse_opt = adagrad.AdagradDA([sparse], **kw, sparse_catch_up=True)
    dense_opt = adagrad.AdagradDA([dense], **kw)
    for _ in range(7):
        indices = torch.randint(0, 12, (9,), generator=gen)
        values = dyadic((9, 3), gen).float()
        sparse.grad = coo(indices, values, (40, 3))
        dense.grad = torch.from_numpy(densify(indices, values, (40, 3))).float()
        sparse_opt.step()
        dense_opt.step()
        touched = indices.unique()
        assert_bit_identical(sparse[touched], dense[touched], "touched rows")
        sparse_opt.catch_up_rows(sparse, torch.arange(0, 40, 7))
        assert_bit_identical(sparse[::7], dense[::7], "looked-up rows")
    sparse_opt.flush()
    assert_bit_identical(sparse, dense, "table")
    assert_bit_identical(sparse_opt.state[sparse]["grad_sum"], dense_opt.state[dense]["grad_sum"])


# ================================================================== fused layers


def _train(kind, weight, fused, sparse, catch_up, steps=6):
    """A few steps of a loss whose gradient depends on the rows read, lr halved midway;
    returns the table, flushed."""
    gen = torch.Generator().manual_seed(11)
    if kind == "embedding":
        layer = (adagrad.nn.Embedding if fused else torch.nn.Embedding)(20, 4, sparse=sparse)
    else:
        cls = adagrad.nn.EmbeddingBag if fused else torch.nn.EmbeddingBag
        layer = cls(20, 4, mode=kind.split("-")[1], sparse=sparse)
    with torch.no_grad():
        layer.weight.copy_(weight)
    opt = adagrad.AdagradDA(layer.parameters(), lr=0.3, l1=0.02, l2=0.1,
                            sparse_catch_up=catch_up)
    if fused:
        layer.update_in_backward(opt)
    for step in range(steps):
        if step == 3:
            opt.param_groups[0]["lr"] = 0.15
        ids = torch.randint(0, 8, (12,), generator=gen)
        if kind == "embedding":
            out = layer(ids.view(4, 3))
        else:
            weights = torch.rand(12, generator=gen) if kind == "bag-sum" else None
            out = layer(ids, torch.tensor([0, 3, 5, 9]), per_sample_weights=weights)
        ((out - torch.randn(out.shape, generator=gen)) ** 2).sum().backward()
        opt.step()
        opt.zero_grad()
    opt.flush()
    return layer.weight.detach()


LAYER_KINDS = ["embedding", "bag-sum", "bag-mean"]


@pytest.mark.parametrize("kind", LAYER_KINDS)
def test_fused_layers_equal_torch_sparse_layer_and_step(kind):
    """`adagrad.nn` layers with update_in_backward(AdagradDA) give what torch's sparse
    layer and ``optimizer.step()`` give; rows never touched keep their initial θ."""
    weight = torch.randn(20, 4)
    fused = _train(kind, weight, fused=True, sparse=False, catch_up=False)
    stepped = _train(kind, weight, fused=False, sparse=True, catch_up=False)
    torch.testing.assert_close(fused, stepped, rtol=1e-6, atol=1e-7)
    assert torch.equal(fused[8:], weight[8:])


@pytest.mark.parametrize("kind", LAYER_KINDS)
def test_fused_layers_with_catch_up_equal_dense(kind):
    """With ``sparse_catch_up=True`` each looked-up row is recomputed before the forward
    reads it: the run equals torch's dense layer stepped densely, every row (dense DA
    sets never-touched rows to θ = 0 at the first step), which the plain run does not."""
    weight = torch.randn(20, 4)
    fused = _train(kind, weight, fused=True, sparse=False, catch_up=True)
    dense = _train(kind, weight, fused=False, sparse=False, catch_up=False)
    plain = _train(kind, weight, fused=True, sparse=False, catch_up=False)
    torch.testing.assert_close(fused, dense, rtol=1e-6, atol=1e-7)
    assert (plain - dense).abs().max() > 1e-3
    assert (fused[8:] == 0).all()


def test_lookup_of_a_row_outside_the_table_raises_before_any_write():
    param = torch.randn(5, 2, requires_grad=True)
    opt = adagrad.AdagradDA([param], l1=0.1, sparse_catch_up=True)
    param.grad = coo(torch.tensor([1]), torch.ones(1, 2), (5, 2))
    opt.step()
    before = param.detach().clone()
    with pytest.raises(IndexError, match="out of range"):
        opt.catch_up_rows(param, torch.tensor([0, 2, 5]))
    assert torch.equal(param.detach(), before)


# ================================================================== checkpoints


def _mixed_run(model, opt, steps, gen):
    for step in steps:
        if step == 4:
            opt.param_groups[0]["lr"] = 0.1
        ids = torch.randint(0, 10, (6,), generator=gen)
        (model[1](model[0](ids)) ** 2).sum().backward()
        opt.step()
        opt.zero_grad()


@pytest.mark.parametrize("catch_up", [False, True])
def test_resume_mid_run_is_bit_identical(catch_up):
    """A run resumed from a checkpoint taken at step 5 (through torch.save/load, into a
    new model and optimizer) ends bit-identical to the run that never stopped."""
    def fresh():
        torch.manual_seed(5)
        model = torch.nn.Sequential(adagrad.nn.Embedding(30, 4), torch.nn.Linear(4, 2))
        opt = adagrad.AdagradDA(model.parameters(), lr=0.3, l1=0.01, l2=0.05,
                                sparse_catch_up=catch_up)
        model[0].update_in_backward(opt)
        return model, opt
    model, opt = fresh()
    _mixed_run(model, opt, range(8), torch.Generator().manual_seed(2))
    gen = torch.Generator().manual_seed(2)
    first, first_opt = fresh()
    _mixed_run(first, first_opt, range(5), gen)
    saved = resumed({"model": first.state_dict(), "opt": first_opt.state_dict()})
    assert ("last_lr" in saved["opt"]["state"][0]) == catch_up
    assert (saved["opt"]["state"][0]["grad_sum"] < 0).any()  # a signed accumulator loads
    second, second_opt = fresh()
    second.load_state_dict(saved["model"])
    second_opt.load_state_dict(saved["opt"])
    _mixed_run(second, second_opt, range(5, 8), gen)
    for a, b in zip(model.parameters(), second.parameters()):
        assert_bit_identical(a, b, "parameter")
    for a, b in zip(opt.state.values(), second_opt.state.values()):
        assert a.keys() == b.keys()
        for key in a:
            assert_bit_identical(a[key], b[key], key)


def test_state_dict_round_trip_and_dtype_policy():
    param = torch.randn(4, 3).to(torch.float16).requires_grad_()
    opt = adagrad.AdagradDA([param], l1=0.1)
    assert not opt.state
    param.grad = torch.randn(4, 3).to(torch.float16)
    opt.step()
    assert opt.state[param]["grad_sum"].dtype == opt.state[param]["sum"].dtype == torch.float32
    other = adagrad.AdagradDA([param], l1=0.1)
    other.load_state_dict(resumed(opt.state_dict()))
    for key in ("sum", "grad_sum", "step"):
        assert_bit_identical(other.state[param][key], opt.state[param][key], key)


@pytest.mark.parametrize("direction", ["adagrad into dual averaging",
                                       "dual averaging into adagrad"])
def test_checkpoints_of_other_members_are_refused(direction):
    source, target = direction.split(" into ")
    classes = {"adagrad": adagrad.Adagrad, "dual averaging": adagrad.AdagradDA}
    param = torch.randn(3, 2, requires_grad=True)
    opt = classes[source]([param])
    param.grad = torch.randn(3, 2)
    opt.step()
    other = classes[target]([param])
    with pytest.raises(ValueError, match="not a checkpoint of"):
        other.load_state_dict(opt.state_dict())
    assert not other.state


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.pop("last_l1"), "but not"),
    (lambda s: s.__setitem__("last_lr", torch.tensor(math.inf, dtype=torch.float64)),
     "last_lr"),
    (lambda s: s.__setitem__("sum", -s["sum"]), "negative"),
    (lambda s: s.pop("grad_sum"), "lacks"),
])
def test_broken_state_is_refused(edit, message):
    param = torch.randn(4, 3, requires_grad=True)
    opt = adagrad.AdagradDA([param], l1=0.1, sparse_catch_up=True)
    param.grad = torch.randn(4, 3)
    opt.step()
    saved = copy.deepcopy(opt.state_dict())
    edit(saved["state"][0])
    with pytest.raises(ValueError, match=message):
        adagrad.AdagradDA([param], l1=0.1).load_state_dict(saved)


# ================================================================== errors


@pytest.mark.parametrize("kwargs, argument", [
    (dict(lr=-0.1), "lr"), (dict(l1=-1e-3), "l1"), (dict(l2=-1.0), "l2"),
    (dict(l2=math.nan), "l2"),
    (dict(initial_accumulator_value=0.0), "initial_accumulator_value"),
    (dict(initial_accumulator_value=-1.0), "initial_accumulator_value"),
    (dict(state_dtype=torch.int64), "state_dtype"),
    (dict(sparse_catch_up=None), "sparse_catch_up"),
])
def test_invalid_hyperparameters_raise(kwargs, argument):
    param = torch.zeros(2, requires_grad=True)
    with pytest.raises(ValueError, match=f"`{argument}`"):
        adagrad.AdagradDA([param], **kwargs)
    opt = adagrad.AdagradDA([param])
    with pytest.raises(ValueError, match=f"`{argument}`"):
        opt.add_param_group({"params": [torch.zeros(2, requires_grad=True)], **kwargs})


def test_a_checkpoint_with_an_invalid_hyperparameter_is_refused():
    param = torch.zeros(2, requires_grad=True)
    saved = adagrad.AdagradDA([param], l1=0.1).state_dict()
    saved["param_groups"][0]["l1"] = -0.1
    opt = adagrad.AdagradDA([param], l1=0.1)
    with pytest.raises(ValueError, match="group 0.*`l1`"):
        opt.load_state_dict(saved)
    assert opt.param_groups[0]["l1"] == 0.1


def test_exported():
    assert adagrad.AdagradDA is adagrad.optim.AdagradDA
    assert "AdagradDA" in adagrad.__all__ and "AdagradDA" in adagrad.optim.__all__
