"""`adagrad.RowWiseAdagrad` (:ref:`algo-rowwise`) on every path, against the float64 rules
`reference.rowwise_adagrad` / `reference.rowwise_adagrad_sparse` and closed forms.

Paths, told apart by spying on the kernel entry points (never by asking the optimizer):
dense numba (`rowwise_cpu`, serial below 65,536 elements, parallel from there; f32/f64/
bf16 tables), dense torch ops (`rowwise_portable`: fp16, non-contiguous), element-wise
:ref:`algo-adagrad` for ndim < 2 (Adagrad's dense kernels), sparse on each kernel, and the fused layers.

Comparisons: float32/float64 runs against a whole float64 trajectory; half-precision
runs one step at a time from the state the optimizer holds (the rule's arithmetic in the
accumulator's precision, then one rounding of θ to its dtype; the row's mean square is a
sum of D terms, hence a slack of D + 8 roundoffs).
"""

from __future__ import annotations

import contextlib
import functools
import math
from typing import Any
from unittest import mock

import numpy as np
import pytest
import torch
from conftest import to64
from hypothesis import given, settings
from hypothesis import strategies as st

import adagrad.nn
from adagrad import RowWiseAdagrad, reference
from adagrad.kernels import RowClocks, StepRule
from adagrad.kernels.adagrad import cpu as dense_cpu
from adagrad.kernels.adagrad import torch_ops as portable
from adagrad.kernels.rowwise import cpu as rowwise_cpu
from adagrad.kernels.rowwise import torch_ops as rowwise_portable

pytestmark = pytest.mark.filterwarnings("ignore:Sparse invariant checks")

PARALLEL = 1 << 16
UNIT = {torch.float64: 2.0 ** -53, torch.float32: 2.0 ** -24, torch.bfloat16: 2.0 ** -8,
        torch.float16: 2.0 ** -11}
HALF = (torch.float16, torch.bfloat16)
FBGEMM_EPS = 1e-8


# ------------------------------------------------------------------ which path ran


class Spy:
    """Records the kernel entry points and numba kernels that run."""

    POINTS = ((rowwise_cpu, "dense_rowwise_adagrad_", "dense:numba"),
              (rowwise_portable, "dense_rowwise_adagrad_", "dense:torch-ops"),
              (rowwise_portable, "sparse_rowwise_adagrad_", "sparse:torch-ops"),
              (dense_cpu, "dense_adagrad_", "elementwise:numba"),
              (portable, "dense_adagrad_", "elementwise:torch-ops"))

    def __init__(self) -> None:
        self.events: list[str] = []
        self._stack = contextlib.ExitStack()

    def _wrap(self, label, fn):
        @functools.wraps(fn)
        def spy(*args, **kwargs):
            self.events.append(label)
            return fn(*args, **kwargs)
        return spy

    def __enter__(self) -> Spy:
        points = list(self.POINTS)
        if hasattr(rowwise_cpu, "sparse_rowwise_adagrad_"):
            points.append((rowwise_cpu, "sparse_rowwise_adagrad_", "sparse:numba"))
        for module, name, label in points:
            self._stack.enter_context(
                mock.patch.object(module, name, self._wrap(label, getattr(module, name))))
        self._stack.enter_context(mock.patch.dict(rowwise_cpu._KERNELS, {
            key: self._wrap(f"numba-{'parallel' if key[1] else 'serial'}", fn)
            for key, fn in rowwise_cpu._KERNELS.items()}))
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stack.__exit__(*exc)

    def take(self) -> list[str]:
        events, self.events = sorted(self.events), []
        return events


# ------------------------------------------------------------------ comparisons


def _width(shape: tuple[int, ...]) -> int:
    return math.prod(shape[1:]) if len(shape) >= 2 else 1


def _one_step_bound(theta_star, theta_prev, G_star, width, param_dtype, sum_dtype):
    """|θ - θ*| and |G - G*| allowed for one step from the same start (module docstring)."""
    u_p, u_s = UNIT[param_dtype], UNIT[sum_dtype]
    slack = (width + 8) * u_s
    tiny = torch.finfo(param_dtype).smallest_normal * torch.finfo(param_dtype).eps
    theta_bound = (u_p * np.abs(theta_star)
                   + slack * (np.abs(theta_prev) + np.abs(theta_star - theta_prev)) + tiny)
    return theta_bound, slack * np.abs(G_star) + torch.finfo(sum_dtype).tiny


