"""`adagrad.FTRL`: FTRL-Proximal (:ref:`algo-ftrl`) on every path.

Oracles: the float64 rule `adagrad.reference.ftrl` (itself checked here against closed
forms worked out by hand), TensorFlow's documented ``ApplyFtrl`` update (written below
from its documentation, for the mapping the class docstring states), and torch's own
sparse embedding layers for the fused ones. Never the code under test.

How steps are compared (`_check_step`): each step is checked from the parameter and
state the optimizer holds before it (exactly representable), against the exact float64
step. FTRL's z is a sum with cancellation (``z + g - σ·θ``; σ itself a difference of
square roots), so the bound is absolute in the size of what is summed:

    S = |z_prev| + |g| + 2·sqrt(n*)/α·|θ_prev|      (bounds every term of z and σ·θ)
    |z - z*| ≤ K·u_s·S          |n - n*| ≤ K·u_s·n*
    |θ - θ*| ≤ u_θ·|θ*| + K·u_s·(|θ*| + (S + λ1)·γ*)      γ* = 1 / ((β + sqrt(n*))/α + λ2)

(u_θ, u_s the unit roundoffs of θ's and the state's dtypes; γ* the step's gain, so that a
z within its bound moves θ by at most that much, also where rounding puts |z| on the
other side of λ1.) For float32/float64 runs the whole trajectory is also held to an
independent float64 run, with the same bounds carried over the steps (`Trajectory`).
Gradients are dyadic (±k/128, 64 ≤ k < 256, or 0): exact in every dtype, and sums of
duplicates exact in float32.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import math
from dataclasses import dataclass
from typing import Any
from unittest import mock

import numpy as np
import pytest
import torch
from conftest import to64
from hypothesis import given, settings
from hypothesis import strategies as st
from numba.core.dispatcher import Dispatcher

import adagrad
import adagrad.nn
from adagrad import FTRL, Adagrad, reference
from adagrad.kernels import FtrlRule
from adagrad.kernels.ftrl import cpu as ftrl_cpu
from adagrad.kernels.ftrl import torch_ops as ftrl_portable
from adagrad.optim.base import SparseGrad

pytestmark = pytest.mark.filterwarnings("ignore:Sparse invariant checks")

PARALLEL = 1 << 16  # documented threshold (adagrad.kernels.elementwise.PARALLEL_MIN_ELEMENTS)
HALF = (torch.bfloat16, torch.float16)
COMPLEX = (torch.complex64, torch.complex128)
REAL_OF = {torch.complex64: torch.float32, torch.complex128: torch.float64}
UNIT = {torch.float64: 2.0 ** -53, torch.float32: 2.0 ** -24, torch.bfloat16: 2.0 ** -8,
        torch.float16: 2.0 ** -11}
K = 8  # arithmetic slack, in units of the state's roundoff
N_DEFAULT = 8  # hypothesis examples per parametrized case (default run; slow: N_SLOW)
N_LARGE = 3  # for the cases of ≥ 65,536 elements
N_SLOW = 40
DEFAULTS = dict(lr=1e-2, beta=1.0, l1=0.0, l2=0.0, initial_accumulator_value=0.0)


def _real(dtype: torch.dtype) -> torch.dtype:
    return REAL_OF.get(dtype, dtype)


def _state_dtype(dtype: torch.dtype, state_dtype: torch.dtype | None) -> torch.dtype:
    """The documented dtype of z and n: θ's for complex θ, else ``state_dtype``, else
    float32 for fp16/bf16 θ and θ's own otherwise."""
    if dtype in COMPLEX:
        return dtype
    if state_dtype is not None:
        return state_dtype
    return torch.float32 if dtype in HALF else dtype


def _hp(kwargs: dict[str, Any]) -> tuple[dict[str, float], float]:
    """The reference's hyperparameters for ``FTRL(**kwargs)`` and n₀."""
    given_ = {k: v for k, v in kwargs.items() if v is not None}
    values = {**DEFAULTS, **{k: given_[k] for k in DEFAULTS if k in given_}}
    n0 = values.pop("initial_accumulator_value")
    return values, float(n0)


def _ftrl_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in kwargs.items() if v is not None}


# ------------------------------------------------------------------ which path ran


class FtrlPathSpy:
    """Records which FTRL kernels run: the entry points of `ftrl_cpu` (numba) and
    `ftrl_portable` (torch ops), and the numba kernels of `ftrl_cpu`'s dispatch tables
    (``...:numba-parallel`` for a kernel compiled with ``parallel=True``)."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self._stack = contextlib.ExitStack()

    def _wrap(self, label: str, fn):
        @functools.wraps(fn)
        def spy(*args, **kwargs):
            self.events.append(label)
            return fn(*args, **kwargs)
        return spy

    def __enter__(self) -> FtrlPathSpy:
        stack = self._stack.__enter__()
        for module, label in ((ftrl_cpu, "numba"), (ftrl_portable, "torch-ops")):
            for kind in ("dense", "sparse"):
                name = f"{kind}_ftrl_"
                if hasattr(module, name):
                    stack.enter_context(mock.patch.object(
                        module, name, self._wrap(f"{kind}:{label}", getattr(module, name))))
        for table_name, table in list(vars(ftrl_cpu).items()):
            if not (isinstance(table, dict) and table
                    and all(isinstance(f, Dispatcher) for f in table.values())):
                continue
            kind = "sparse" if "SPARSE" in table_name else "dense"
            stack.enter_context(mock.patch.dict(table, {
                key: self._wrap(f"{kind}:numba-"
                                f"{'parallel' if f.targetoptions.get('parallel') else 'serial'}", f)
                for key, f in table.items()}))
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stack.__exit__(*exc)

    def take(self) -> list[str]:
        events, self.events = sorted(self.events), []
        return events


def _events(path: str) -> list[str]:
    kind, impl = path.split(":")
    if impl == "torch-ops":
        return [path]
    return sorted([f"{kind}:numba", path])


def _dense_path(dtype: torch.dtype, state: torch.dtype, numel: int, differentiable: bool) -> str:
    """The documented dispatch: numba for f32/f64/bf16 θ (complex as its real view) with
    f32/f64 z and n (f32 for bf16 θ), parallel from 65,536 real elements; torch ops
    otherwise (fp16, half-precision state, bf16 with f64 state, differentiable=True)."""
    real, real_state = _real(dtype), _real(state)
    if (not differentiable and real in (torch.float32, torch.float64, torch.bfloat16)
            and real_state in (torch.float32, torch.float64)
            and (real != torch.bfloat16 or real_state == torch.float32)):
        return "dense:numba-parallel" if numel >= PARALLEL else "dense:numba-serial"
    return "dense:torch-ops"


def _sparse_path(dtype: torch.dtype, values: torch.dtype, state: torch.dtype, nnz_width: int) -> str:
    """The documented sparse dispatch: the numba row kernel for f32/f64/bf16 tables with
    f32/f64 gradient values and z, n (f32 for bf16), parallel from nnz·D ≥ 65,536; torch
    ops otherwise (fp16 tables, bf16 gradient values, half-precision state)."""
    if (dtype in (torch.float32, torch.float64, torch.bfloat16)
            and values in (torch.float32, torch.float64)
            and state in (torch.float32, torch.float64)
            and (dtype != torch.bfloat16 or state == torch.float32)):
        return "sparse:numba-parallel" if nnz_width >= PARALLEL else "sparse:numba-serial"
    return "sparse:torch-ops"


# ------------------------------------------------------------------ data and bounds


def _dyadic(shape: tuple[int, ...], gen: torch.Generator, zero_frac: float = 0.0) -> torch.Tensor:
    """±k/128 with 64 ≤ k < 256 (at most 8 significant bits) and exact zeros, float64."""
    k = torch.randint(64, 256, shape, generator=gen).to(torch.float64)
    sign = torch.randint(0, 2, shape, generator=gen).to(torch.float64) * 2 - 1
    keep = (torch.rand(shape, generator=gen) >= zero_frac).to(torch.float64)
    return sign * k / 128 * keep


def _as_dtype(real64: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A float64 tensor (with a trailing 2 for complex dtypes) in ``dtype``."""
    if dtype in COMPLEX:
        return torch.view_as_complex(real64.to(_real(dtype)).contiguous())
    return real64.to(dtype)


