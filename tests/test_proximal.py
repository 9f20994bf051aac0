"""`adagrad.ProximalAdagrad` (:ref:`algo-proximal`) against the float64 rule and closed forms.

Every path is held to `adagrad.reference.proximal_adagrad` (dense) and
`proximal_adagrad_sparse` (sparse, TensorFlow's semantics: untouched rows are not shrunk):
each step from the state the optimizer holds before it, within one rounding of θ to its
dtype plus a few roundings of the step's arithmetic in the accumulator's dtype (see
tests/test_properties.py for why), and for float32/float64 the whole run against an
independent float64 run. With ``sparse_catch_up=True`` the sparse and fused runs are held
to the *dense* rule fed the gradient with zero rows, on every row.
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
from adagrad.kernels import ProximalRule
from adagrad.kernels.proximal import torch_ops as portable_proximal
from adagrad.kernels.proximal import cpu as proximal_cpu


def _hp(kw: dict) -> dict:
    """The reference's keywords for ``ProximalAdagrad(**kw)``."""
    return dict(lr=kw.get("lr", 1e-2), l1=kw.get("l1", 0.0), l2=kw.get("l2", 0.0),
                eps=kw.get("eps", 0.0), lr_decay=kw.get("lr_decay", 0.0),
                maximize=kw.get("maximize", False))


@st.composite
def _options(draw, catch_up: bool = False) -> dict:
    kw = dict(lr=draw(st.sampled_from([0.01, 0.1, 0.5])),
              l1=draw(st.sampled_from([0.0, 0.01, 0.3])),
              l2=draw(st.sampled_from([0.0, 0.01, 0.5])),
              eps=draw(st.sampled_from([0.0, 1e-8, 1e-3])),
              initial_accumulator_value=draw(st.sampled_from([0.1, 0.5])),
              lr_decay=0.0 if catch_up else draw(st.sampled_from([0.0, 0.05])),
              maximize=draw(st.booleans()))
    if kw["eps"] > 1e-6 and draw(st.booleans()):
        kw["initial_accumulator_value"] = 0.0  # allowed with ε > 0
    return kw


def _eta(hp: dict, t: int, G: np.ndarray) -> np.ndarray:
    return reference.lr_at(hp["lr"], hp["lr_decay"], t) / (np.sqrt(G) + hp["eps"])


def _check_step(theta, G, theta_star, G_star, theta_prev, g, hp, t, param_dtype, sum_dtype,
                what):
    """One step against the exact float64 step from the same start."""
    u_p, u_s = UNIT[param_dtype], UNIT[sum_dtype]
    scale = np.abs(theta_prev) + _eta(hp, t, G_star) * (np.abs(g) + hp["l1"])
    assert_within(theta, theta_star, u_p * np.abs(theta_star) + K * u_s * scale
                  + subnormal(param_dtype), f"{what} θ")
    assert_within(G, G_star, K * u_s * np.abs(G_star) + subnormal(sum_dtype), f"{what} sum")


def _parameter(value: torch.Tensor, differentiable: bool) -> torch.Tensor:
    """A parameter holding ``value``; in differentiable mode a non-leaf (torch.optim's
    differentiable steps write into one, as in torch's own tests)."""
    leaf = value.clone().requires_grad_()
    return leaf.clone() if differentiable else leaf


def _trajectory_tol(*dtypes: torch.dtype) -> dict:
    """Whole-run tolerances against the float64 reference for these parameter and
    accumulator dtypes (float32 or float64)."""
    if all(dtype == torch.float64 for dtype in dtypes):
        return {"rtol": 1e-10, "atol": 1e-12}
    return {"rtol": 2e-5, "atol": 2e-6}


# ================================================================== closed forms


@pytest.mark.parametrize("differentiable", [False, True], ids=["numba", "torch-ops"])
def test_l1_gives_exact_zeros_on_the_closed_form(differentiable):
    """1-D, g = 0: η = lr/sqrt(G₀) = 0.5 is fixed and each step subtracts η·l1 = 1/8 from
    |θ| (dyadic, so exact): θ_k = sign(θ₀)·max(|θ₀| - k/8, 0), reaching exactly 0 at
    k = 8, 4, 3 and staying there."""
    theta0 = torch.tensor([1.0, -0.5, 0.375])
    param = _parameter(theta0, differentiable)
    opt = adagrad.ProximalAdagrad([param], lr=0.25, l1=0.25, initial_accumulator_value=0.25,
                                  differentiable=differentiable)
    for k in range(1, 11):
        param.grad = torch.zeros(3)
        opt.step()
        expected = torch.sign(theta0) * (theta0.abs() - k / 8).clamp_min(0)
        assert torch.equal(param.detach(), expected), k
    assert (param.detach() == 0).all()