def _assert_within(actual, expected, bound, what):
    err = np.abs(np.asarray(actual, np.float64) - expected)
    bad = ~(err <= bound)
    assert not bad.any(), (f"{what}: {int(bad.sum())}/{err.size} outside; worst "
                           f"{np.max(np.where(bad, err, 0))}")


def _trajectory_tol(dtype):
    return dict(rtol=1e-11, atol=1e-12) if dtype == torch.float64 else dict(rtol=2e-5, atol=2e-6)


# ------------------------------------------------------------------ options


def _reference_options(kw: dict[str, Any]) -> tuple[dict[str, Any], float]:
    """The reference's hyperparameters for ``RowWiseAdagrad(**kw)`` (the :ref:`algo-conventions`
    table: torch ε = 1e-10, FBGEMM ε = 1e-8, both G₀ = 0 and L2) and G₀."""
    eps_default = FBGEMM_EPS if kw.get("convention") == "fbgemm" else 1e-10
    hp = dict(lr=kw.get("lr", 1e-2), lr_decay=kw.get("lr_decay", 0.0),
              weight_decay=kw.get("weight_decay", 0.0),
              eps=kw["eps"] if kw.get("eps") is not None else eps_default,
              decoupled_weight_decay=bool(kw.get("decoupled_weight_decay")),
              maximize=kw.get("maximize", False))
    iav = kw.get("initial_accumulator_value")
    return hp, 0.0 if iav is None else iav


@st.composite
def options(draw, sparse: bool = False) -> dict[str, Any]:
    kw = dict(lr=draw(st.sampled_from([0.01, 0.1, 0.5])),
              lr_decay=draw(st.sampled_from([0.0, 0.1])),
              weight_decay=draw(st.sampled_from([0.0, 0.0, 0.05])),
              eps=draw(st.sampled_from([None, 1e-10, 1e-3])),
              initial_accumulator_value=draw(st.sampled_from([None, 0.0, 0.1])),
              maximize=draw(st.booleans()),
              decoupled_weight_decay=draw(st.sampled_from([None, False, True])),
              convention=draw(st.sampled_from([None, "torch", "fbgemm"])))
    if sparse and kw["weight_decay"]:
        kw["sparse_weight_decay"] = draw(st.sampled_from(["touched", "lazy"]))
    return {k: v for k, v in kw.items() if v is not None}


# ================================================================== dense

SMALL_SHAPES = [(), (0,), (3, 0), (0, 4), (1,), (5,), (1, 1), (4, 3), (2, 3, 5), (7, 64)]
LARGE_SHAPES = [(PARALLEL,), (1024, 64), (257, 256), (3, 129, 170)]


def _expected_dense_path(shape, dtype, contiguous=True) -> list[str]:
    """The documented dispatch: ndim < 2 element-wise (Adagrad's kernels); ndim ≥ 2 the
    row-wise numba kernel for contiguous f32/f64/bf16 (parallel from 65,536 elements,
    nothing to run when empty), else torch ops."""
    numba_dtype = dtype in (torch.float32, torch.float64, torch.bfloat16)
    if len(shape) < 2:
        return ["elementwise:numba"] if numba_dtype else ["elementwise:torch-ops"]
    if not (numba_dtype and contiguous):
        return ["dense:torch-ops"]
    if math.prod(shape) == 0:
        return ["dense:numba"]
    return sorted(["dense:numba",
                   "numba-parallel" if math.prod(shape) >= PARALLEL else "numba-serial"])