def _subnormal(dtype: torch.dtype) -> float:
    info = torch.finfo(_real(dtype))
    return info.smallest_normal * info.eps


def _within(actual: np.ndarray, expected: np.ndarray, bound: np.ndarray, what: str) -> None:
    err = np.abs(np.asarray(actual, np.float64) - expected)
    bad = ~(err <= bound)  # NaN fails too
    if bad.any():
        i = np.unravel_index(np.argmax(np.where(bad, np.nan_to_num(err, nan=np.inf) - bound,
                                                -np.inf)), err.shape)
        raise AssertionError(f"{what}: {int(bad.sum())} of {err.size} outside the bound; worst "
                             f"at {i}: ours {actual[i]!r}, reference {expected[i]!r}, bound "
                             f"{bound[i]!r}")


def _sum_scale(before: tuple[np.ndarray, ...], g: np.ndarray, n_star: np.ndarray,
               hp: dict[str, float]) -> np.ndarray:
    """S of the module docstring: what z's new value is summed from, in magnitude."""
    theta_prev, z_prev, _ = before
    return np.abs(z_prev) + np.abs(g) + 2 * np.sqrt(n_star) / hp["lr"] * np.abs(theta_prev)


def _check_bounds(after: tuple[np.ndarray, ...], star: tuple[np.ndarray, ...], scale: np.ndarray,
                  steps: int, hp: dict[str, float], dtype: torch.dtype, state: torch.dtype,
                  what: str) -> None:
    """(θ, z, n) against (θ*, z*, n*) within the module docstring's bounds, with ``scale``
    in place of S and n's rounding counted ``steps`` times."""
    theta_star, z_star, n_star = star
    u_p, u_s = UNIT[_real(dtype)], UNIT[_real(state)]
    denom = (hp["beta"] + np.sqrt(n_star)) / hp["lr"] + hp["l2"]
    # denom = 0 only where no gradient was ever seen (then z* = θ* = 0)
    gain = np.divide(1.0, denom, out=np.zeros_like(denom), where=denom > 0)
    theta, z, n = after
    _within(z, z_star, K * u_s * scale + _subnormal(state), f"{what} z")
    _within(n, n_star, steps * K * u_s * n_star + _subnormal(state), f"{what} n")
    _within(theta, theta_star, u_p * np.abs(theta_star)
            + K * u_s * (np.abs(theta_star) + (scale + hp["l1"]) * gain) + _subnormal(dtype),
            f"{what} θ")


def _check_step(after: tuple[np.ndarray, ...], before: tuple[np.ndarray, ...], g: np.ndarray,
                hp: dict[str, float], dtype: torch.dtype, state: torch.dtype, what: str) -> None:
    """One step (θ, z, n) against the exact float64 step from ``before`` (module docstring)."""
    theta_star, star = reference.ftrl(before[0], g, {"step": 0, "z": before[1], "n": before[2]},
                                      **hp)
    _check_bounds(after, (theta_star, star["z"], star["n"]), _sum_scale(before, g, star["n"], hp),
                  1, hp, dtype, state, what)


class Trajectory:
    """An independent float64 run beside the optimizer's, for float32/float64 runs (half
    precision has no fair whole-run oracle: see the module docstring). The bounds of
    `_check_step` carry over: an error in z moves the next σ·θ by at most σ·γ < 1 times
    itself, so a step at most doubles the error it inherits; S accumulates as
    ``scale ← 2·scale + S``."""

    def __init__(self, theta: np.ndarray, z: np.ndarray, n: np.ndarray, hp: dict[str, float],
                 dtype: torch.dtype, state: torch.dtype) -> None:
        self.arrays, self.hp, self.dtype, self.state = (theta, z, n), hp, dtype, state
        self.scale, self.steps = np.zeros_like(theta), 0
        self.on = _real(dtype) not in HALF and _real(state) not in HALF

    def step(self, g: np.ndarray, after: tuple[np.ndarray, ...], what: str,
             rows: np.ndarray | None = None) -> None:
        """Advance the float64 run by the gradient ``g`` (on the ``rows`` of a sparse
        step only, if given: the others keep θ, z and n) and hold ``after`` to it."""
        rows = Ellipsis if rows is None else rows
        before = tuple(a[rows] for a in self.arrays)
        theta, state = reference.ftrl(before[0], g[rows],
                                      {"step": 0, "z": before[1], "n": before[2]}, **self.hp)
        self.arrays = tuple(a.copy() for a in self.arrays)
        for array, new in zip(self.arrays, (theta, state["z"], state["n"])):
            array[rows] = new
        self.scale = self.scale.copy()
        self.scale[rows] = 2 * self.scale[rows] + _sum_scale(before, g[rows], state["n"], self.hp)
        self.steps += 1
        if self.on:  # θ rounded to its dtype enters the next z through σ·θ: the coarser unit
            coarser = max(self.dtype, self.state, key=lambda dtype: UNIT[_real(dtype)])
            _check_bounds(after, self.arrays, self.scale, self.steps, self.hp, self.dtype,
                          coarser, f"{what} (whole run)")


# ================================================================== closed forms


def _two_step_closed_form() -> tuple[float, float, float, float]:
    """α = 0.5, β = 1, λ1 = 0.1, λ2 = 0.2, n₀ = 0, θ₀ = 0.3, gradients 2 then -1, by hand:

    step 1: σ = (√4 - 0)/0.5 = 4, z = 2 - 4·0.3 = 0.8, n = 4,
            θ = -(0.8 - 0.1)/((1 + 2)/0.5 + 0.2) = -7/62;
    step 2: σ = (√5 - 2)/0.5, z = 0.8 - 1 + σ·7/62 = -0.2 + (7/31)(√5 - 2) ≈ -0.1467,
            n = 5, θ = -(z + 0.1)/((1 + √5)/0.5 + 0.2) ≈ 0.0070.
    Returns (z₁, θ₁, z₂, θ₂).
    """
    root5 = math.sqrt(5.0)
    z1, theta1 = 0.8, -7 / 62
    z2 = -0.2 + 7 / 31 * (root5 - 2)
    theta2 = -(z2 + 0.1) / (2 * (1 + root5) + 0.2)
    return z1, theta1, z2, theta2


TWO_STEP = dict(lr=0.5, beta=1.0, l1=0.1, l2=0.2)


def test_reference_two_step_closed_form():
    z1, theta1, z2, theta2 = _two_step_closed_form()
    theta, state = np.array([0.3]), reference.ftrl_init(np.array([0.3]))
    theta, state = reference.ftrl(theta, np.array([2.0]), state, **TWO_STEP)
    np.testing.assert_allclose([theta[0], state["z"][0], state["n"][0]], [theta1, z1, 4.0],
                               rtol=1e-15)
    theta, state = reference.ftrl(theta, np.array([-1.0]), state, **TWO_STEP)
    np.testing.assert_allclose([theta[0], state["z"][0], state["n"][0]], [theta2, z2, 5.0],
                               rtol=1e-14)
    assert state["step"] == 2