@pytest.mark.parametrize("differentiable", [False, True], ids=["numba", "torch-ops"])
def test_l1_keeps_weights_at_zero_while_the_gradient_is_below_it(differentiable):
    """θ₀ = 0 and a constant |g| ≤ l1: v = -η·g has |v| ≤ η·l1, so θ stays exactly 0
    whatever η is; above l1 it moves."""
    param = _parameter(torch.zeros(3), differentiable)
    opt = adagrad.ProximalAdagrad([param], lr=0.5, l1=0.3, differentiable=differentiable)
    for _ in range(20):
        param.grad = torch.tensor([0.3, -0.2, 0.31])
        opt.step()
        assert param[0] == 0 and param[1] == 0 and param[2] < 0


@pytest.mark.parametrize("differentiable", [False, True], ids=["numba", "torch-ops"])
@pytest.mark.parametrize("eps", [0.0, 1e-3])
def test_without_regularization_it_is_adagrad_with_eps_outside(eps, differentiable):
    """l1 = l2 = 0: η·g is Adagrad's step with ε outside the root (:ref:`algo-adagrad`'s rule in
    `reference.adagrad`); with ε = 0 inside and outside coincide, with ε > 0 it is the
    outside rule, not the inside one."""
    gen = torch.Generator().manual_seed(1)
    theta = start((5, 3), gen)
    param = _parameter(theta, differentiable)
    opt = adagrad.ProximalAdagrad([param], lr=0.3, eps=eps, lr_decay=0.1,
                                  differentiable=differentiable)
    refs = {placement: (to64(theta), reference.adagrad_init(to64(theta), 0.1))
            for placement in ("outside", "inside")}
    for _ in range(10):
        g = dyadic((5, 3), gen, 0.2)
        param.grad = g.clone()
        opt.step()
        for placement, (th, st_) in list(refs.items()):
            refs[placement] = reference.adagrad(th, to64(g), st_, lr=0.3, lr_decay=0.1, eps=eps,
                                                eps_placement=placement)
    np.testing.assert_allclose(to64(param), refs["outside"][0], rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(to64(opt.state[param]["sum"]), refs["outside"][1]["sum"],
                               rtol=1e-14)
    inside_gap = np.abs(to64(param) - refs["inside"][0]).max()
    assert inside_gap < 1e-13 if eps == 0 else inside_gap > 1e-6


@pytest.mark.parametrize("l1, l2", [(0.0, 0.3), (0.2, 0.0), (0.2, 0.3), (0.0, 0.0), (5.0, 1e-9)])
@pytest.mark.parametrize("kernel", ["numba", "torch-ops"])
def test_zero_gradient_steps_closed_form_equals_repeated_steps(kernel, l1, l2):
    """The catch-up's closed form of k zero-gradient steps (geometric for l2, linear for
    l1, clipped at 0 once reached) against k steps of the float64 rule, for k from 0 to
    200, on weights that reach 0 early, late or never."""
    theta = np.array([[1.3, -0.7, 1e-3, 0.0, -40.0]])
    G = np.array([[0.1, 2.0, 0.5, 1.0, 0.3]])
    rule = ProximalRule(lr=0.2, l1=l1, l2=l2, eps=1e-3)
    for k in (0, 1, 2, 7, 50, 200):
        expected, state = theta.copy(), {"step": 0, "sum": G.copy()}
        for _ in range(k):
            expected, state = reference.proximal_adagrad(expected, np.zeros_like(theta), state,
                                                         lr=0.2, l1=l1, l2=l2, eps=1e-3)
        table, sums = torch.from_numpy(theta.copy()), torch.from_numpy(G.copy())
        row_step = torch.zeros(1, dtype=torch.float64)
        module = proximal_cpu if kernel == "numba" else portable_proximal
        module.catch_up_rows_(table, sums, torch.tensor([0, 0]), row_step, k, rule)
        np.testing.assert_allclose(table.numpy(), expected, rtol=1e-12, atol=1e-15, err_msg=k)
        assert ((table.numpy() == 0) == (expected == 0)).all(), k
        assert row_step.item() == k


# ================================================================== dense paths


DENSE_PATHS = ["numba-serial", "numba-parallel", "torch-ops"]
NUMBA_DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.complex64]
SMALL_SHAPES = [(0,), (3, 0), (), (1,), (7,), (4, 5), (2, 3, 4), (PARALLEL - 1,)]
LARGE_SHAPES = [(PARALLEL,), (256, 257)]