def _run_dense(shape, dtype, kw, steps, seed, transposed=False):
    hp, iav = _reference_options(kw)
    gen = torch.Generator().manual_seed(seed)
    start = torch.randn(shape, generator=gen, dtype=torch.float64).clamp(-2, 2)
    param = start.to(dtype)
    if transposed:  # a non-contiguous parameter (rows along dim 0 of the transpose)
        param = start.t().contiguous().to(dtype).t()
    param.requires_grad_(True)
    opt = RowWiseAdagrad([param], **kw)
    sum_dtype = torch.float32 if dtype in HALF else dtype
    theta, state = to64(param), reference.rowwise_adagrad_init(to64(param), iav)
    expected = _expected_dense_path(shape, dtype, not transposed)
    with Spy() as spy:
        for t in range(1, steps + 1):
            g = torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype)
            theta_prev = to64(param)
            G_prev = (to64(opt.state[param]["sum"]) if opt.state.get(param)
                      else reference.rowwise_adagrad_init(theta_prev, iav)["sum"])
            param.grad = g.clone()
            opt.step()
            assert spy.take() == expected
            G = opt.state[param]["sum"]
            assert G.dtype == sum_dtype and tuple(G.shape) == opt._state_shapes(param)["sum"]
            assert float(opt.state[param]["step"]) == t
            star, star_state = reference.rowwise_adagrad(
                theta_prev, to64(g), {"step": t - 1, "sum": G_prev}, **hp)
            bounds = _one_step_bound(star, theta_prev, star_state["sum"], _width(shape), dtype,
                                     sum_dtype)
            _assert_within(to64(param), star, bounds[0], f"step {t} θ")
            _assert_within(to64(G), star_state["sum"], bounds[1], f"step {t} sum")
            theta, state = reference.rowwise_adagrad(theta, to64(g), state, **hp)
            if dtype not in HALF:
                np.testing.assert_allclose(to64(param), theta, **_trajectory_tol(dtype))
                np.testing.assert_allclose(to64(G), state["sum"], **_trajectory_tol(dtype))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16],
                         ids=str)
@settings(max_examples=10)
@given(shape=st.sampled_from(SMALL_SHAPES), kw=options(), steps=st.integers(1, 4),
       seed=st.integers(0, 999))
def test_dense_small_against_reference(dtype, shape, kw, steps, seed):
    """Empty, 0-d, 1-d (element-wise) and small tables, every option, numba and torch ops."""
    _run_dense(shape, dtype, kw, steps, seed)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@settings(max_examples=3)
@given(shape=st.sampled_from(LARGE_SHAPES), kw=options(), seed=st.integers(0, 999))
def test_dense_large_against_reference(dtype, shape, kw, seed):
    """≥ 65,536 elements: the parallel numba kernel (f32, bf16) and torch ops (fp16)."""
    _run_dense(shape, dtype, kw, 2, seed)


@settings(max_examples=6)
@given(kw=options(), seed=st.integers(0, 999))
def test_dense_non_contiguous_takes_torch_ops(kw, seed):
    _run_dense((6, 5), torch.float32, kw, 3, seed, transposed=True)


def test_dense_kernels_directly_against_each_other_and_the_reference():
    """Both dense row kernels, called directly on the same inputs (f32, L2 and decoupled
    decay, maximize), against the float64 rule."""
    gen = torch.Generator().manual_seed(3)
    for rule in (StepRule(lr=0.1, eps=1e-3, weight_decay=0.05),
                 StepRule(lr=0.1, eps=0.0, maximize=True, weight_decay=0.05, decoupled=True)):
        p0 = torch.randn(300, 40, generator=gen)
        g = torch.randn(300, 40, generator=gen)
        s0 = torch.rand(300, generator=gen)
        expected, exp_state = reference.rowwise_adagrad(
            to64(p0), to64(g), {"step": 0, "sum": to64(s0)}, lr=rule.lr, eps=rule.eps,
            weight_decay=rule.weight_decay, decoupled_weight_decay=rule.decoupled,
            maximize=rule.maximize)
        for kernel in (rowwise_cpu.dense_rowwise_adagrad_,
                       rowwise_portable.dense_rowwise_adagrad_):
            p, s = p0.clone(), s0.clone()
            kernel(p, g, s, rule)
            np.testing.assert_allclose(to64(p), expected, rtol=2e-6, atol=1e-6)
            np.testing.assert_allclose(to64(s), exp_state["sum"], rtol=2e-6)