def test_reference_initial_accumulator_and_zero_gradient():
    """n₀ enters σ and the denominator; a zero gradient leaves z and n and gives back θ."""
    theta, state = reference.ftrl(np.array([0.0]), np.array([1.0]),
                                  reference.ftrl_init(np.zeros(1), 0.44), lr=0.5, beta=0.0)
    np.testing.assert_allclose(state["n"], [1.44])
    np.testing.assert_allclose(theta, [-1.0 / (1.2 / 0.5)], rtol=1e-15)
    again, after = reference.ftrl(theta, np.array([0.0]), state, lr=0.5, beta=0.0)
    assert np.array_equal(after["z"], state["z"]) and np.array_equal(after["n"], state["n"])
    assert np.array_equal(again, theta)


def _one_coordinate_runs() -> dict[str, Any]:
    """The two-step case on each path, as (make θ, make gradient) for one coordinate."""
    dense = lambda value, dtype: torch.tensor([value], dtype=dtype)  # noqa: E731
    table = lambda value, dtype: torch.tensor([[value]], dtype=dtype)  # noqa: E731
    sparse = lambda value, dtype: torch.sparse_coo_tensor(  # noqa: E731
        torch.tensor([[0]]), torch.tensor([[value]], dtype=dtype), (1, 1))
    return {"dense:numba-serial": (dense, dense, {}),
            "dense:torch-ops": (dense, dense, {"differentiable": True}),
            "sparse:numba-serial": (table, sparse, {})}


@pytest.mark.parametrize("path", list(_one_coordinate_runs()))
def test_two_step_closed_form_on_every_path(path):
    make_param, make_grad, extra = _one_coordinate_runs()[path]
    z1, theta1, z2, theta2 = _two_step_closed_form()
    leaf = make_param(0.3, torch.float64).requires_grad_(True)
    param = leaf.clone() if extra.get("differentiable") else leaf
    opt = FTRL([param], **TWO_STEP, **extra)
    with FtrlPathSpy() as spy:
        for g, (z, theta) in ((2.0, (z1, theta1)), (-1.0, (z2, theta2))):
            param.grad = make_grad(g, torch.float64)
            opt.step()
            assert spy.take() == _events(path)
            np.testing.assert_allclose(to64(param).reshape(-1), [theta], rtol=1e-14)
            np.testing.assert_allclose(to64(opt.state[param]["z"]).reshape(-1), [z], rtol=1e-14)
    np.testing.assert_allclose(to64(opt.state[param]["n"]).reshape(-1), [5.0], rtol=1e-15)
    assert float(opt.state[param]["step"]) == 2


def test_two_step_closed_form_torch_ops_rows():
    """The torch-ops row kernel (what fp16 tables and bf16 gradient rows take) on the
    two-step case in float64, called directly: the optimizer sends float64 tables to
    numba."""
    z1, theta1, z2, theta2 = _two_step_closed_form()
    table = torch.full((3, 1), 0.3, dtype=torch.float64)
    z, n = torch.zeros_like(table), torch.zeros_like(table)
    for g, (z_expected, theta_expected) in ((2.0, (z1, theta1)), (-1.0, (z2, theta2))):
        values = torch.tensor([[g / 2], [g / 2]], dtype=torch.float64)  # duplicates summed
        ftrl_portable.sparse_ftrl_(table, z, n, torch.tensor([1, 1]), values, FtrlRule(**TWO_STEP))
        np.testing.assert_allclose(to64(table).reshape(-1), [0.3, theta_expected, 0.3], rtol=1e-14)
        np.testing.assert_allclose(to64(z).reshape(-1), [0.0, z_expected, 0.0], rtol=1e-14)
    np.testing.assert_allclose(to64(n).reshape(-1), [0.0, 5.0, 0.0], rtol=1e-15)


L1_EXACT = 0.5  # exactly representable, so |z| ≤ λ1 reads the same in every dtype


def _zero_paths() -> list[tuple[str, torch.dtype, tuple[int, ...]]]:
    """(path, dtype, shape) for the exact-zero tests (fp16 left out: it may round a tiny
    nonzero θ to 0, which is rounding, not L1)."""
    return [("dense:numba-serial", torch.float32, (7, 9)),
            ("dense:numba-serial", torch.float64, (7, 9)),
            ("dense:numba-serial", torch.bfloat16, (7, 9)),
            ("dense:numba-parallel", torch.float32, (300, 300)),
            ("dense:torch-ops", torch.float32, (7, 9)),  # differentiable=True
            ("sparse:numba-serial", torch.float32, (40, 6)),
            ("sparse:numba-parallel", torch.float32, (3000, 64)),
            ("sparse:torch-ops", torch.bfloat16, (40, 6))]  # bf16 gradient values


def test_first_step_zeros_exactly_where_the_gradient_is_within_l1():
    """From θ = 0 and n = 0, z = g: θ is +0.0 exactly for |g| ≤ λ1 (the boundary
    included), and the closed form -(g - sign(g)·λ1)/((β + |g|)/α + λ2) elsewhere."""
    g = torch.tensor([0.5, -0.5, 0.25, 0.0, 0.75, -1.0], dtype=torch.float64)
    for differentiable in (False, True):
        leaf = torch.zeros(6, dtype=torch.float64, requires_grad=True)
        param = leaf.clone() if differentiable else leaf
        opt = FTRL([param], lr=0.5, beta=0.5, l1=L1_EXACT, l2=0.25, differentiable=differentiable)
        param.grad = g.clone()
        opt.step()
        theta = param.detach()
        assert torch.equal(theta[:4], torch.zeros(4, dtype=torch.float64))
        assert not torch.signbit(theta[:4]).any()
        expect = -(g[4:] - g[4:].sign() * L1_EXACT) / ((0.5 + g[4:].abs()) / 0.5 + 0.25)
        torch.testing.assert_close(theta[4:], expect, rtol=1e-15, atol=0)