@st.composite
def _dense_case(draw, path: str, slow: bool = False) -> dict:
    """A configuration for ``path``; the torch-ops path draws ≥ 65,536 elements only in the
    slow pass (it has no serial/parallel split)."""
    kw = draw(_options())
    if path == "torch-ops":
        variant = draw(st.sampled_from(["differentiable", "float16", "half sum",
                                        "bf16 with float64 sum"]))
        dtype, state_dtype = {
            "differentiable": (draw(st.sampled_from([torch.float32, torch.float64,
                                                     torch.bfloat16])), None),
            "float16": (torch.float16, draw(st.sampled_from([None, torch.float16]))),
            "half sum": (draw(st.sampled_from([torch.float32, torch.float64])),
                         draw(st.sampled_from(HALF))),
            "bf16 with float64 sum": (torch.bfloat16, torch.float64)}[variant]
        kw["differentiable"] = variant == "differentiable"
        shape = draw(st.sampled_from(SMALL_SHAPES + LARGE_SHAPES if slow else SMALL_SHAPES[:-1]))
    else:
        kw["differentiable"] = False
        dtype = draw(st.sampled_from(NUMBA_DTYPES))
        state_dtype = None if dtype in (torch.bfloat16, torch.complex64) else draw(
            st.sampled_from([None, torch.float32, torch.float64]))
        shape = draw(st.sampled_from(LARGE_SHAPES if path == "numba-parallel" else SMALL_SHAPES))
        if dtype == torch.complex64 and shape:
            shape = shape[:-1] + (max(shape[-1] // 2, 0),) if path == "numba-serial" else shape
    if state_dtype in HALF:
        kw["initial_accumulator_value"] = 0.5  # a half-precision ε may round to 0
    kw["state_dtype"] = state_dtype
    return dict(path=path, dtype=dtype, shape=shape, kw=kw, steps=draw(st.integers(1, 4)),
                seed=draw(st.integers(0, 2 ** 16)), zero_frac=draw(st.sampled_from([0.0, 0.3])))


def _dense_spy() -> KernelSpy:
    return KernelSpy([(proximal_cpu, "dense_proximal_", "dense:numba"),
                      (portable_proximal, "dense_proximal_", "dense:torch-ops")],
                     [proximal_cpu._KERNELS])


EXPECTED_DENSE = {"numba-serial": {"dense:numba", "numba-serial"},
                  "numba-parallel": {"dense:numba", "numba-parallel"},
                  "torch-ops": {"dense:torch-ops"}}


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
    complex_ = dtype.is_complex
    real = torch.float32 if complex_ else dtype
    sum_dtype = sum_dtype_of(real, kw["state_dtype"])
    gen = torch.Generator().manual_seed(case["seed"])
    real_shape = case["shape"] + ((2,) if complex_ else ())

    def as_param(t):
        t = t.to(real)
        return torch.view_as_complex(t) if complex_ else t

    def real64(t):
        return to64(torch.view_as_real(t) if complex_ else t)

    param = _parameter(as_param(start(real_shape, gen)), kw["differentiable"])
    opt = adagrad.ProximalAdagrad([param], **kw)
    G0 = float(torch.tensor(kw["initial_accumulator_value"], dtype=sum_dtype))
    traj = (real64(param), reference.proximal_adagrad_init(real64(param), G0))
    with _dense_spy() as spy:
        for t in range(1, case["steps"] + 1):
            g = as_param(dyadic(real_shape, gen, case["zero_frac"]))
            theta_prev = real64(param)
            state = opt.state.get(param)
            G_prev = real64(state["sum"]) if state else np.full(theta_prev.shape, G0)
            param.grad = g.clone()
            opt.step()
            assert spy.take() == EXPECTED_DENSE[path]
            state = opt.state[param]
            assert state["sum"].dtype == (dtype if complex_ else sum_dtype)
            assert float(state["step"]) == t
            theta_star, star = reference.proximal_adagrad(
                theta_prev, real64(g), {"step": t - 1, "sum": G_prev}, **hp)
            _check_step(real64(param), real64(state["sum"]), theta_star, star["sum"], theta_prev,
                        real64(g), hp, t, real, sum_dtype, f"step {t}")
            traj = reference.proximal_adagrad(*traj[:1], real64(g), traj[1], **hp)
            if real not in HALF and sum_dtype not in HALF:
                np.testing.assert_allclose(real64(param), traj[0],
                                           **_trajectory_tol(real, sum_dtype))
    if kw["differentiable"]:
        assert param.grad_fn is not None


def test_reference_sparse_rule_is_the_dense_rule_on_touched_rows():
    """The float64 rules agree with each other: a sparse step is the dense step on the
    touched rows; untouched rows keep θ and G (where dense would shrink θ)."""
    rng = np.random.default_rng(0)
    theta, grads = rng.normal(size=(6, 2)), rng.normal(size=(3, 2))
    indices = np.array([4, 1, 4])
    state = reference.proximal_adagrad_init(theta)
    hp = dict(lr=0.3, l1=0.1, l2=0.2, eps=1e-3)
    sparse, sparse_state = reference.proximal_adagrad_sparse(theta, indices, grads, state, **hp)
    dense_grad = np.zeros((6, 2))
    np.add.at(dense_grad, indices, grads)
    dense, dense_state = reference.proximal_adagrad(theta, dense_grad, state, **hp)
    np.testing.assert_array_equal(sparse[[1, 4]], dense[[1, 4]])
    np.testing.assert_array_equal(sparse[[0, 2, 3, 5]], theta[[0, 2, 3, 5]])
    assert (np.abs(dense[[0, 2, 3, 5]]) < np.abs(theta[[0, 2, 3, 5]])).all()
    np.testing.assert_array_equal(sparse_state["sum"], dense_state["sum"])


# ================================================================== sparse paths


def _sparse_spy() -> KernelSpy:
    return KernelSpy([(proximal_cpu, "sparse_proximal_", "sparse:numba"),
                      (portable_proximal, "sparse_proximal_", "sparse:torch-ops")],
                     [proximal_cpu._SPARSE_SERIAL, proximal_cpu._SPARSE_PARALLEL])


@st.composite
def _sparse_case(draw, path: str, catch_up: bool, float32_only: bool = False) -> dict:
    kw = draw(_options(catch_up))
    case = draw(sparse_case(path, {**kw, "sparse_catch_up": catch_up}, float32_only))
    case["lr_change"] = catch_up and draw(st.booleans())
    return case


@pytest.mark.parametrize("path", SPARSE_PATHS)
def test_sparse_steps_touched_rows_only(path):
    """Without catch-up (TensorFlow's semantics), every sparse path: each step equals the
    reference's sparse step (touched rows get :ref:`algo-proximal` with their summed gradient), untouched
    rows keep θ and G bit for bit; over the run, float32/float64 against an independent
    float64 run."""
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
    opt = adagrad.ProximalAdagrad([param], **kw)
    G0 = float(torch.tensor(kw["initial_accumulator_value"], dtype=sum_dtype))
    traj = (to64(param), reference.proximal_adagrad_init(to64(param), G0))
    with cpu_kernels_off(case["path"] == "torch-ops"), _sparse_spy() as spy:
        for t, (indices, values) in enumerate(sparse_grads(case, gen), start=1):
            theta_prev = to64(param)
            state = opt.state.get(param)
            G_prev = to64(state["sum"]) if state else np.full(theta_prev.shape, G0)
            feed(opt, param, indices, values, case["feed"])
            assert spy.take() == EXPECTED_SPARSE[case["path"]]
            state = opt.state[param]
            theta_star, star = reference.proximal_adagrad_sparse(
                theta_prev, indices, to64(values), {"step": t - 1, "sum": G_prev}, **hp)
            g = densify(indices, values, tuple(param.shape))
            _check_step(to64(param), to64(state["sum"]), theta_star, star["sum"], theta_prev, g,
                        hp, t, dtype, sum_dtype, f"step {t}")
            untouched = np.setdiff1d(np.arange(case["rows"]), indices.numpy())
            assert np.array_equal(to64(param)[untouched], theta_prev[untouched])
            assert np.array_equal(to64(state["sum"])[untouched], G_prev[untouched])
            assert "row_step" not in state
            traj = reference.proximal_adagrad_sparse(traj[0], indices, to64(values), traj[1],
                                                     **hp)
            if dtype not in HALF and sum_dtype not in HALF:
                np.testing.assert_allclose(to64(param), traj[0],
                                           **_trajectory_tol(dtype, sum_dtype))


CATCH_UP_PATHS = ["numba-serial", "numba-parallel", "torch-ops"]


@pytest.mark.parametrize("path", CATCH_UP_PATHS)
def test_sparse_catch_up_equals_dense(path):
    """With ``sparse_catch_up=True``: the rows a step touches, the rows `catch_up_rows`
    brings up to date, and after `flush` every row, equal the dense rule fed the gradient
    with zero rows (whose untouched rows are shrunk every step); also when lr changes
    between steps (the catch-up replays each skipped step's lr)."""
    run_examples(_sparse_case(path, catch_up=True, float32_only=True), _run_sparse_catch_up,
                 examples(path))


@pytest.mark.slow
@pytest.mark.parametrize("path", CATCH_UP_PATHS)
def test_sparse_catch_up_equals_dense_slow(path):
    run_examples(_sparse_case(path, catch_up=True), _run_sparse_catch_up, N_SLOW)


def _run_sparse_catch_up(case: dict) -> None:
    dtype, kw, hp = case["dtype"], case["kw"], _hp(case["kw"])
    sum_dtype = sum_dtype_of(dtype, kw["state_dtype"])
    tol = _trajectory_tol(dtype, sum_dtype)
    if dtype == torch.bfloat16:  # θ rounds to bf16 at each step and catch-up
        tol = {"rtol": 0.05, "atol": 0.02}
    gen = torch.Generator().manual_seed(case["seed"])
    param = start((case["rows"], case["width"]), gen).to(dtype).requires_grad_()
    opt = adagrad.ProximalAdagrad([param], **kw)
    G0 = float(torch.tensor(kw["initial_accumulator_value"], dtype=sum_dtype))
    dense = (to64(param), reference.proximal_adagrad_init(to64(param), G0))
    with cpu_kernels_off(case["path"] == "torch-ops"), _sparse_spy() as spy:
        for t, (indices, values) in enumerate(sparse_grads(case, gen), start=1):
            if case["lr_change"] and t % 2 == 0:
                opt.param_groups[0]["lr"] = hp["lr"] = hp["lr"] * 0.5
            feed(opt, param, indices, values, case["feed"])
            assert spy.take() == EXPECTED_SPARSE[case["path"]]
            dense = reference.proximal_adagrad(dense[0], densify(indices, values, param.shape),
                                               dense[1], **hp)
            touched = np.unique(indices.numpy())
            np.testing.assert_allclose(to64(param)[touched], dense[0][touched], **tol)
            looked_up = torch.randint(0, case["rows"], (3,), generator=gen)
            opt.catch_up_rows(param, looked_up)
            rows = looked_up.numpy()
            np.testing.assert_allclose(to64(param)[rows], dense[0][rows], **tol)
        opt.flush()
    np.testing.assert_allclose(to64(param), dense[0], **tol)
    np.testing.assert_allclose(to64(opt.state[param]["sum"]), dense[1]["sum"], **tol)


def test_rows_touched_every_step_are_bit_identical_to_dense():
    """The sparse kernel runs the dense kernel's coordinate update: on exact (dyadic)
    gradients, rows touched at every step are the dense run's bit for bit (the others are
    not shrunk: TensorFlow's semantics)."""
    gen = torch.Generator().manual_seed(8)
    theta = start((30, 4), gen).float()
    sparse, dense = theta.clone().requires_grad_(), theta.clone().requires_grad_()
    kw = dict(lr=0.3, l1=0.05, l2=0.1, eps=1e-3)
    sparse_opt, dense_opt = adagrad.ProximalAdagrad([sparse], **kw), adagrad.ProximalAdagrad(
        [dense], **kw)
    always = torch.arange(0, 30, 3)
    for _ in range(6):
        indices = torch.cat([always, always, torch.randint(0, 30, (5,), generator=gen)])
        values = dyadic((indices.numel(), 4), gen).float()
        sparse.grad = coo(indices, values, (30, 4))
        dense.grad = torch.from_numpy(densify(indices, values, (30, 4))).float()
        sparse_opt.step()
        dense_opt.step()
        assert_bit_identical(sparse[always], dense[always], "rows touched every step")
        assert_bit_identical(sparse_opt.state[sparse]["sum"], dense_opt.state[dense]["sum"])


def test_without_catch_up_untouched_rows_differ_from_dense():
    """The semantics the catch-up changes: a row left untouched keeps its θ, where dense
    shrinks it (so the catch-up tests above can fail)."""
    param = torch.ones(3, 2, requires_grad=True)
    opt = adagrad.ProximalAdagrad([param], lr=0.5, l1=0.1, l2=0.1)
    for _ in range(3):
        param.grad = coo(torch.tensor([0]), torch.ones(1, 2), (3, 2))
        opt.step()
    assert torch.equal(param[1:].detach(), torch.ones(2, 2))
    dense = torch.ones(3, 2, requires_grad=True)
    dense_opt = adagrad.ProximalAdagrad([dense], lr=0.5, l1=0.1, l2=0.1)
    for _ in range(3):
        dense.grad = torch.tensor([[1.0, 1.0], [0, 0], [0, 0]])
        dense_opt.step()
    torch.testing.assert_close(dense[0], param[0])
    assert (dense[1:] < 0.7).all()


def test_catch_up_across_table_views_and_dense_steps():
    """A 2-D parameter stepped by element-wise COO gradients (sparse_dim 2, a table of
    rows·D rows), row gradients, and dense gradients, in turn: the catch-up flushes what
    a change of view would lose, and the run equals dense."""
    gen = torch.Generator().manual_seed(3)
    theta = start((6, 3), gen)
    param = theta.clone().requires_grad_()
    opt = adagrad.ProximalAdagrad([param], lr=0.4, l1=0.05, l2=0.2, sparse_catch_up=True)
    dense = (to64(theta), reference.proximal_adagrad_init(to64(theta)))
    hp = dict(lr=0.4, l1=0.05, l2=0.2)
    for kind in ["rows", "elements", "rows", "dense", "rows", "rows"]:
        g = torch.zeros(6, 3, dtype=torch.float64)
        g[torch.randint(0, 6, (2,), generator=gen)] = dyadic((3,), gen)
        if kind == "rows":
            param.grad = g.to_sparse(1)
        elif kind == "elements":
            param.grad = g.to_sparse(2)
        else:
            param.grad = g.clone()
        opt.step()
        dense = reference.proximal_adagrad(dense[0], to64(g), dense[1], **hp)
    opt.flush()
    np.testing.assert_allclose(to64(param), dense[0], rtol=1e-12, atol=1e-14)


# ================================================================== fused layers


def _layers(kind: str, weight: torch.Tensor, fused: bool, sparse: bool):
    if kind == "embedding":
        cls = adagrad.nn.Embedding if fused else torch.nn.Embedding
        layer = cls(*weight.shape, sparse=sparse)
    else:
        cls = adagrad.nn.EmbeddingBag if fused else torch.nn.EmbeddingBag
        layer = cls(*weight.shape, mode=kind.split("-")[1], sparse=sparse)
    with torch.no_grad():
        layer.weight.copy_(weight)
    return layer


def _lookup(layer, kind: str, ids: torch.Tensor, weights: torch.Tensor):
    if kind == "embedding":
        return layer(ids.view(4, 3))
    offsets = torch.tensor([0, 3, 5, 9])
    per_sample = weights if kind == "bag-sum" else None
    return layer(ids, offsets, per_sample_weights=per_sample)


def _train(kind, weight, fused, sparse, catch_up, steps=6):
    """A few steps of a loss whose gradient depends on the rows read (so stale rows would
    show), with lr halved midway; returns the table, flushed."""
    gen = torch.Generator().manual_seed(11)
    layer = _layers(kind, weight, fused, sparse)
    opt = adagrad.ProximalAdagrad(layer.parameters(), lr=0.3, l1=0.02, l2=0.1,
                                  sparse_catch_up=catch_up)
    if fused:
        layer.update_in_backward(opt)
    for step in range(steps):
        if step == 3:
            opt.param_groups[0]["lr"] = 0.15
        ids = torch.randint(0, 8, (12,), generator=gen)  # 20 rows, most never touched
        out = _lookup(layer, kind, ids, torch.rand(12, generator=gen))
        target = torch.randn(out.shape, generator=gen)
        ((out - target) ** 2).sum().backward()
        opt.step()
        opt.zero_grad()
    opt.flush()  # rows never looked up again (no-op without catch-up)
    return layer.weight.detach()


LAYER_KINDS = ["embedding", "bag-sum", "bag-mean"]


@pytest.mark.parametrize("kind", LAYER_KINDS)
def test_fused_layers_equal_torch_sparse_layer_and_step(kind):
    """`adagrad.nn` layers with update_in_backward(ProximalAdagrad) give what torch's
    sparse layer and ``optimizer.step()`` give."""
    weight = torch.randn(20, 4)
    fused = _train(kind, weight, fused=True, sparse=False, catch_up=False)
    stepped = _train(kind, weight, fused=False, sparse=True, catch_up=False)
    torch.testing.assert_close(fused, stepped, rtol=1e-6, atol=1e-7)
    assert torch.equal(fused[8:], weight[8:])  # untouched rows: not shrunk


@pytest.mark.parametrize("kind", LAYER_KINDS)
def test_fused_layers_with_catch_up_equal_dense(kind):
    """With ``sparse_catch_up=True`` the fused layers catch each looked-up row up before
    the forward reads it: the run equals torch's dense layer stepped densely, every row
    (which the plain sparse run does not)."""
    weight = torch.randn(20, 4, dtype=torch.float64).float()
    fused = _train(kind, weight, fused=True, sparse=False, catch_up=True)
    dense = _train(kind, weight, fused=False, sparse=False, catch_up=False)
    plain = _train(kind, weight, fused=True, sparse=False, catch_up=False)
    torch.testing.assert_close(fused, dense, rtol=1e-5, atol=1e-6)
    assert (plain - dense).abs().max() > 1e-3
    assert not torch.equal(fused[8:], weight[8:])


def test_lookup_of_a_row_outside_the_table_raises_before_any_write():
    param = torch.randn(5, 2, requires_grad=True)
    opt = adagrad.ProximalAdagrad([param], l1=0.1, sparse_catch_up=True)
    param.grad = coo(torch.tensor([1]), torch.ones(1, 2), (5, 2))
    opt.step()
    before = param.detach().clone()
    with pytest.raises(IndexError, match="out of range"):
        opt.catch_up_rows(param, torch.tensor([0, 2, 5]))
    assert torch.equal(param.detach(), before)


# ================================================================== checkpoints


def _mixed_run(model: torch.nn.Module, opt, steps: range, gen: torch.Generator) -> None:
    """Fused sparse lookups and a dense layer, lr changed at step 4."""
    for step in steps:
        if step == 4:
            opt.param_groups[0]["lr"] = 0.1
        ids = torch.randint(0, 10, (6,), generator=gen)
        loss = (model[1](model[0](ids)) ** 2).sum()
        loss.backward()
        opt.step()
        opt.zero_grad()


def _model() -> torch.nn.Module:
    torch.manual_seed(5)
    return torch.nn.Sequential(adagrad.nn.Embedding(30, 4), torch.nn.Linear(4, 2))


@pytest.mark.parametrize("catch_up", [False, True])
def test_resume_mid_run_is_bit_identical(catch_up):
    """A run resumed from a checkpoint taken at step 5 (through torch.save/load, into a
    new model and optimizer) ends bit-identical to the run that never stopped, pending
    catch-up and the recorded rule included; taking the checkpoint changes nothing."""
    def fresh():
        model = _model()
        opt = adagrad.ProximalAdagrad(model.parameters(), lr=0.3, l1=0.01, l2=0.05,
                                      sparse_catch_up=catch_up)
        model[0].update_in_backward(opt)
        return model, opt
    model, opt = fresh()
    _mixed_run(model, opt, range(8), torch.Generator().manual_seed(2))
    gen = torch.Generator().manual_seed(2)
    first, first_opt = fresh()
    _mixed_run(first, first_opt, range(5), gen)
    saved = resumed({"model": first.state_dict(), "opt": first_opt.state_dict()})
    if catch_up:
        assert "row_step" in saved["opt"]["state"][0] and "last_lr" in saved["opt"]["state"][0]
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
    """state_dict → load_state_dict keeps every value; bf16 parameters keep a float32
    ``sum`` (also when the checkpoint comes from torch.optim-style float32 state)."""
    param = torch.randn(4, 3).to(torch.bfloat16).requires_grad_()
    opt = adagrad.ProximalAdagrad([param], l1=0.1)
    assert not opt.state  # lazy: nothing before the first step
    param.grad = torch.randn(4, 3).to(torch.bfloat16)
    opt.step()
    assert opt.state[param]["sum"].dtype == torch.float32
    saved = resumed(opt.state_dict())
    other = adagrad.ProximalAdagrad([param], l1=0.1)
    other.load_state_dict(saved)
    assert other.state[param]["sum"].dtype == torch.float32
    assert torch.equal(other.state[param]["sum"], opt.state[param]["sum"])
    assert other.param_groups[0]["l1"] == 0.1


@pytest.mark.parametrize("direction", ["adagrad into proximal", "proximal into adagrad",
                                       "dual averaging into proximal",
                                       "proximal into dual averaging"])
def test_checkpoints_of_other_members_are_refused(direction):
    source, target = direction.split(" into ")
    classes = {"adagrad": adagrad.Adagrad, "proximal": adagrad.ProximalAdagrad,
               "dual averaging": adagrad.AdagradDA}
    param = torch.randn(3, 2, requires_grad=True)
    opt = classes[source]([param])
    param.grad = torch.randn(3, 2)
    opt.step()
    other = classes[target]([param])
    with pytest.raises(ValueError, match="not a checkpoint of|lacks|does not keep"):
        other.load_state_dict(opt.state_dict())
    assert not other.state


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.pop("last_l2"), "but not"),
    (lambda s: s.__setitem__("row_step", torch.zeros(7, dtype=torch.float64)), "row_step"),
    (lambda s: s.__setitem__("row_step", torch.full((4,), 9.0, dtype=torch.float64)),
     "outside"),
    (lambda s: s.__setitem__("last_lr", torch.tensor(-1.0, dtype=torch.float64)), "last_lr"),
])
def test_broken_catch_up_state_is_refused(edit, message):
    param = torch.randn(4, 3, requires_grad=True)
    opt = adagrad.ProximalAdagrad([param], l1=0.1, sparse_catch_up=True)
    param.grad = coo(torch.tensor([1]), torch.ones(1, 3), (4, 3))
    opt.step()
    saved = copy.deepcopy(opt.state_dict())
    edit(saved["state"][0])
    with pytest.raises(ValueError, match=message):
        adagrad.ProximalAdagrad([param], l1=0.1, sparse_catch_up=True).load_state_dict(saved)