def test_constant_gradient_closed_form():
    """G_r = G₀ + t·mean(g_r²) and θ_r = θ₀ - Σ_t lr/(sqrt(G_r,t) + ε)·g_r, in float64."""
    theta0 = torch.tensor([[1.0, 2.0, 3.0], [-1.0, 0.0, 1.0]], dtype=torch.float64)
    g = torch.tensor([[0.5, -1.0, 2.0], [0.1, 0.1, 0.1]], dtype=torch.float64)
    param = theta0.clone().requires_grad_(True)
    opt = RowWiseAdagrad([param], lr=0.1, initial_accumulator_value=0.2)
    for _ in range(10):
        param.grad = g.clone()
        opt.step()
    mean_sq = (g ** 2).mean(1)
    np.testing.assert_allclose(opt.state[param]["sum"], 0.2 + 10 * mean_sq, rtol=1e-14)
    steps = sum(0.1 / ((0.2 + t * mean_sq).sqrt() + 1e-10) for t in range(1, 11))
    np.testing.assert_allclose(param.detach(), theta0 - steps[:, None] * g, rtol=1e-13)


def test_state_is_one_float32_entry_per_row_and_lazy():
    table = torch.zeros(100, 16, dtype=torch.bfloat16, requires_grad=True)
    bias = torch.zeros(16, dtype=torch.float16, requires_grad=True)
    opt = RowWiseAdagrad([table, bias])
    assert not opt.state  # created at the first step, on the parameter's device
    table.grad, bias.grad = torch.ones_like(table), torch.ones_like(bias)
    opt.step()
    assert opt.state[table]["sum"].shape == (100,)
    assert opt.state[table]["sum"].dtype == torch.float32
    assert opt.state[bias]["sum"].shape == (16,) and opt.state[bias]["sum"].dtype == torch.float32
    # 1/D of Adagrad's accumulator for the table
    assert opt.state[table]["sum"].numel() * 16 == table.numel()


# ================================================================== sparse


def _coo(indices: torch.Tensor, values: torch.Tensor, shape) -> torch.Tensor:
    return torch.sparse_coo_tensor(indices.reshape(1, -1), values, shape,
                                   check_invariants=False)


def _sparse_batch(shape, nnz, gen, hot: int | None = None):
    high = shape[0] if hot is None else min(hot, shape[0])
    indices = torch.randint(0, max(high, 1), (nnz,), generator=gen)
    values = torch.randn((nnz,) + tuple(shape[1:]), generator=gen, dtype=torch.float64)
    return indices, values


class SparseReference:
    """The float64 sparse rule (`reference.rowwise_adagrad_sparse`) on one table."""

    def __init__(self, param: torch.Tensor, iav: float, hp: dict[str, Any],
                 mode: str | None) -> None:
        self.theta = to64(param)
        self.state = reference.rowwise_adagrad_sparse_init(self.theta, iav)
        self.hp, self.mode = hp, mode

    def step(self, indices, values):
        self.theta, self.state = reference.rowwise_adagrad_sparse(
            self.theta, indices.numpy(), values.numpy(), self.state,
            sparse_weight_decay=self.mode, **self.hp)

    def flush(self):
        self.theta, self.state = reference.rowwise_adagrad_sparse_flush(
            self.theta, self.state, weight_decay=self.hp["weight_decay"],
            sparse_weight_decay=self.mode)


def _run_sparse(shape, dtype, kw, steps, nnz, seed, hot=None, kernel=None, flush=True):
    hp, iav = _reference_options(kw)
    gen = torch.Generator().manual_seed(seed)
    param = torch.randn(shape, generator=gen, dtype=torch.float64).clamp(-2, 2).to(dtype)
    param.requires_grad_(True)
    opt = RowWiseAdagrad([param], **kw)
    ref = SparseReference(param, iav, hp, kw.get("sparse_weight_decay"))
    with contextlib.ExitStack() as stack:
        if kernel is not None:  # force one sparse kernel
            stack.enter_context(mock.patch("adagrad.kernels.sparse_rowwise_adagrad_", kernel))
        for _ in range(steps):
            indices, values = _sparse_batch(shape, nnz, gen, hot)
            param.grad = _coo(indices, values.to(dtype), shape)
            opt.step()
            ref.step(indices, values.to(dtype).to(torch.float64))
    if flush:
        opt.flush()
        ref.flush()
    tol = _trajectory_tol(dtype) if dtype not in HALF else dict(rtol=2e-2, atol=2e-2)
    np.testing.assert_allclose(to64(param), ref.theta, **tol)
    np.testing.assert_allclose(to64(opt.state[param]["sum"]), ref.state["sum"],
                               **(tol if dtype not in HALF else dict(rtol=1e-5, atol=1e-6)))
    return opt, param