@pytest.mark.parametrize("path,dtype,shape", _zero_paths(), ids=str)
def test_zeros_exactly_where_z_is_within_l1(path, dtype, shape):
    """Over many steps, θ == 0 exactly where the optimizer's own |z| ≤ λ1 and nowhere
    else, on every path; a good share of the coordinates are exact zeros."""
    gen = torch.Generator().manual_seed(3)
    sparse = path.startswith("sparse")
    differentiable = path == "dense:torch-ops"
    leaf = torch.randn(shape, generator=gen).to(dtype).requires_grad_(True)
    param = leaf.clone() if differentiable else leaf
    opt = FTRL([param], lr=0.3, beta=0.5, l1=L1_EXACT, l2=0.1, differentiable=differentiable)
    with FtrlPathSpy() as spy:
        for _ in range(6):
            g = _dyadic(shape, gen, zero_frac=0.3) / 2
            if sparse:  # the large table: nnz·D = 1,500·64 ≥ 65,536
                rows = torch.randint(0, shape[0], (shape[0] // 2,), generator=gen)
                param.grad = torch.sparse_coo_tensor(rows[None], g[: rows.numel()].to(dtype),
                                                     shape)
            else:
                param.grad = g.to(dtype)
            opt.step()
            assert spy.take() == _events(path)
    z = opt.state[param]["z"]
    theta = param.detach()
    touched = opt.state[param]["n"] > 0 if sparse else torch.ones(shape, dtype=torch.bool)
    within = z.abs() <= L1_EXACT
    assert torch.equal(theta[touched] == 0, within[touched])
    assert 0.05 < float(within[touched].float().mean()) < 0.95


# ================================================================== TensorFlow / Keras


def _tf_apply_ftrl(var, accum, linear, grad, *, lr, l1, l2, beta=0.0):
    """``tf.raw_ops.ApplyFtrl`` with ``lr_power=-0.5`` as its documentation writes it
    (float64), and Keras 3's ``Ftrl(beta=...)``, which adds ``beta/(2·lr)`` to l2::

        accum_new = accum + grad²
        linear   += grad - (accum_new^0.5 - accum^0.5) / lr · var
        quadratic = accum_new^0.5 / lr + 2·l2
        var       = (sign(linear)·l1 - linear) / quadratic  if |linear| > l1  else 0
    """
    accum_new = accum + grad * grad
    linear = linear + grad - (accum_new ** 0.5 - accum ** 0.5) / lr * var
    quadratic = accum_new ** 0.5 / lr + 2 * (l2 + beta / (2 * lr))
    var = np.where(np.abs(linear) > l1, (np.sign(linear) * l1 - linear) / quadratic, 0.0)
    return var, accum_new, linear


@pytest.mark.parametrize("keras_beta", [0.0, 0.5])
@pytest.mark.parametrize("differentiable", [False, True], ids=["numba", "torch-ops"])
def test_tensorflow_apply_ftrl_mapping(keras_beta, differentiable):
    """The docstring's mapping: TF's ApplyFtrl(lr, l1, l2) with accumulators from 0.1
    (Keras 3's Ftrl(beta=b)) is FTRL(lr, beta=b, l1, l2=2·l2, initial_accumulator_value=0.1)."""
    gen = torch.Generator().manual_seed(5)
    lr, l1, l2 = 0.2, 1.0, 0.15
    var = torch.randn(50, generator=gen, dtype=torch.float64)
    accum, linear = np.full(50, 0.1), np.zeros(50)
    tf_var = var.numpy().copy()
    leaf = var.clone().requires_grad_(True)
    param = leaf.clone() if differentiable else leaf
    opt = FTRL([param], lr=lr, beta=keras_beta, l1=l1, l2=2 * l2, initial_accumulator_value=0.1,
               differentiable=differentiable)
    for _ in range(10):
        g = torch.randn(50, generator=gen, dtype=torch.float64)
        param.grad = g.clone()
        opt.step()
        tf_var, accum, linear = _tf_apply_ftrl(tf_var, accum, linear, g.numpy(), lr=lr, l1=l1,
                                               l2=l2, beta=keras_beta)
    np.testing.assert_allclose(to64(param), tf_var, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(to64(opt.state[param]["z"]), linear, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(to64(opt.state[param]["n"]), accum, rtol=1e-14)
    assert (tf_var == 0).any() and (tf_var != 0).any()


# ================================================================== dense, every path


@st.composite
def _options(draw) -> dict[str, Any]:
    """Random keyword arguments for `FTRL` (None: leave the argument out)."""
    return dict(lr=draw(st.sampled_from([None, 0.01, 0.1, 0.5])),
                beta=draw(st.sampled_from([None, 0.0, 0.5, 2.0])),
                l1=draw(st.sampled_from([None, 0.0, 0.1, 1.0])),
                l2=draw(st.sampled_from([None, 0.0, 0.1, 1.0])),
                initial_accumulator_value=draw(st.sampled_from([None, 0.0, 0.1, 0.5])))


@dataclass
class DenseCase:
    path: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    kwargs: dict[str, Any]
    steps: int
    seed: int
    zero_frac: float

    @property
    def state(self) -> torch.dtype:
        return _state_dtype(self.dtype, self.kwargs.get("state_dtype"))

    @property
    def real_numel(self) -> int:
        return math.prod(self.shape) * (2 if self.dtype in COMPLEX else 1)


SMALL_SHAPES = st.lists(st.integers(1, 6), min_size=1, max_size=3).map(tuple)
EMPTY_SHAPES = st.sampled_from([(0,), (3, 0), (0, 2, 5)])
# (real-dtype shape, complex-dtype shape) with the same number of real coordinates
BELOW = [((PARALLEL - 1,), (PARALLEL // 2 - 1,))]  # one short of the threshold: serial
LARGE = [((PARALLEL,), (PARALLEL // 2,)), ((256, 257), (128, 257))]
LARGE_SLOW = LARGE + [((1024, 1025), (512, 1025)), ((3, 129, 170), (3, 129, 85))]


def _shape(draw, dtype: torch.dtype, size: str, large: list) -> tuple[int, ...]:
    kind = draw(st.sampled_from(["empty", "scalar", "small", "small", "below"])) \
        if size == "small" else "large"
    if kind == "empty":
        return draw(EMPTY_SHAPES)
    if kind == "scalar":
        return ()
    if kind == "small":
        return draw(SMALL_SHAPES)
    real_shape, complex_shape = draw(st.sampled_from(BELOW if kind == "below" else large))
    return complex_shape if dtype in COMPLEX else real_shape


DENSE_NUMBA_DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.complex64,
                      torch.complex128]
TORCH_OPS_VARIANTS = ["differentiable", "float16", "half state", "bf16 with float64 state"]


@st.composite
def dense_cases(draw, path: str, dtype: torch.dtype | None = None, variant: str = "",
                size: str = "large", large: list = LARGE) -> DenseCase:
    """A configuration that, by the documented rules, takes ``path`` ("numba" or
    "torch-ops"); ``size`` "small" draws empty, 0-d, small and one-short-of-parallel
    tensors, "large" ones of ≥ 65,536 real elements."""
    kw = draw(_options())
    if path == "numba":
        kw["state_dtype"] = draw(st.sampled_from([None, torch.float32] if dtype == torch.bfloat16
                                                 else [None, torch.float32, torch.float64]))
    elif variant == "differentiable":
        dtype = draw(st.sampled_from(DENSE_NUMBA_DTYPES + [torch.float16]))
        kw["state_dtype"] = draw(st.sampled_from([None, torch.float32, torch.float64]))
        kw["differentiable"] = True
    elif variant == "float16":
        dtype = torch.float16
        kw["state_dtype"] = draw(st.sampled_from([None, torch.float32, torch.float64,
                                                  torch.float16]))
    elif variant == "half state":
        dtype = draw(st.sampled_from([torch.float32, torch.float64]))
        kw["state_dtype"] = draw(st.sampled_from(HALF))
    else:
        dtype, kw["state_dtype"] = torch.bfloat16, torch.float64
    shape = _shape(draw, dtype, size, large)
    case = DenseCase("", dtype, shape, kw, draw(st.integers(1, 4 if size == "small" else 2)),
                     draw(st.integers(0, 2 ** 16)),
                     draw(st.sampled_from([0.0, 0.3])))
    case.path = _dense_path(dtype, case.state, case.real_numel, bool(kw.get("differentiable")))
    assert case.path.startswith(f"dense:{path}"), case
    return case


def _initial(shape: tuple[int, ...], n0: float, state: torch.dtype) -> tuple[np.ndarray, np.ndarray]:
    """z₀ = 0 and n₀ as the state holds them (n₀ rounded to the state's dtype)."""
    return np.zeros(shape), np.full(shape, float(torch.tensor(n0, dtype=_real(state))))


def _run_dense(case: DenseCase) -> None:
    hp, n0 = _hp(case.kwargs)
    gen = torch.Generator().manual_seed(case.seed)
    real_shape = case.shape + ((2,) if case.dtype in COMPLEX else ())
    start = torch.randn(real_shape, generator=gen, dtype=torch.float64).clamp_(-2, 2)
    leaf = _as_dtype(start, case.dtype).requires_grad_(True)
    differentiable = bool(case.kwargs.get("differentiable"))
    param = leaf.clone() if differentiable else leaf  # torch.optim's differentiable mode
    opt = FTRL([param], **_ftrl_kwargs(case.kwargs))
    run = Trajectory(to64(param), *_initial(real_shape, n0, case.state), hp, case.dtype,
                     case.state)
    with FtrlPathSpy() as spy:
        for t in range(1, case.steps + 1):
            g = _as_dtype(_dyadic(real_shape, gen, case.zero_frac), case.dtype)
            state = opt.state.get(param)
            before = ((to64(param), to64(state["z"]), to64(state["n"])) if state
                      else (to64(param), *_initial(real_shape, n0, case.state)))
            param.grad = g.clone()
            opt.step()
            assert spy.take() == _events(case.path), f"step {t} did not take {case.path}"
            state = opt.state[param]
            assert state["z"].dtype == state["n"].dtype == case.state
            assert param.dtype == case.dtype and tuple(param.shape) == case.shape
            assert float(state["step"]) == t
            after = (to64(param), to64(state["z"]), to64(state["n"]))
            _check_step(after, before, to64(g), hp, case.dtype, case.state, f"step {t}")
            run.step(to64(g), after, f"step {t}")
    if differentiable:
        assert param.grad_fn is not None  # the step was recorded by autograd


@pytest.mark.parametrize("dtype", DENSE_NUMBA_DTYPES, ids=str)
@settings(max_examples=N_DEFAULT)
@given(data=st.data())
def test_dense_numba_kernels(dtype, data):
    """Numba dense kernel, serial: f32/f64/bf16/complex θ, f32/f64 state; empty, 0-d,
    small and one short of 65,536 elements; every option."""
    _run_dense(data.draw(dense_cases("numba", dtype, size="small"), label="case"))


@pytest.mark.parametrize("dtype", DENSE_NUMBA_DTYPES, ids=str)
@settings(max_examples=N_LARGE)
@given(data=st.data())
def test_dense_numba_kernels_parallel(dtype, data):
    """Numba dense kernel, parallel: ≥ 65,536 real elements, every option."""
    _run_dense(data.draw(dense_cases("numba", dtype, size="large"), label="case"))


@pytest.mark.parametrize("variant", TORCH_OPS_VARIANTS)
@settings(max_examples=N_DEFAULT)
@given(data=st.data())
def test_dense_torch_ops_path(variant, data):
    """The torch-ops kernel: differentiable=True (every dtype), fp16 θ, half-precision
    state of f32/f64 θ, bf16 θ with float64 state; every shape class and option."""
    _run_dense(data.draw(dense_cases("torch-ops", variant=variant, size="small"), label="case"))


@pytest.mark.parametrize("variant", TORCH_OPS_VARIANTS)
@settings(max_examples=N_LARGE)
@given(data=st.data())
def test_dense_torch_ops_path_large(variant, data):
    _run_dense(data.draw(dense_cases("torch-ops", variant=variant, size="large"), label="case"))


@pytest.mark.slow
@pytest.mark.parametrize("size", ["small", "large"])
@pytest.mark.parametrize("dtype", DENSE_NUMBA_DTYPES, ids=str)
@settings(max_examples=N_SLOW)
@given(data=st.data())
def test_dense_numba_kernels_slow(dtype, size, data):
    _run_dense(data.draw(dense_cases("numba", dtype, size=size, large=LARGE_SLOW), label="case"))


@pytest.mark.slow
@pytest.mark.parametrize("size", ["small", "large"])
@pytest.mark.parametrize("variant", TORCH_OPS_VARIANTS)
@settings(max_examples=N_SLOW)
@given(data=st.data())
def test_dense_torch_ops_path_slow(variant, size, data):
    _run_dense(data.draw(dense_cases("torch-ops", variant=variant, size=size, large=LARGE_SLOW),
                         label="case"))


# ================================================================== sparse, every path


@dataclass
class SparseCase:
    path: str
    dtype: torch.dtype  # the table's
    values_dtype: torch.dtype  # the gradient's (another than the table's: through step_rows)
    layout: str  # "2d", "1d", "3d" (sparse_dim 1) or "sparse_dim2" (on a matrix)
    shape: tuple[int, ...]
    nnz: int
    id_range: int  # ids drawn below it: duplicates, and rows never touched
    kwargs: dict[str, Any]
    steps: int
    seed: int

    @property
    def state(self) -> torch.dtype:
        return _state_dtype(self.dtype, self.kwargs.get("state_dtype"))

    @property
    def rows(self) -> int:
        return self.shape[0] * self.shape[1] if self.layout == "sparse_dim2" else self.shape[0]


SPARSE_DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
# The default pass: the numba row kernels compiled for float32 tables only (float64 and bf16
# tables are compilations of their own, drawn in `test_sparse_steps_slow`), and fp16 (torch ops)
DEFAULT_SPARSE_DTYPES = [torch.float32, torch.float16]


@st.composite
def sparse_cases(draw, dtype: torch.dtype, size: str = "small") -> SparseCase:
    """A sparse configuration; "large" has nnz·D ≥ 65,536 (the numba row kernels'
    parallel threshold)."""
    kw = draw(_options())
    kw["state_dtype"] = draw(st.sampled_from(
        [None, torch.float32] if dtype in HALF else [None, torch.float32, torch.float64]))
    if size == "large":
        layout, shape, nnz = "2d", (draw(st.sampled_from([1100, 1500])), 64), 1100
    else:
        layout = draw(st.sampled_from(["2d", "2d", "1d", "3d", "sparse_dim2"]))
        rows = draw(st.integers(1, 30))
        shape = {"2d": (rows, draw(st.integers(1, 5))), "1d": (rows,),
                 "3d": (rows, 2, draw(st.integers(1, 3))),
                 "sparse_dim2": (rows, draw(st.integers(1, 4)))}[layout]
        nnz = draw(st.integers(0, 40))
    values_dtype = draw(st.sampled_from([dtype, torch.float32] if dtype in HALF else [dtype]))
    case = SparseCase("", dtype, values_dtype, layout, shape, nnz, 0, kw,
                      draw(st.integers(1, 4 if size == "small" else 2)),
                      draw(st.integers(0, 2 ** 16)))
    case.id_range = max(1, case.rows * 3 // 4)
    width = math.prod(shape) // case.rows
    case.path = _sparse_path(dtype, values_dtype, case.state, nnz * width)
    return case


def _sparse_grad(case: SparseCase, gen: torch.Generator) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """An uncoalesced COO gradient of the case's parameter, with its flat row ids and
    values (float64, ``(nnz, width)``)."""
    flat = torch.randint(0, case.id_range, (case.nnz,), generator=gen)
    if case.layout == "sparse_dim2":
        indices = torch.stack([flat // case.shape[1], flat % case.shape[1]])
        row_shape: tuple[int, ...] = ()
    else:
        indices, row_shape = flat[None], case.shape[1:]
    values = _dyadic((case.nnz,) + row_shape, gen, zero_frac=0.1)
    grad = torch.sparse_coo_tensor(indices, values.to(case.values_dtype), case.shape)
    width = math.prod(case.shape) // case.rows
    return grad, flat.numpy(), values.reshape(case.nnz, width).numpy()


def _sparse_reference(theta, z, n, flat, values, hp):
    """:ref:`algo-sparse` + :ref:`algo-ftrl` on ``(rows, width)`` float64 arrays: duplicates summed, the formula on the
    touched rows, the others unchanged. Returns new arrays and the touched rows."""
    touched = np.unique(flat)
    g = np.zeros_like(theta)
    np.add.at(g, flat, values)
    theta, z, n = theta.copy(), z.copy(), n.copy()
    rows_theta, rows_state = reference.ftrl(theta[touched], g[touched],
                                            {"step": 0, "z": z[touched], "n": n[touched]}, **hp)
    theta[touched], z[touched], n[touched] = rows_theta, rows_state["z"], rows_state["n"]
    return theta, z, n, touched, g


def _run_sparse(case: SparseCase) -> None:
    hp, n0 = _hp(case.kwargs)
    gen = torch.Generator().manual_seed(case.seed)
    start = torch.randn(case.shape, generator=gen, dtype=torch.float64).clamp_(-2, 2)
    param = start.to(case.dtype).requires_grad_(True)
    opt = FTRL([param], **_ftrl_kwargs(case.kwargs))
    width = math.prod(case.shape) // case.rows
    table = lambda t: to64(t).reshape(case.rows, width)  # noqa: E731
    start = (table(param), *(a.reshape(case.rows, width) for a in _initial(case.shape, n0,
                                                                          case.state)))
    run = Trajectory(*start, hp, case.dtype, case.state)
    with FtrlPathSpy() as spy:
        for t in range(1, case.steps + 1):
            grad, flat, values = _sparse_grad(case, gen)
            state = opt.state.get(param)
            before = ((table(param), table(state["z"]), table(state["n"])) if state
                      else start)  # no state yet: θ₀, z₀ = 0, n₀
            if case.values_dtype == case.dtype:
                param.grad = grad
                opt.step()
            else:  # what a fused layer hands over: rows of another dtype than the table's
                opt.step_rows(param, SparseGrad(param.detach().view(case.rows, width),
                                                torch.from_numpy(flat),
                                                torch.from_numpy(values).to(case.values_dtype)))
            assert spy.take() == _events(case.path), f"step {t} did not take {case.path}"
            state = opt.state[param]
            assert state["z"].dtype == state["n"].dtype == case.state
            assert float(state["step"]) == t
            after = (table(param), table(state["z"]), table(state["n"]))
            *_, touched, g = _sparse_reference(*before, flat, values, hp)
            untouched = np.setdiff1d(np.arange(case.rows), touched)
            for name, new, old in zip("θzn", after, before):  # untouched rows: exactly kept
                assert np.array_equal(new[untouched], old[untouched]), f"step {t}: {name}"
            _check_step(tuple(a[touched] for a in after), tuple(b[touched] for b in before),
                        g[touched], hp, case.dtype, case.state, f"step {t}")
            run.step(g, after, f"step {t}", rows=touched)


@pytest.mark.parametrize("dtype", DEFAULT_SPARSE_DTYPES, ids=str)
@settings(max_examples=N_DEFAULT)
@given(data=st.data())
def test_sparse_steps(dtype, data):
    """Sparse COO gradients with duplicates on 1-d, 2-d and 3-d tables and sparse_dim=2,
    empty ones included (and float32 rows for bf16/fp16 tables, through step_rows):
    touched rows get :ref:`algo-ftrl` with the summed gradient, the others keep θ, z and n bit for bit;
    every option and state dtype."""
    _run_sparse(data.draw(sparse_cases(dtype), label="case"))


@pytest.mark.parametrize("dtype", DEFAULT_SPARSE_DTYPES, ids=str)
@settings(max_examples=N_LARGE)
@given(data=st.data())
def test_sparse_steps_large(dtype, data):
    """As `test_sparse_steps` with nnz·D ≥ 65,536 (1,100 ids on tables of 1,100-1,500
    rows of 64)."""
    _run_sparse(data.draw(sparse_cases(dtype, size="large"), label="case"))


@pytest.mark.slow
@pytest.mark.parametrize("size", ["small", "large"])
@pytest.mark.parametrize("dtype", SPARSE_DTYPES, ids=str)
@settings(max_examples=N_SLOW)
@given(data=st.data())
def test_sparse_steps_slow(dtype, size, data):
    _run_sparse(data.draw(sparse_cases(dtype, size=size), label="case"))


# ================================================================== sparse == dense


def _dense_twin_kwargs(dtype: torch.dtype) -> dict[str, Any]:
    """Options that put the dense run on the kernel family of the sparse run of a table
    of ``dtype`` (each family rounds its own way; within one, a zero gradient gives back
    θ, z and n bit for bit): differentiable=True is the torch-ops one."""
    sparse = _sparse_path(dtype, dtype, _state_dtype(dtype, None), 1)
    dense = _dense_path(dtype, _state_dtype(dtype, None), 1, False)
    family = lambda path: path.split(":")[1].split("-")[0]  # noqa: E731
    return {} if family(sparse) == family(dense) else {"differentiable": True}


def _exact(t: torch.Tensor) -> torch.Tensor:
    """A tensor's bits (so -0.0 ≠ 0.0)."""
    size = t.element_size()
    return t.detach().contiguous().view({2: torch.int16, 4: torch.int32, 8: torch.int64}[size])


@pytest.mark.parametrize("start", ["zero", "random"])
@pytest.mark.parametrize("dtype", SPARSE_DTYPES, ids=str)
def test_sparse_equals_dense(dtype, start):
    """The same gradients, sparse (duplicates, uncoalesced) and densified. A zero
    gradient gives σ = 0, so z, n and θ = closed form of (z, n) are kept: from θ₀ = 0,
    θ, z and n are bit-identical on every row at every step. From a random θ₀ a dense
    step sets every coordinate without gradient to the closed form of (0, n₀), which is
    0, where the sparse step keeps θ₀ (as TensorFlow's ops do): rows touched at the first
    step are bit-identical throughout; a row first touched later starts σ·θ from θ₀
    (sparse) or 0 (dense), and a row never touched keeps θ₀ (sparse) or is 0 (dense)."""
    rows, width, never = 30, 4, 5  # ids < rows - never: the last rows are never touched
    gen = torch.Generator().manual_seed(11)
    theta0 = (torch.randn(rows, width, generator=gen).to(dtype) if start == "random"
              else torch.zeros(rows, width, dtype=dtype))
    hp = dict(lr=0.3, beta=0.5, l1=0.05, l2=0.1, initial_accumulator_value=0.25)
    sparse_param = theta0.clone().requires_grad_(True)
    dense_leaf = theta0.clone().requires_grad_(True)
    twin = _dense_twin_kwargs(dtype)
    dense_param = dense_leaf.clone() if twin else dense_leaf
    sparse_opt, dense_opt = FTRL([sparse_param], **hp), FTRL([dense_param], **hp, **twin)
    first_step = seen = None
    for _ in range(6):
        ids = torch.randint(0, rows - never, (12,), generator=gen)  # duplicates, gaps
        values = torch.randint(-3, 4, (12, width), generator=gen).to(torch.float64) / 4
        grad = torch.sparse_coo_tensor(ids[None], values.to(dtype), (rows, width))
        dense = torch.zeros(rows, width, dtype=torch.float64).index_add_(0, ids, values)
        sparse_param.grad, dense_param.grad = grad, dense.to(dtype)  # sums exact in dtype
        sparse_opt.step()
        dense_opt.step()
        touched = torch.zeros(rows, dtype=torch.bool).index_fill_(0, ids, True)
        first_step = touched if first_step is None else first_step
        seen = touched if seen is None else seen | touched
        same = first_step if start == "random" else torch.ones(rows, dtype=torch.bool)
        s, d = sparse_opt.state[sparse_param], dense_opt.state[dense_param]
        for name, a, b in (("θ", sparse_param, dense_param), ("z", s["z"], d["z"]),
                           ("n", s["n"], d["n"])):
            assert torch.equal(_exact(a[same]), _exact(b[same])), name
    assert not seen[-never:].any() and (seen & ~first_step).any()
    unseen = ~seen
    assert torch.equal(sparse_param.detach()[unseen], theta0[unseen])
    assert torch.equal(_exact(dense_param[unseen]), _exact(torch.zeros_like(theta0[unseen])))
    assert (s["z"][unseen] == 0).all() and (s["n"][unseen] == 0.25).all()
    assert torch.equal(s["n"], d["n"])  # n never depends on θ
    if start == "random":  # the documented difference: later first touches start elsewhere
        later = seen & ~first_step
        assert not torch.equal(s["z"][later], d["z"][later])


# ================================================================== fused layers


def _fused_pair(kind: str, dtype: torch.dtype, layer_kwargs: dict[str, Any],
                hp: dict[str, Any]):
    """torch's sparse layer with FTRL.step(), and ours with FTRL inside backward, from
    equal weights."""
    torch.manual_seed(0)
    torch_cls, ours_cls = ((torch.nn.EmbeddingBag, adagrad.nn.EmbeddingBag) if kind == "bag"
                           else (torch.nn.Embedding, adagrad.nn.Embedding))
    theirs = torch_cls(40, 5, sparse=True, **layer_kwargs).to(dtype)
    with torch.no_grad():
        theirs.weight.mul_(0.1)  # small enough for L1 to zero some coordinates
    ours = ours_cls(40, 5, **layer_kwargs).to(dtype)
    ours.load_state_dict(theirs.state_dict())
    their_opt, our_opt = FTRL(theirs.parameters(), **hp), FTRL(ours.parameters(), **hp)
    assert ours.update_in_backward(our_opt) is ours
    return theirs, their_opt, ours, our_opt


def _fused_batches(kind: str, steps: int, with_weights: bool):
    gen = torch.Generator().manual_seed(2)
    out = []
    for _ in range(steps):
        ids = torch.randint(0, 6, (20,), generator=gen) * torch.randint(0, 5, (20,), generator=gen)
        offsets = torch.tensor([0, 3, 3, 9, 14]) if kind == "bag" else None
        weights = torch.rand(20, generator=gen) if with_weights else None
        out.append((ids if kind == "bag" else ids.view(4, 5), offsets, weights))
    return out


def _train(layer, opt, batches, head):
    for ids, offsets, weights in batches:
        opt.zero_grad(set_to_none=True)
        if offsets is None:
            out = layer(ids).sum(1)
        else:
            out = layer(ids, offsets, per_sample_weights=None if weights is None
                        else weights.to(head.dtype))
        y = out @ head
        (((y - 1) ** 2).sum() + 0.1 * (y ** 3).sum()).backward()
        opt.step()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("kind,mode,with_weights", [("bag", "sum", False), ("bag", "mean", False),
                                                    ("bag", "sum", True), ("embedding", None, False)])
def test_fused_layers_equal_torch_layer_and_step(kind, mode, with_weights, dtype):
    """adagrad.nn.EmbeddingBag / Embedding with update_in_backward(FTRL) equal torch's
    sparse layer trained by FTRL.step() (weights, z, n, step), with an L1 that zeroes
    rows' coordinates. A few ulps in float32: duplicate sums feed back in another order."""
    layer_kwargs = {"mode": mode} if kind == "bag" else {}
    hp = dict(lr=0.2, beta=0.5, l1=0.5, l2=0.1)
    theirs, their_opt, ours, our_opt = _fused_pair(kind, dtype, layer_kwargs, hp)
    batches = _fused_batches(kind, 5, with_weights)
    head = torch.randn(5, dtype=dtype)
    _train(theirs, their_opt, batches, head)
    _train(ours, our_opt, batches, head)
    assert ours.weight.grad is None  # the update happened in backward; step() skipped it
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-12, "atol": 1e-14}
    their_state, our_state = their_opt.state[theirs.weight], our_opt.state[ours.weight]
    torch.testing.assert_close(ours.weight.detach(), theirs.weight.detach(), **tol)
    for key in ("z", "n"):
        torch.testing.assert_close(our_state[key], their_state[key], **tol)
    assert float(our_state["step"]) == float(their_state["step"]) == 5
    assert (ours.weight.detach() == 0).any()


# ================================================================== state and checkpoints


def test_state_is_lazy_on_the_parameters_device_with_the_dtype_policy():
    half, single = torch.zeros(3, 2, dtype=torch.bfloat16), torch.zeros(4)
    wide = torch.zeros(2, dtype=torch.float32)
    opt = FTRL([{"params": [half, single]}, {"params": [wide], "state_dtype": torch.float64}],
               initial_accumulator_value=0.1)
    assert not opt.state
    for p in (half, single, wide):
        p.grad = torch.ones_like(p)
    opt.step()
    for p, dtype in ((half, torch.float32), (single, torch.float32), (wide, torch.float64)):
        state = opt.state[p]
        assert set(state) == {"step", "z", "n"}
        assert state["z"].dtype == state["n"].dtype == dtype
        assert state["z"].shape == state["n"].shape == p.shape
        assert state["z"].device == p.device
        assert float(state["step"]) == 1
    torch.testing.assert_close(opt.state[single]["n"], torch.full((4,), 1.1))


def _model_and_optimizer(dtype: torch.dtype = torch.float32, fused: bool = False):
    torch.manual_seed(0)
    table = (adagrad.nn.EmbeddingBag(30, 4, mode="sum") if fused
             else torch.nn.EmbeddingBag(30, 4, mode="sum", sparse=True))
    model = torch.nn.ModuleDict({"table": table, "head": torch.nn.Linear(4, 1)}).to(dtype)
    opt = FTRL([{"params": [model["table"].weight], "l1": 0.02},
                {"params": model["head"].parameters(), "beta": 0.0, "l2": 0.1}],
               lr=0.2, initial_accumulator_value=0.05)
    if fused:
        model["table"].update_in_backward(opt)
    return model, opt


def _train_steps(model, opt, start: int, stop: int) -> None:
    for step in range(start, stop):
        gen = torch.Generator().manual_seed(100 + step)
        ids = torch.randint(0, 25, (16,), generator=gen)
        offsets = torch.arange(0, 16, 4)
        opt.zero_grad(set_to_none=True)
        y = model["head"](model["table"](ids, offsets)).squeeze(1)
        ((y.float() - 1) ** 2).sum().backward()
        opt.step()


def _bits_of(obj: Any) -> Any:
    """Tensors as their bits (so a comparison is bit for bit), recursively."""
    if isinstance(obj, torch.Tensor):
        return _exact(obj) if obj.is_floating_point() else obj
    if isinstance(obj, dict):
        return {k: _bits_of(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_bits_of(v) for v in obj]
    return obj


def _assert_bit_identical(a: Any, b: Any, where: str = "") -> None:
    a, b = _bits_of(a), _bits_of(b)
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_bit_identical(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_bit_identical(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


@pytest.mark.parametrize("dtype,fused", [(torch.float32, False), (torch.bfloat16, False),
                                         (torch.float32, True)], ids=str)
def test_resume_from_a_mid_run_checkpoint_is_bit_identical(dtype, fused):
    """Save model and optimizer at step 3 (torch.save), load into fresh objects, train on:
    parameters and optimizer state end bit-identical to the run that never stopped (dense
    head, sparse or fused table; bf16 keeps its float32 z and n through the load)."""
    model, opt = _model_and_optimizer(dtype, fused)
    _train_steps(model, opt, 0, 3)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, buffer)
    _train_steps(model, opt, 3, 7)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    resumed_model, resumed_opt = _model_and_optimizer(dtype, fused)
    resumed_model.load_state_dict(saved["model"])
    resumed_opt.load_state_dict(saved["optimizer"])
    for state in resumed_opt.state.values():
        assert state["z"].dtype == state["n"].dtype == _state_dtype(dtype, None)
    _train_steps(resumed_model, resumed_opt, 3, 7)
    _assert_bit_identical(model.state_dict(), resumed_model.state_dict(), "model")
    _assert_bit_identical(opt.state_dict(), resumed_opt.state_dict(), "optimizer")
    assert any((s["z"] < 0).any() for s in opt.state.values())  # signed z loads back


def test_state_dict_round_trip_keeps_groups_and_state():
    model, opt = _model_and_optimizer()
    _train_steps(model, opt, 0, 2)
    other_model, other = _model_and_optimizer()
    other.load_state_dict(copy.deepcopy(opt.state_dict()))
    assert [g["l1"] for g in other.param_groups] == [0.02, 0.0]
    assert [g["beta"] for g in other.param_groups] == [1.0, 0.0]
    _assert_bit_identical(opt.state_dict(), other.state_dict())


def _adagrad_and_ftrl_checkpoints():
    p = torch.zeros(5, 3)
    p.grad = torch.ones(5, 3)
    theirs = Adagrad([p])
    theirs.step()
    q = torch.zeros(5, 3)
    q.grad = -torch.ones(5, 3)
    ours = FTRL([q])
    ours.step()
    return theirs.state_dict(), ours.state_dict()


def test_adagrad_checkpoint_refused_by_ftrl_and_back():
    """Each class refuses the other's checkpoint with a ValueError that says so, and is
    left as it was."""
    adagrad_ckpt, ftrl_ckpt = _adagrad_and_ftrl_checkpoints()
    param = torch.zeros(5, 3)
    ftrl = FTRL([param])
    with pytest.raises(ValueError, match="lacks 'beta', 'l1', 'l2'.*not a checkpoint of FTRL"):
        ftrl.load_state_dict(adagrad_ckpt)
    assert not ftrl.state and ftrl.param_groups[0]["beta"] == 1.0
    other = Adagrad([torch.zeros(5, 3)])
    with pytest.raises(ValueError, match="not a checkpoint of Adagrad"):
        other.load_state_dict(ftrl_ckpt)
    assert not other.state
    # with the group keys forged, the state itself is still refused
    forged = copy.deepcopy(adagrad_ckpt)
    forged["param_groups"][0].update(beta=1.0, l1=0.0, l2=0.0)
    with pytest.raises(ValueError, match="'sum', which FTRL does not keep"):
        ftrl.load_state_dict(forged)


@pytest.mark.parametrize("edit,message", [
    (lambda s: s["state"][0].update(n=-s["state"][0]["n"]), "'n' holds negative values"),
    (lambda s: s["state"][0].update(z=torch.zeros(2)), r"'z' has shape \(2,\), expected \(5, 3\)"),
    (lambda s: s["state"][0].pop("z"), "lacks 'z'"),
    (lambda s: s["param_groups"][0].update(beta=-1.0), "beta"),
    (lambda s: s["param_groups"][0].update(lr=0.0), "lr"),
], ids=["negative n", "z shape", "no z", "negative beta", "zero lr"])
def test_invalid_ftrl_checkpoints_are_refused(edit, message):
    _, ftrl_ckpt = _adagrad_and_ftrl_checkpoints()
    assert (ftrl_ckpt["state"][0]["z"] < 0).any() or (ftrl_ckpt["state"][0]["z"] > 0).any()
    edit(ftrl_ckpt)
    opt = FTRL([torch.zeros(5, 3)])
    with pytest.raises(ValueError, match=message):
        opt.load_state_dict(ftrl_ckpt)
    assert not opt.state


# ================================================================== errors


@pytest.mark.parametrize("name,value", [("lr", -0.1), ("lr", 0.0), ("lr", math.nan),
                                        ("beta", -1.0), ("l1", -1e-3), ("l2", -2.0),
                                        ("initial_accumulator_value", -0.5),
                                        ("beta", math.nan)])
def test_invalid_hyperparameters_name_the_argument(name, value):
    pattern = rf"{value}.*argument `{name}` must be"
    with pytest.raises(ValueError, match=pattern):
        FTRL([torch.zeros(2)], **{name: value})
    opt = FTRL([torch.zeros(2)])
    with pytest.raises(ValueError, match=pattern):
        opt.add_param_group({"params": [torch.zeros(3)], name: value})


def test_invalid_state_dtype_and_tensor_lr():
    with pytest.raises(ValueError, match="state_dtype"):
        FTRL([torch.zeros(2)], state_dtype=torch.int32)
    with pytest.raises(ValueError, match="argument `lr` must be > 0"):
        FTRL([torch.zeros(2)], lr=torch.tensor(-1.0))
    p = torch.zeros(2)
    p.grad = torch.ones(2)
    FTRL([p], lr=torch.tensor(0.5)).step()  # a 1-element tensor lr is a number
    np.testing.assert_allclose(to64(p), [-0.5 / 2, -0.5 / 2])  # -g/((β + |g|)/α)


def test_unsupported_sparse_cases_raise_before_any_write():
    table = torch.zeros(6, 2, requires_grad=True)
    grad = torch.sparse_coo_tensor(torch.tensor([[1, 9]]), torch.ones(2, 2), (10, 2))
    opt = FTRL([table])
    table.grad = torch.sparse_coo_tensor(torch.tensor([[1, 7]]), torch.ones(2, 2), (6, 2),
                                         check_invariants=False)
    with pytest.raises(IndexError, match="index 7 is out of range for a table of 6 rows"):
        opt.step()
    assert not opt.state and not table.detach().any()
    leaf = torch.zeros(10, 2, requires_grad=True)
    param = leaf.clone()
    opt = FTRL([param], differentiable=True)
    param.grad = grad
    with pytest.raises(RuntimeError, match="differentiable=True does not support sparse"):
        opt.step()
    assert not opt.state
    complex_table = torch.zeros(10, 2, dtype=torch.complex64)
    complex_table.grad = torch.sparse_coo_tensor(torch.tensor([[1]]),
                                                 torch.ones(1, 2, dtype=torch.complex64), (10, 2))
    with pytest.raises(ValueError, match="complex"):
        FTRL([complex_table]).step()


def test_exported():
    assert adagrad.FTRL is FTRL and "FTRL" in adagrad.__all__ and "FTRL" in adagrad.optim.__all__
    assert FtrlRule(lr=0.1) == FtrlRule(0.1, 1.0, 0.0, 0.0)


def test_parallel_sparse_kernel_is_bit_identical_at_one_and_two_threads():
    """The parallel row kernel shares rows out by hash over the threads; each row's
    duplicates are summed in position order, so 1 and 2 threads give the same bits (and
    a row written by the wrong thread, or twice, would show)."""
    import numba

    gen = torch.Generator().manual_seed(8)
    ids = torch.randint(0, 600, (2000,), generator=gen)  # 2000·64 ≥ 65,536: parallel
    values = torch.randn(2000, 64, generator=gen)
    start = torch.randn(800, 64, generator=gen)
    results = []
    before = numba.get_num_threads()
    try:
        for threads in (1, 2):
            numba.set_num_threads(threads)
            table, z, n = start.clone(), torch.zeros(800, 64), torch.full((800, 64), 0.1)
            with FtrlPathSpy() as spy:
                for _ in range(2):
                    ftrl_cpu.sparse_ftrl_(table, z, n, ids, values, FtrlRule(0.1, 1.0, 0.01, 0.1))
                assert spy.take() == ["sparse:numba", "sparse:numba", "sparse:numba-parallel",
                                      "sparse:numba-parallel"]
            results.append((table, z, n))
    finally:
        numba.set_num_threads(before)
    for one, two in zip(*results):
        assert torch.equal(_exact(one), _exact(two))
    untouched = torch.ones(800, dtype=torch.bool).index_fill_(0, ids, False)
    assert torch.equal(results[0][0][untouched], start[untouched])