# ================================================================== errors


@pytest.mark.parametrize("kwargs, argument", [
    (dict(lr=-0.1), "lr"), (dict(l1=-1e-3), "l1"), (dict(l2=-1.0), "l2"),
    (dict(eps=-1e-8), "eps"), (dict(lr_decay=-0.1), "lr_decay"),
    (dict(initial_accumulator_value=-0.1), "initial_accumulator_value"),
    (dict(initial_accumulator_value=0.0), "initial_accumulator_value"),
    (dict(l1=math.nan), "l1"), (dict(state_dtype=torch.int32), "state_dtype"),
    (dict(sparse_catch_up="yes"), "sparse_catch_up"),
    (dict(sparse_catch_up=True, lr_decay=0.1), "sparse_catch_up"),
])
def test_invalid_hyperparameters_raise(kwargs, argument):
    param = torch.zeros(2, requires_grad=True)
    with pytest.raises(ValueError, match=f"`{argument}`"):
        adagrad.ProximalAdagrad([param], **kwargs)
    opt = adagrad.ProximalAdagrad([param])
    with pytest.raises(ValueError, match=f"`{argument}`"):
        opt.add_param_group({"params": [torch.zeros(2, requires_grad=True)], **kwargs})


def test_zero_initial_accumulator_is_allowed_with_eps():
    param = torch.ones(2, requires_grad=True)
    opt = adagrad.ProximalAdagrad([param], initial_accumulator_value=0.0, eps=1e-6, l1=0.1)
    param.grad = torch.tensor([0.0, 1.0])
    opt.step()
    assert torch.isfinite(param).all()


def test_a_checkpoint_with_an_invalid_hyperparameter_is_refused():
    param = torch.zeros(2, requires_grad=True)
    saved = adagrad.ProximalAdagrad([param], l1=0.1).state_dict()
    saved["param_groups"][0]["l1"] = -0.1
    opt = adagrad.ProximalAdagrad([param], l1=0.1)
    with pytest.raises(ValueError, match="group 0.*`l1`"):
        opt.load_state_dict(saved)
    assert opt.param_groups[0]["l1"] == 0.1


def test_exported():
    assert adagrad.ProximalAdagrad is adagrad.optim.ProximalAdagrad
    assert "ProximalAdagrad" in adagrad.__all__ and "ProximalAdagrad" in adagrad.optim.__all__