SPARSE_SHAPES = [(1,), (12,), (10, 1), (10, 3), (6, 2, 3), (40, 64), (0, 5)]
SPARSE_KERNELS = {"torch-ops": rowwise_portable.sparse_rowwise_adagrad_}
if hasattr(rowwise_cpu, "sparse_rowwise_adagrad_"):
    def _numba_sparse(param, state_sum, indices, values, *args):
        """The numba kernel takes float32/float64 gradient values (a bf16 table's COO
        gradient is bf16: the dispatcher sends that to torch ops); here its bf16-table
        kernels get the same values as float32."""
        values = values.float() if values.dtype in HALF else values
        rowwise_cpu.sparse_rowwise_adagrad_(param, state_sum, indices, values, *args)

    SPARSE_KERNELS["numba"] = _numba_sparse


@pytest.mark.parametrize("kernel", list(SPARSE_KERNELS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
@settings(max_examples=7)
@given(shape=st.sampled_from(SPARSE_SHAPES), kw=options(sparse=True), steps=st.integers(1, 4),
       nnz=st.integers(0, 30), hot=st.sampled_from([None, 3]), seed=st.integers(0, 999))
def test_sparse_against_reference(kernel, dtype, shape, kw, steps, nnz, hot, seed):
    """COO row gradients with duplicates (``hot`` rows only: heavy duplication), empty
    ones, every option and sparse weight-decay mode, on each sparse kernel."""
    if shape[0] == 0:
        nnz = 0
    _run_sparse(shape, dtype, kw, steps, nnz, seed, hot, SPARSE_KERNELS[kernel])


@pytest.mark.parametrize("kernel", list(SPARSE_KERNELS))
def test_sparse_large_step(kernel):
    """nnz·D ≥ 65,536 (the numba engine's parallel kernels), with lazy decay."""
    kw = dict(lr=0.1, weight_decay=0.01, sparse_weight_decay="lazy")
    _run_sparse((1500, 32), torch.float32, kw, 2, 2048, 1, None, SPARSE_KERNELS[kernel])


@pytest.mark.slow
@pytest.mark.parametrize("kernel", list(SPARSE_KERNELS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@settings(max_examples=40)
@given(shape=st.sampled_from(SPARSE_SHAPES + [(3000, 48), (500, 4, 8)]),
       kw=options(sparse=True), steps=st.integers(1, 5), nnz=st.integers(0, 3000),
       hot=st.sampled_from([None, 3, 100]), seed=st.integers(0, 9999))
def test_sparse_against_reference_slow(kernel, dtype, shape, kw, steps, nnz, hot, seed):
    if shape[0] == 0:
        nnz = 0
    _run_sparse(shape, dtype, kw, steps, nnz, seed, hot, SPARSE_KERNELS[kernel])


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16],
                         ids=str)
@settings(max_examples=30)
@given(shape=st.sampled_from(SMALL_SHAPES + LARGE_SHAPES + [(1 << 20,), (512, 2048)]),
       kw=options(), steps=st.integers(1, 5), seed=st.integers(0, 9999))
def test_dense_against_reference_slow(dtype, shape, kw, steps, seed):
    _run_dense(shape, dtype, kw, steps, seed)


def test_sparse_default_path():
    """The dispatcher's choice for a CPU float32 table: numba once the engine is there,
    torch ops for fp16 (and until then)."""
    for dtype, expected in ((torch.float32, "numba" if "numba" in SPARSE_KERNELS else
                             "torch-ops"), (torch.float16, "torch-ops")):
        param = torch.zeros(10, 4, dtype=dtype, requires_grad=True)
        opt = RowWiseAdagrad([param], lr=0.1)
        with Spy() as spy:
            param.grad = _coo(torch.tensor([1, 1, 3]), torch.ones(3, 4, dtype=dtype), (10, 4))
            opt.step()
        assert spy.take() == [f"sparse:{expected}"]


def test_sparse_dim_two_gradient_is_gathered_into_rows():
    """A gradient that indexes single elements (sparse_dim 2) updates whole rows: equal
    to the same gradient with sparse_dim 1."""
    gen = torch.Generator().manual_seed(0)
    dense = torch.zeros(8, 4)
    dense[1, 2], dense[5, 0], dense[5, 3] = 1.0, -2.0, 0.5
    start = torch.randn(8, 4, generator=gen)
    results = []
    for grad in (dense.to_sparse(2), dense.to_sparse(1)):
        param = start.clone().requires_grad_(True)
        opt = RowWiseAdagrad([param], lr=0.1)
        for _ in range(3):
            param.grad = grad.clone()
            opt.step()
        results.append((param.detach(), opt.state[param]["sum"]))
    torch.testing.assert_close(results[0], results[1], rtol=1e-6, atol=1e-7)


@settings(max_examples=10)
@given(kw=options(), seed=st.integers(0, 999))
def test_sparse_equals_dense_without_weight_decay(kw, seed):
    """Without weight decay a zero row changes neither θ_r nor G_r: a sparse run equals a
    dense run fed the same gradients densified, on every row."""
    kw = dict(kw, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    start = torch.randn(20, 6, generator=gen)
    sparse_p, dense_p = (start.clone().requires_grad_(True) for _ in range(2))
    sparse_opt, dense_opt = RowWiseAdagrad([sparse_p], **kw), RowWiseAdagrad([dense_p], **kw)
    for _ in range(4):
        indices, values = _sparse_batch((20, 6), 12, gen, hot=8)
        grad = _coo(indices, values.float(), (20, 6))
        sparse_p.grad, dense_p.grad = grad, grad.to_dense()
        sparse_opt.step()
        dense_opt.step()
    torch.testing.assert_close(sparse_p, dense_p, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(sparse_opt.state[sparse_p]["sum"],
                               dense_opt.state[dense_p]["sum"], rtol=1e-6, atol=1e-7)


@settings(max_examples=10)
@given(lr_decay=st.sampled_from([0.0, 0.2]), maximize=st.booleans(), seed=st.integers(0, 999))
def test_sparse_lazy_after_flush_equals_dense_decoupled(lr_decay, maximize, seed):
    """:ref:`algo-sparse` "lazy": after `flush()`, sparse equals dense decoupled row-wise Adagrad (float64
    rule fed the densified gradients: untouched rows decay every step)."""
    gen = torch.Generator().manual_seed(seed)
    hp = dict(lr=0.2, lr_decay=lr_decay, weight_decay=0.1, maximize=maximize)
    param = torch.randn(15, 4, generator=gen, dtype=torch.float64).requires_grad_(True)
    opt = RowWiseAdagrad([param], sparse_weight_decay="lazy", **hp)
    theta, state = to64(param), reference.rowwise_adagrad_init(to64(param))
    for _ in range(5):
        indices, values = _sparse_batch((15, 4), 6, gen, hot=10)
        param.grad = _coo(indices, values, (15, 4))
        opt.step()
        theta, state = reference.rowwise_adagrad(theta, to64(param.grad.to_dense()), state,
                                                 decoupled_weight_decay=True, **hp)
    untouched = torch.ones(15, dtype=torch.bool)
    untouched[:10] = False
    assert not np.allclose(to64(param)[untouched.numpy()], theta[untouched.numpy()])  # pending
    opt.flush()
    np.testing.assert_allclose(to64(param), theta, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(to64(opt.state[param]["sum"]), state["sum"], rtol=1e-12)


@pytest.mark.parametrize("decoupled", [False, True])
def test_sparse_touched_is_the_rule_on_the_touched_rows(decoupled):
    """:ref:`algo-sparse` "touched": the touched rows take the dense :ref:`algo-rowwise`
    step with its weight decay (L2 or decoupled); untouched rows keep θ and G exactly."""
    gen = torch.Generator().manual_seed(0)
    hp = dict(lr=0.2, weight_decay=0.1, decoupled_weight_decay=decoupled)
    start = torch.randn(9, 3, generator=gen, dtype=torch.float64)
    param = start.clone().requires_grad_(True)
    opt = RowWiseAdagrad([param], sparse_weight_decay="touched", **hp)
    indices = torch.tensor([2, 7, 2, 4])
    values = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    param.grad = _coo(indices, values, (9, 3))
    opt.step()
    rows = np.array([2, 4, 7])
    g = to64(_coo(indices, values, (9, 3)).to_dense())[rows]
    expected, exp_state = reference.rowwise_adagrad(to64(start)[rows], g,
                                                    reference.rowwise_adagrad_init(g), **hp)
    np.testing.assert_allclose(to64(param)[rows], expected, rtol=1e-13)
    np.testing.assert_allclose(to64(opt.state[param]["sum"])[rows], exp_state["sum"], rtol=1e-13)
    others = np.setdiff1d(np.arange(9), rows)
    np.testing.assert_array_equal(to64(param)[others], to64(start)[others])
    np.testing.assert_array_equal(to64(opt.state[param]["sum"])[others], 0.0)


def test_sparse_kernel_scale_and_value_of():
    """The kernels' row-gradient form (``scale[k]·values[value_of[k]]``, what the fused
    bag backward passes) equals the COO gradient it stands for."""
    gen = torch.Generator().manual_seed(0)
    bags = torch.randn(4, 5, generator=gen)
    indices = torch.tensor([3, 0, 3, 7, 7, 7])
    value_of = torch.tensor([0, 0, 1, 2, 3, 3])
    scale = torch.tensor([0.5, 1.0, 2.0, 1.5, 1.0, 0.25])
    coo_values = bags[value_of] * scale[:, None]
    rule = StepRule(lr=0.1, eps=1e-10)
    for kernel in SPARSE_KERNELS.values():
        a, b = torch.randn(10, 5, generator=gen), None
        b = a.clone()
        sa, sb = torch.zeros(10), torch.zeros(10)
        kernel(a, sa, indices, bags, rule, RowClocks(), value_of, scale)
        kernel(b, sb, indices, coo_values, rule, RowClocks())
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(sa, sb, rtol=1e-6, atol=1e-7)


# ================================================================== fused layers


def _fused_pair(kind: str, kw: dict[str, Any], rows=30, width=6):
    torch.manual_seed(0)
    if kind == "bag":
        theirs = torch.nn.EmbeddingBag(rows, width, mode="sum", sparse=True)
        ours = adagrad.nn.EmbeddingBag(rows, width, mode="sum")
    else:
        theirs = torch.nn.Embedding(rows, width, sparse=True)
        ours = adagrad.nn.Embedding(rows, width)
    with torch.no_grad():
        ours.weight.copy_(theirs.weight)
    their_opt = RowWiseAdagrad(theirs.parameters(), **kw)
    our_opt = RowWiseAdagrad(ours.parameters(), **kw)
    ours.update_in_backward(our_opt)
    return theirs, their_opt, ours, our_opt


def _lookup(layer, kind, ids, offsets, weights):
    if kind == "bag":
        return layer(ids, offsets, per_sample_weights=weights)
    return layer(ids.view(-1, 4))


@pytest.mark.parametrize("kind", ["bag", "embedding"])
@pytest.mark.parametrize("kw", [dict(lr=0.1), dict(lr=0.1, lr_decay=0.1, maximize=True),
                                dict(lr=0.1, weight_decay=0.05, sparse_weight_decay="touched",
                                     decoupled_weight_decay=True),
                                dict(lr=0.1, weight_decay=0.05, sparse_weight_decay="lazy")],
                         ids=["plain", "lr_decay+maximize", "touched", "lazy"])
def test_fused_layers_equal_torch_sparse_layer_and_step(kind, kw):
    """Update inside backward equals torch's sparse layer + `step()` (with `flush()` before
    each of its forwards under lazy decay, which the fused lookup does per row)."""
    theirs, their_opt, ours, our_opt = _fused_pair(kind, kw)
    gen = torch.Generator().manual_seed(1)
    head = torch.randn(6, generator=gen)
    for _ in range(5):
        ids = torch.randint(0, 12, (16,), generator=gen)
        offsets = torch.tensor([0, 3, 3, 9])
        weights = torch.rand(16, generator=gen) if kind == "bag" else None
        their_opt.flush()
        their_opt.zero_grad()
        loss = lambda out: ((out @ head - 1) ** 2).sum()  # noqa: E731
        loss(_lookup(theirs, kind, ids, offsets, weights)).backward()
        their_opt.step()
        loss(_lookup(ours, kind, ids, offsets, weights)).backward()
        assert ours.weight.grad is None
    their_opt.flush()
    our_opt.flush()
    torch.testing.assert_close(ours.weight, theirs.weight, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(our_opt.state[ours.weight]["sum"],
                               their_opt.state[theirs.weight]["sum"], rtol=1e-6, atol=1e-6)


# ================================================================== errors


@pytest.mark.parametrize("name", ["lr", "lr_decay", "weight_decay", "initial_accumulator_value",
                                  "eps"])
def test_negative_hyperparameters_raise_naming_the_argument(name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        RowWiseAdagrad([torch.zeros(2, requires_grad=True)], **{name: -1.0})
    opt = RowWiseAdagrad([torch.zeros(2, requires_grad=True)])
    with pytest.raises(ValueError, match=f"`{name}`"):
        opt.add_param_group({"params": [torch.zeros(2, requires_grad=True)], name: -1.0})


@pytest.mark.parametrize("convention", ["optax", "keras", "tensorflow", "nope"])
def test_conventions_without_a_row_wise_adagrad_are_refused(convention):
    with pytest.raises(ValueError, match="`convention`.*'torch', 'fbgemm'"):
        RowWiseAdagrad([torch.zeros(2, 2, requires_grad=True)], convention=convention)


def test_fbgemm_convention_sets_eps_and_explicit_arguments_win():
    param = torch.zeros(2, 2, requires_grad=True)
    assert RowWiseAdagrad([param], convention="fbgemm").defaults["eps"] == FBGEMM_EPS
    assert RowWiseAdagrad([param], convention="fbgemm", eps=0.5).defaults["eps"] == 0.5
    assert RowWiseAdagrad([param]).defaults["eps"] == 1e-10


def test_invalid_choices_complex_and_differentiable_are_refused():
    param = torch.zeros(2, 2, requires_grad=True)
    with pytest.raises(ValueError, match="`sparse_weight_decay`"):
        RowWiseAdagrad([param], sparse_weight_decay="always")
    with pytest.raises(ValueError, match="complex"):
        RowWiseAdagrad([torch.zeros(2, 2, dtype=torch.complex64, requires_grad=True)])
    with pytest.raises(ValueError, match="`differentiable`"):
        RowWiseAdagrad([{"params": [param], "differentiable": True}])


def test_sparse_weight_decay_needs_a_mode_and_lazy_needs_lr_wd_below_one():
    param = torch.zeros(4, 2, requires_grad=True)
    grad = _coo(torch.tensor([1]), torch.ones(1, 2), (4, 2))
    opt = RowWiseAdagrad([param], weight_decay=0.1)
    param.grad = grad
    with pytest.raises(RuntimeError, match="sparse_weight_decay"):
        opt.step()
    opt = RowWiseAdagrad([param], lr=20.0, weight_decay=0.1, sparse_weight_decay="lazy")
    with pytest.raises(ValueError, match="lr·weight_decay < 1"):
        opt.step()
    assert not opt.state and torch.equal(param, torch.zeros(4, 2))  # nothing written


def test_bad_sparse_gradients_raise_before_anything_is_written():
    param = torch.zeros(4, 2, requires_grad=True)
    other = torch.zeros(3, 2, requires_grad=True)
    opt = RowWiseAdagrad([other, param], lr=0.1)
    other.grad = torch.ones(3, 2)
    param.grad = _coo(torch.tensor([1, 4]), torch.ones(2, 2), (4, 2))
    with pytest.raises(IndexError, match="index 4"):
        opt.step()
    assert not opt.state and torch.equal(other, torch.zeros(3, 2))
    from adagrad.optim.base import SparseGrad

    wrong = SparseGrad(param.detach().view(8, 1), torch.tensor([0]), torch.ones(1, 1))
    with pytest.raises(ValueError, match=r"\(4, -1\)"):
        opt.step_rows(param, wrong)
