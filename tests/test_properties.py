"""Property tests over every update path of `adagrad.Adagrad` (:ref:`algo-adagrad`, :ref:`algo-sparse`).

Each test draws a random configuration (every option, dtype and shape class, including
empty and 0-d tensors and tensors large enough for the parallel kernels), runs a few
steps, and holds the result to the float64 rules of `adagrad.reference`. Each test is
about one path and proves that path really ran: `PathSpy` wraps torch's
`torch._fused_adagrad_`, the kernel entry points of `adagrad.kernels` and the numba
dispatch tables (serial and parallel kernels told apart by numba's own ``parallel``
option), and the events of every step must be exactly the path the test claims.
Which path a configuration takes is decided here, from the documented rules, never by
asking the code under test:

- dense, torch's fused CPU kernel: ≥ 65,536 real elements, ε outside, ρ = 1, no or
  coupled weight decay, accumulator dtype = parameter dtype, not differentiable;
- dense, numba: float32/float64/bfloat16 parameters (bfloat16 with a float32 sum) with a
  float32/float64 sum, serial below 65,536 elements, parallel from there (a group's
  tensors of one step count in one call of `dense_adagrad_batch_`: one serial kernel for
  the small ones, one parallel kernel for the large);
- dense, torch ops (`adagrad.kernels.portable`): ``differentiable=True``, float16
  parameters, half-precision accumulators, bfloat16 with a float64 sum;
- sparse, numba: float32/float64/bfloat16 tables with float32/float64 gradient values
  and sums, parallel from nnz·D ≥ 65,536; sparse, torch ops: everything else (float16
  or bfloat16 gradient values, half-precision sums);
- the fused layers `adagrad.nn.EmbeddingBag(mode="sum")` / `adagrad.nn.Embedding`, whose
  backward takes the sparse kernels.

How results are compared (`_check_step`): every step is checked *one step at a time*:
the reference is started from the parameter and accumulator the optimizer holds before
the step (both exactly representable in their dtypes), with the step count, learning
rate schedule and lazy-decay bookkeeping kept by the reference itself, and the
optimizer's result must lie within

    |θ - θ*| ≤ u_θ·|θ*| + K·u_G·(|θ_prev| + lr_t)       |G - G*| ≤ K·u_G·|G*|

of the exact float64 step (θ*, G*), where u_θ, u_G are the unit roundoffs of the
parameter's and the accumulator's dtypes. That is one correct rounding of θ to its own
dtype (what the kernels do: they compute in the accumulator's dtype and round the new θ
to the parameter's, round to nearest even for bf16/fp16) plus the arithmetic of one
step in the accumulator's precision (|update| ≤ lr_t since G ≥ g²). For bf16/fp16
parameters this is the sound comparison: a float64 trajectory would drift from any
correct half-precision run by the rounding of θ at every step, whereas re-starting from
the rounded θ each step leaves exactly one rounding to account for. A lazily decayed row
may be rounded up to twice more (caught up at a fused layer's lookup, then by the step's
own decay factor), which adds 2·u_θ·|θ_prev|. For float32 and
float64 parameters and accumulators the whole trajectory is also compared with an
independent float64 reference run (`tol_for`-style tolerances), so nothing is taken from
the optimizer there.

Gradients are dyadic (±k/128, 64 ≤ k < 256, or exact zeros): they are exact in every
dtype and sums of duplicates are exact in float32. Where L2 decay is added to a gradient
(coupled, or "touched" on sparse rows) each coordinate's contributions share one sign,
so |g| ≥ 0.25 > 0.1 ≥ |wd·θ| (θ is clamped to [-2, 2]): no g + wd·θ cancels, and no sign
of a first step (lr·g/|g|) hangs on rounding.

Main axes (path, dtype, small/large) are parametrized so that every cell runs in the
default pass with `N_DEFAULT` examples; the ``slow`` twins (``pytest -m slow``) run
`N_SLOW` examples per cell with tensors up to 2²⁰ elements and tables to 100,000 rows.
"""

from __future__ import annotations

import contextlib
import functools
import math
from dataclasses import dataclass
from typing import Any
from unittest import mock

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import to64
from hypothesis import event, given, settings
from hypothesis import strategies as st
from numba.core.dispatcher import Dispatcher
from sparse_support import rows_and_values

import adagrad.nn
from adagrad import Adagrad, reference
from adagrad.kernels import RowClocks, StepRule
from adagrad.kernels.adagrad import cpu as dense_cpu
from adagrad.kernels.adagrad import torch_ops as portable
from adagrad.kernels.engine import sparse_cpu
from adagrad.optim.base import SparseGrad

pytestmark = pytest.mark.filterwarnings("ignore:Sparse invariant checks")

PARALLEL = 1 << 16  # documented threshold (adagrad.kernels.elementwise.PARALLEL_MIN_ELEMENTS)
HALF = (torch.bfloat16, torch.float16)
COMPLEX = (torch.complex64, torch.complex128)
REAL_OF = {torch.complex64: torch.float32, torch.complex128: torch.float64}
UNIT = {torch.float64: 2.0 ** -53, torch.float32: 2.0 ** -24, torch.bfloat16: 2.0 ** -8,
        torch.float16: 2.0 ** -11}
K = 8  # arithmetic slack, in units of the accumulator's roundoff (see the module docstring)

# :ref:`algo-conventions`: (eps, eps_placement, initial_accumulator_value, decoupled)
CONVENTIONS = {
    None: (1e-10, "outside", 0.0, False),
    "torch": (1e-10, "outside", 0.0, False),
    "optax": (1e-7, "inside", 0.1, False),
    "keras": (1e-7, "inside", 0.1, True),
    "tensorflow": (1e-7, "outside", 0.1, False),
    "fbgemm": (1e-8, "outside", 0.0, False),
}

# examples per parametrized case: default run, slow run (pytest -m slow)
N_DEFAULT = 15
N_SLOW = 40


def _real(dtype: torch.dtype) -> torch.dtype:
    return REAL_OF.get(dtype, dtype)


# ------------------------------------------------------------------ which path ran


class PathSpy:
    """Records which update paths run: torch's fused kernel, the kernel entry points of
    `adagrad.kernels` (numba and torch ops, dense and sparse) and the numba kernels of
    the dispatch tables in `dense_cpu` / `sparse_cpu` (``...:numba-parallel`` for a
    kernel compiled with ``parallel=True``, ``...:numba-serial`` otherwise)."""

    ENTRY_POINTS = ((dense_cpu, "dense_adagrad_", "dense:numba"),
                    (dense_cpu, "dense_adagrad_batch_", "dense:numba"),
                    (portable, "dense_adagrad_", "dense:torch-ops"),
                    (sparse_cpu, "sparse_adagrad_", "sparse:numba"),
                    (portable, "sparse_adagrad_", "sparse:torch-ops"))

    def __init__(self) -> None:
        self.events: list[str] = []
        self._stack = contextlib.ExitStack()

    def _wrap(self, label: str, fn):
        @functools.wraps(fn)
        def spy(*args, **kwargs):
            self.events.append(label)
            return fn(*args, **kwargs)
        return spy

    def __enter__(self) -> PathSpy:
        stack = self._stack.__enter__()
        stack.enter_context(mock.patch.object(
            torch, "_fused_adagrad_", self._wrap("torch-fused", torch._fused_adagrad_)))
        for module, name, label in self.ENTRY_POINTS:
            stack.enter_context(mock.patch.object(module, name,
                                                  self._wrap(label, getattr(module, name))))
        for module, prefix in ((dense_cpu, "dense"), (sparse_cpu, "sparse")):
            tables = [value for value in list(vars(module).values())
                      if isinstance(value, dict) and value
                      and all(isinstance(f, Dispatcher) for f in value.values())]
            assert tables, f"no numba dispatch table in {module.__name__}: update PathSpy"
            for table in tables:
                stack.enter_context(mock.patch.dict(table, {
                    key: self._wrap(f"{prefix}:numba-"
                                    f"{'parallel' if f.targetoptions.get('parallel') else 'serial'}",
                                    f)
                    for key, f in table.items()}))
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stack.__exit__(*exc)

    def take(self) -> list[str]:
        events, self.events = sorted(self.events), []
        return events


def _expected_events(path: str) -> list[str]:
    return sorted({
        "torch-fused": ["torch-fused"],
        "dense:numba-serial": ["dense:numba", "dense:numba-serial"],
        "dense:numba-parallel": ["dense:numba", "dense:numba-parallel"],
        "dense:torch-ops": ["dense:torch-ops"],
        "sparse:numba-serial": ["sparse:numba", "sparse:numba-serial"],
        "sparse:numba-parallel": ["sparse:numba", "sparse:numba-parallel"],
        "sparse:torch-ops": ["sparse:torch-ops"],
    }[path])


# ------------------------------------------------------------------ options


def _resolve(kwargs: dict[str, Any]) -> tuple[dict[str, Any], float]:
    """The reference's hyperparameters for ``Adagrad(**kwargs)`` (the conventions table of
    :ref:`algo-adagrad`; explicit arguments win) and the initial accumulator value."""
    eps, placement, iav, decoupled = CONVENTIONS[kwargs.get("convention")]
    pick = {k: v for k, v in kwargs.items() if v is not None}
    hp = dict(lr=pick.get("lr", 1e-2), lr_decay=pick.get("lr_decay", 0.0),
              weight_decay=pick.get("weight_decay", 0.0), eps=pick.get("eps", eps),
              eps_placement=pick.get("eps_placement", placement),
              decoupled_weight_decay=pick.get("decoupled_weight_decay", decoupled),
              accumulator_decay=pick.get("accumulator_decay", 1.0),
              maximize=pick.get("maximize", False))
    return hp, float(pick.get("initial_accumulator_value", iav))


def _sum_dtype(dtype: torch.dtype, state_dtype: torch.dtype | None) -> torch.dtype:
    """The documented accumulator dtype: θ's for complex θ, else ``state_dtype``, else
    float32 for fp16/bf16 θ and θ's own otherwise."""
    if dtype in COMPLEX:
        return dtype
    if state_dtype is not None:
        return state_dtype
    return torch.float32 if dtype in HALF else dtype


def _is_torch_config(hp: dict[str, Any]) -> bool:
    return (hp["eps_placement"] == "outside" and hp["accumulator_decay"] == 1.0
            and (hp["weight_decay"] == 0 or not hp["decoupled_weight_decay"]))


@st.composite
def _options(draw, sparse: bool = False) -> dict[str, Any]:
    """Random keyword arguments for `Adagrad` (None: leave the argument out)."""
    kw: dict[str, Any] = dict(
        lr=draw(st.sampled_from([0.01, 0.1, 0.5])),
        lr_decay=draw(st.sampled_from([None, 0.0, 0.05, 0.5])),
        weight_decay=draw(st.sampled_from([None, 0.0, 0.01, 0.05])),
        eps=draw(st.sampled_from([None, 1e-10, 1e-8, 1e-3])),
        eps_placement=draw(st.sampled_from([None, "outside", "inside"])),
        initial_accumulator_value=draw(st.sampled_from([None, 0.0, 0.1, 0.5])),
        maximize=draw(st.sampled_from([None, False, True])),
        accumulator_decay=draw(st.sampled_from([None, 1.0, 0.9, 0.5])),
        convention=draw(st.sampled_from(list(CONVENTIONS))),
    )
    if sparse:
        if kw["weight_decay"]:
            kw["sparse_weight_decay"] = draw(st.sampled_from(["lazy", "touched"]))
        else:
            kw["sparse_weight_decay"] = draw(st.sampled_from([None, "lazy", "touched"]))
    else:
        kw["decoupled_weight_decay"] = draw(st.sampled_from([None, False, True]))
        foreach, fused = draw(st.sampled_from([(None, None), (False, False), (True, False),
                                               (False, True)]))
        kw.update(foreach=foreach, fused=fused)
    return kw


def _guard_half_sum(kw: dict[str, Any], sum_dtype: torch.dtype) -> None:
    """A float16 accumulator cannot hold ε ≤ 1e-7 (it rounds to 0, so G = g = 0 gives
    0/0, in torch as here): start such sums above 0."""
    if sum_dtype == torch.float16 and _resolve(kw)[1] == 0:
        kw["initial_accumulator_value"] = 0.1


# ------------------------------------------------------------------ data


def _dyadic(shape: tuple[int, ...], gen: torch.Generator, zero_frac: float,
            bits: int = 8, sign: torch.Tensor | None = None) -> torch.Tensor:
    """±k/2^(bits-1) in [0.5, 2) (at most ``bits`` significant bits) and exact zeros, as
    float64: exact in every dtype for bits ≤ 8, and so are sums of them in float32.
    ``sign`` (broadcast to ``shape``) fixes the signs."""
    k = torch.randint(2 ** (bits - 2), 2 ** bits, shape, generator=gen).to(torch.float64)
    if sign is None:
        sign = torch.randint(0, 2, shape, generator=gen).to(torch.float64).mul_(2).sub_(1)
    keep = torch.rand(shape, generator=gen) >= zero_frac
    return (sign * k).div_(2 ** (bits - 1)).mul_(keep)


def _signs(shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    return torch.randint(0, 2, shape, generator=gen).to(torch.float64) * 2 - 1


def _scales(count: int, gen: torch.Generator) -> torch.Tensor:
    """Per-position factors in {0.5, 1, 1.5, 2} (2 significant bits): times a 6-bit
    `_dyadic` value still exact in bf16."""
    return torch.randint(1, 5, (count,), generator=gen).to(torch.float64) / 2


def _initial_sum(shape: tuple[int, ...], iav: float, sum_dtype: torch.dtype) -> np.ndarray:
    """G₀ as the accumulator holds it: ``iav`` rounded to the accumulator's dtype."""
    return np.full(shape, float(torch.tensor(iav, dtype=_real(sum_dtype))))


def _start(shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    return torch.randn(shape, generator=gen, dtype=torch.float64).clamp_(-2, 2)


def _as_dtype(real64: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A float64 tensor (with a trailing 2 for complex dtypes) in ``dtype``."""
    if dtype in COMPLEX:
        return torch.view_as_complex(real64.to(_real(dtype)).contiguous())
    return real64.to(dtype)


# ------------------------------------------------------------------ comparisons


def _assert_within(actual: np.ndarray, expected: np.ndarray, bound: np.ndarray | float,
                   what: str) -> None:
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    err = np.abs(actual - expected)
    bound = np.broadcast_to(np.asarray(bound, np.float64), err.shape)
    bad = ~(err <= bound)  # NaN fails too
    if bad.any():
        worst = np.unravel_index(np.argmax(np.where(bad, np.nan_to_num(err, nan=np.inf)
                                                    - bound, -np.inf)), err.shape)
        raise AssertionError(f"{what}: {int(bad.sum())} of {err.size} elements outside the "
                             f"bound; worst at {worst}: ours {actual[worst]!r}, reference "
                             f"{expected[worst]!r}, bound {bound[worst]!r}")


def _check_step(theta: np.ndarray, G: np.ndarray, theta_star: np.ndarray, G_star: np.ndarray,
                theta_prev: np.ndarray, lr_t: float, param_dtype: torch.dtype,
                sum_dtype: torch.dtype, lazy: bool = False, what: str = "") -> None:
    """One step against the exact float64 step from the same start (module docstring)."""
    u_p, u_s = UNIT[_real(param_dtype)], UNIT[_real(sum_dtype)]
    bound = (u_p * np.abs(theta_star) + K * u_s * (np.abs(theta_prev) + lr_t)
             + _subnormal_step(param_dtype) + (2 * u_p * np.abs(theta_prev) if lazy else 0.0))
    _assert_within(theta, theta_star, bound, f"{what} θ")
    _assert_within(G, G_star, K * u_s * np.abs(G_star) + _subnormal_step(sum_dtype),
                   f"{what} sum")


def _subnormal_step(dtype: torch.dtype) -> float:
    """The spacing of ``dtype``'s subnormals: what rounding may lose near 0 (fp16: 6e-8)."""
    info = torch.finfo(_real(dtype))
    return info.smallest_normal * info.eps


def _trajectory_tol(param_dtype: torch.dtype, sum_dtype: torch.dtype) -> dict[str, float]:
    """Whole-run tolerances against the float64 reference (cf. `tol_for`)."""
    if _real(param_dtype) == torch.float64 and _real(sum_dtype) == torch.float64:
        return {"rtol": 1e-10, "atol": 1e-12}
    return {"rtol": 1e-5, "atol": 1e-6}


def _independent(param_dtype: torch.dtype, sum_dtype: torch.dtype) -> bool:
    """Whether a whole float64 trajectory is a fair oracle (no half precision anywhere)."""
    return _real(param_dtype) not in HALF and _real(sum_dtype) not in HALF


def _label(path: str, dtype: torch.dtype, sum_dtype: torch.dtype, numel: int,
           shape: tuple[int, ...], kwargs: dict[str, Any]) -> None:
    """Hypothesis events, so that ``--hypothesis-show-statistics`` shows what was covered."""
    hp, _ = _resolve(kwargs)
    size = ("0-d" if shape == () else "empty" if numel == 0
            else "large" if numel >= PARALLEL else "small")
    event(f"path={path}")
    event(f"dtype={str(dtype)[6:]}, sum={str(sum_dtype)[6:]}")
    event(f"size={size}")
    for name, on in (("eps inside", hp["eps_placement"] == "inside"),
                     ("rho<1", hp["accumulator_decay"] != 1),
                     ("weight decay", bool(hp["weight_decay"])),
                     ("decoupled", bool(hp["weight_decay"]) and hp["decoupled_weight_decay"]
                      and "sparse_weight_decay" not in kwargs),
                     ("maximize", hp["maximize"]), ("lr_decay", bool(hp["lr_decay"])),
                     ("differentiable", bool(kwargs.get("differentiable")))):
        if on:
            event(f"option={name}")
    if kwargs.get("sparse_weight_decay") and hp["weight_decay"]:
        event(f"sparse_weight_decay={kwargs['sparse_weight_decay']}")
    event(f"convention={kwargs.get('convention')}")


# ================================================================== dense


@dataclass
class DenseCase:
    path: str  # "torch-fused", "dense:numba-serial", "dense:numba-parallel", "dense:torch-ops"
    dtype: torch.dtype
    shape: tuple[int, ...]
    kwargs: dict[str, Any]
    steps: int
    seed: int
    zero_frac: float

    @property
    def real_numel(self) -> int:
        return math.prod(self.shape) * (2 if self.dtype in COMPLEX else 1)

    @property
    def sum_dtype(self) -> torch.dtype:
        return _sum_dtype(self.dtype, self.kwargs.get("state_dtype"))


def _expected_dense_path(case: DenseCase) -> str:
    """The path the documented dispatch rules give (see the module docstring)."""
    hp, _ = _resolve(case.kwargs)
    real, real_sum = _real(case.dtype), _real(case.sum_dtype)
    if case.kwargs.get("differentiable"):
        return "dense:torch-ops"
    if case.real_numel >= PARALLEL and real == real_sum and _is_torch_config(hp):
        return "torch-fused"
    if (real in (torch.float32, torch.float64, torch.bfloat16)
            and real_sum in (torch.float32, torch.float64)
            and (real != torch.bfloat16 or real_sum == torch.float32)):
        return "dense:numba-parallel" if case.real_numel >= PARALLEL else "dense:numba-serial"
    return "dense:torch-ops"


SMALL_SHAPES = st.lists(st.integers(1, 6), min_size=1, max_size=3).map(tuple)
EMPTY_SHAPES = st.sampled_from([(0,), (3, 0), (0, 2, 5)])
# (real-dtype shape, complex-dtype shape) with the same number of real coordinates
BELOW = [((PARALLEL - 1,), (PARALLEL // 2 - 1,))]  # one short of the threshold: serial
LARGE = [((PARALLEL,), (PARALLEL // 2,)), ((256, 257), (128, 257)),
         ((3, 129, 170), (3, 129, 85))]
LARGE_SLOW = LARGE + [((1024, 1025), (512, 1025)), ((4, 300, 301), (4, 150, 301)),
                      ((1 << 20,), (1 << 19,))]


def _shape(draw, dtype: torch.dtype, kind: str, large: list) -> tuple[int, ...]:
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
DENSE_FUSED_DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16,
                      torch.complex64, torch.complex128]
TORCH_OPS_VARIANTS = ["differentiable", "float16", "half sum", "bf16 with float64 sum"]


@st.composite
def dense_cases(draw, path: str, dtype: torch.dtype | None = None, variant: str = "",
                size: str = "large", large: list = LARGE) -> DenseCase:
    """A configuration that, by the documented rules, takes ``path`` ("numba",
    "torch-fused" or "torch-ops"); ``size`` "small" draws empty, 0-d, small and
    one-short-of-parallel tensors, "large" ones of ≥ 65,536 real elements."""
    kw = draw(_options())
    kinds = ["empty", "scalar", "small", "small", "below"] if size == "small" else ["large"]
    if path == "numba":
        kw["state_dtype"] = draw(st.sampled_from(
            {torch.bfloat16: [None, torch.float32]}.get(
                dtype, [None, torch.float32, torch.float64])))
        shape = _shape(draw, dtype, draw(st.sampled_from(kinds)), large)
        case = DenseCase(path, dtype, shape, kw, 0, 0, 0.0)
        if _expected_dense_path(case) == "torch-fused":  # make it one torch's kernel lacks
            fix = draw(st.sampled_from(["inside", "rho", "decoupled", "sum dtype"]))
            if fix == "inside":
                kw["eps_placement"] = "inside"
            elif fix == "rho":
                kw["accumulator_decay"] = 0.9
            elif fix == "decoupled":
                kw.update(weight_decay=0.05, decoupled_weight_decay=True)
            elif dtype in COMPLEX:  # complex sums follow θ: use another fix
                kw["eps_placement"] = "inside"
            else:
                kw["state_dtype"] = (torch.float64 if _real(dtype) == torch.float32
                                     else torch.float32)
    elif path == "torch-fused":
        kw["state_dtype"] = dtype if dtype in HALF else draw(st.sampled_from([None, dtype]))
        if dtype in COMPLEX:
            kw["state_dtype"] = draw(st.sampled_from([None, torch.float64]))  # ignored
        shape = _shape(draw, dtype, "large", large)
        hp, _ = _resolve(kw)
        if hp["eps_placement"] != "outside":
            kw["eps_placement"] = "outside"
        kw["accumulator_decay"] = draw(st.sampled_from([None, 1.0]))
        if hp["weight_decay"] and hp["decoupled_weight_decay"]:
            kw["decoupled_weight_decay"] = False
    else:
        if variant == "differentiable":
            dtype = draw(st.sampled_from(DENSE_FUSED_DTYPES))
            kw["state_dtype"] = draw(st.sampled_from([None, torch.float32, torch.float64]))
            kw.update(differentiable=True, fused=None)
        elif variant == "float16":
            dtype = torch.float16
            kw["state_dtype"] = draw(st.sampled_from([None, torch.float32, torch.float64,
                                                      torch.float16]))
        elif variant == "half sum":
            dtype = draw(st.sampled_from([torch.float32, torch.float64]))
            kw["state_dtype"] = draw(st.sampled_from(HALF))
        else:
            dtype = torch.bfloat16
            kw["state_dtype"] = torch.float64
        shape = _shape(draw, dtype, draw(st.sampled_from(kinds)), large)
        case = DenseCase(path, dtype, shape, kw, 0, 0, 0.0)
        if _expected_dense_path(case) == "torch-fused":  # fp16 θ, fp16 sum, large
            kw["state_dtype"] = None
    steps = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2 ** 16))
    case = DenseCase(path, dtype, shape, kw, steps, seed,
                     draw(st.sampled_from([0.0, 0.3])))
    _guard_half_sum(kw, case.sum_dtype)
    expected = _expected_dense_path(case)
    assert expected.startswith(path) or expected.startswith(f"dense:{path}"), (expected, case)
    case.path = expected
    return case


def _run_dense(case: DenseCase) -> None:
    hp, iav = _resolve(case.kwargs)
    _label(case.path, case.dtype, case.sum_dtype, case.real_numel, case.shape, case.kwargs)
    gen = torch.Generator().manual_seed(case.seed)
    complex_ = case.dtype in COMPLEX
    real_shape = case.shape + ((2,) if complex_ else ())
    leaf = _as_dtype(_start(real_shape, gen), case.dtype).requires_grad_(True)
    # torch.optim's differentiable mode needs a non-leaf parameter to write into.
    param = leaf.clone() if case.kwargs.get("differentiable") else leaf
    opt = Adagrad([param], **{k: v for k, v in case.kwargs.items() if v is not None})
    sum_dtype = case.sum_dtype
    independent = _independent(case.dtype, sum_dtype)
    theta = to64(param)  # the references copy what they are given
    traj_theta, traj_state = theta, reference.adagrad_init(theta, iav)
    state = opt.state.get(param)
    G = to64(state["sum"]) if state else _initial_sum(theta.shape, iav, sum_dtype)
    expected_events = _expected_events(case.path)
    with PathSpy() as spy:
        for t in range(1, case.steps + 1):
            g = _as_dtype(_dyadic(real_shape, gen, case.zero_frac), case.dtype)
            g64 = to64(g)
            theta_prev, G_prev = theta, G  # what the optimizer holds: nothing ran since
            param.grad = g.clone()
            opt.step()
            assert spy.take() == expected_events, f"step {t} did not take {case.path}"
            state = opt.state[param]
            assert state["sum"].dtype == sum_dtype
            assert param.dtype == case.dtype and tuple(param.shape) == case.shape
            assert float(state["step"]) == t
            theta, G = to64(param), to64(state["sum"])
            theta_star, star = reference.adagrad(theta_prev, g64,
                                                 {"step": t - 1, "sum": G_prev}, **hp)
            lr_t = reference.lr_at(hp["lr"], hp["lr_decay"], t)
            _check_step(theta, G, theta_star, star["sum"], theta_prev,
                        lr_t, case.dtype, sum_dtype, what=f"step {t}")
            traj_theta, traj_state = reference.adagrad(traj_theta, g64, traj_state, **hp)
            if independent:
                tol = _trajectory_tol(case.dtype, sum_dtype)
                np.testing.assert_allclose(theta, traj_theta, **tol)
                np.testing.assert_allclose(G, traj_state["sum"], **tol)
    if case.kwargs.get("differentiable"):
        assert param.grad_fn is not None  # the step was recorded by autograd


SIZES = ["small", "large"]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("dtype", DENSE_NUMBA_DTYPES, ids=str)
@settings(max_examples=N_DEFAULT)
@given(data=st.data())
def test_dense_numba_kernels(dtype, size, data):
    """Numba dense kernel, serial and parallel: f32/f64/bf16/complex θ, f32/f64 sums;
    empty, 0-d, small, one short of 65,536 and ≥ 65,536 elements; every option."""
    _run_dense(data.draw(dense_cases("numba", dtype, size=size), label="case"))


@pytest.mark.parametrize("dtype", DENSE_FUSED_DTYPES, ids=str)
@settings(max_examples=N_DEFAULT)
@given(data=st.data())
def test_dense_torch_fused_delegation(dtype, data):
    """torch._fused_adagrad_: f32/f64/bf16/fp16/complex θ of ≥ 65,536 real elements in
    torch's configuration (ε outside, ρ = 1, coupled or no weight decay, sum in θ's
    dtype), with lr_decay, maximize, initial accumulator and the conventions."""
    _run_dense(data.draw(dense_cases("torch-fused", dtype), label="case"))


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("variant", TORCH_OPS_VARIANTS)
@settings(max_examples=N_DEFAULT)
@given(data=st.data())
def test_dense_torch_ops_path(variant, size, data):
    """The torch-ops kernel: differentiable=True (every dtype), fp16 θ, half-precision
    sums of f32/f64 θ, bf16 θ with a float64 sum; every shape class and option."""
    _run_dense(data.draw(dense_cases("torch-ops", variant=variant, size=size), label="case"))


@pytest.mark.slow
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("dtype", DENSE_NUMBA_DTYPES, ids=str)
@settings(max_examples=N_SLOW)
@given(data=st.data())
def test_dense_numba_kernels_slow(dtype, size, data):
    _run_dense(data.draw(dense_cases("numba", dtype, size=size, large=LARGE_SLOW),
                         label="case"))


@pytest.mark.slow
@pytest.mark.parametrize("dtype", DENSE_FUSED_DTYPES, ids=str)
@settings(max_examples=N_SLOW)
@given(data=st.data())
def test_dense_torch_fused_delegation_slow(dtype, data):
    _run_dense(data.draw(dense_cases("torch-fused", dtype, large=LARGE_SLOW), label="case"))


@pytest.mark.slow
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("variant", TORCH_OPS_VARIANTS)
@settings(max_examples=N_SLOW)
@given(data=st.data())
def test_dense_torch_ops_path_slow(variant, size, data):
    _run_dense(data.draw(dense_cases("torch-ops", variant=variant, size=size,
                                     large=LARGE_SLOW), label="case"))


# ================================================================== sparse


@dataclass
class SparseCase:
    path: str  # "sparse:numba-serial", "sparse:numba-parallel", "sparse:torch-ops"
    dtype: torch.dtype  # the table's
    values_dtype: torch.dtype  # the gradient values'
    layout: str  # "2d", "1d", "3d" (sparse_dim 1) or "sparse_dim2" (on a matrix)
    shape: tuple[int, ...]
    nnz: int
    id_range: int
    kwargs: dict[str, Any]
    steps: int
    seed: int
    zero_frac: float
    feed: str = "grad"  # "grad" (param.grad = COO) or "step_rows" (a SparseGrad)

    @property
    def sum_dtype(self) -> torch.dtype:
        return _sum_dtype(self.dtype, self.kwargs.get("state_dtype"))

    @property
    def width(self) -> int:
        sparse_dim = 2 if self.layout == "sparse_dim2" else 1
        return math.prod(self.shape[sparse_dim:])


def _numba_sparse_supports(param_dtype, sum_dtype, values_dtype) -> bool:
    return (param_dtype in (torch.float32, torch.float64, torch.bfloat16)
            and sum_dtype in (torch.float32, torch.float64)
            and values_dtype in (torch.float32, torch.float64))


def _sparse_path(param_dtype, sum_dtype, values_dtype, nnz: int, width: int) -> str:
    if not _numba_sparse_supports(param_dtype, sum_dtype, values_dtype):
        return "sparse:torch-ops"
    return "sparse:numba-parallel" if nnz * width >= PARALLEL else "sparse:numba-serial"


SPARSE_SMALL = dict(rows=st.integers(1, 40), width=st.integers(1, 6), nnz=st.integers(0, 60))
# (rows, width, nnz) with nnz·width ≥ 65,536
SPARSE_LARGE = [(4096, 32, 2048), (3000, 16, 4500)]
SPARSE_LARGE_SLOW = SPARSE_LARGE + [(50_000, 64, 16_384), (20_000, 128, 4096)]


SPARSE_NUMBA_DTYPES = [torch.float32, torch.float64, torch.bfloat16]
# The default pass compiles each numba kernel for float32 tables, values and sums only (each
# dtype combination is a compilation of its own); the slow twins draw every dtype.
DEFAULT_NUMBA_DTYPES = SPARSE_NUMBA_DTYPES[:1]
SPARSE_TORCH_OPS_VARIANTS = ["bf16 table", "fp16 table", "half sum"]


@st.composite
def sparse_cases(draw, path: str, dtype: torch.dtype | None = None, variant: str = "",
                 size: str = "small", large: list = SPARSE_LARGE,
                 float32_only: bool = False) -> SparseCase:
    """A table and gradients that, by the documented rules, take ``path`` ("numba" or
    "torch-ops"); ``size`` "large" gives nnz·D ≥ 65,536."""
    kw = draw(_options(sparse=True))
    if path == "numba":
        kw["state_dtype"] = draw(st.sampled_from(
            [None, torch.float32] if float32_only else [None, torch.float32, torch.float64]))
        # A bf16 table's COO gradient is bf16, which the numba kernel does not read; a
        # SparseGrad with float32 values (what a fused layer may hand over) does.
        feed = "step_rows" if dtype == torch.bfloat16 else draw(
            st.sampled_from(["grad", "grad", "step_rows"]))
        values_dtype = torch.float32 if dtype == torch.bfloat16 else dtype
    else:
        if variant != "half sum":
            dtype = torch.bfloat16 if variant == "bf16 table" else torch.float16
            kw["state_dtype"] = draw(st.sampled_from([None, torch.float32, torch.float64,
                                                      dtype]))
        else:
            dtype = draw(st.sampled_from([torch.float32, torch.float64]))
            kw["state_dtype"] = draw(st.sampled_from(HALF))
        values_dtype, feed = dtype, "grad"
    layout = "2d" if feed == "step_rows" else draw(
        st.sampled_from(["2d", "2d", "1d", "3d", "sparse_dim2"]))
    if size == "small":
        rows, width, nnz = draw(SPARSE_SMALL["rows"]), draw(SPARSE_SMALL["width"]), \
            draw(SPARSE_SMALL["nnz"])
        id_range = draw(st.integers(1, rows))
    else:
        rows, width, nnz = draw(st.sampled_from(large))
        id_range = draw(st.sampled_from([rows, rows // 2]))
    if layout == "1d":  # width 1: as many positions as elements
        shape, nnz = (rows * width,), nnz * width
        id_range *= width
    elif layout == "3d":
        split = 2 if width % 2 == 0 else 1
        shape = (rows, split, width // split)
    elif layout == "sparse_dim2":  # element-wise COO, rows·width rows of width 1
        shape, nnz, id_range = (rows, width), nnz * width, id_range * width
    else:
        shape = (rows, width)
    case = SparseCase("", dtype, values_dtype, layout, shape, nnz, id_range, kw,
                      draw(st.integers(1, 4)), draw(st.integers(0, 2 ** 16)),
                      draw(st.sampled_from([0.0, 0.2])), feed)
    _guard_half_sum(kw, case.sum_dtype)
    case.path = _sparse_path(dtype, case.sum_dtype, values_dtype, nnz, case.width)
    assert case.path.startswith(f"sparse:{path}"), case
    return case


def _sparse_hp(kw: dict[str, Any]) -> tuple[dict[str, Any], float]:
    hp, iav = _resolve(kw)
    hp.pop("decoupled_weight_decay")
    hp["sparse_weight_decay"] = kw.get("sparse_weight_decay")
    return hp, iav


def _ref_view(case: SparseCase, array: np.ndarray) -> np.ndarray:
    """The parameter as the reference's table: element-wise rows for sparse_dim=2."""
    return array.reshape(-1) if case.layout == "sparse_dim2" else array


def _random_rows(case: SparseCase, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Row indices into the reference's table (duplicates, below ``id_range``) and their
    values (``(nnz,) + row shape``), float64."""
    flat = torch.randint(0, case.id_range, (case.nnz,), generator=gen)
    row_shape = () if case.layout in ("1d", "sparse_dim2") else case.shape[1:]
    sign = None
    if case.kwargs.get("weight_decay") and case.kwargs.get("sparse_weight_decay") == "touched":
        # L2 on touched rows, g_r + wd·θ_r: one sign per coordinate, so that duplicates
        # add up (|g_r| ≥ 0.5) and no rounding decides the sign of g_r + wd·θ_r
        table_rows = math.prod(case.shape) // max(1, math.prod(row_shape))
        sign = _signs((table_rows,) + row_shape, gen)[flat]
    return flat, _dyadic((case.nnz,) + row_shape, gen, case.zero_frac, sign=sign)


def _coo(case: SparseCase, flat: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    if case.layout == "sparse_dim2":
        width = case.shape[1]
        indices = torch.stack([flat // width, flat % width])
    else:
        indices = flat.reshape(1, -1)
    return torch.sparse_coo_tensor(indices, values.to(case.values_dtype), case.shape,
                                   check_invariants=False)


# How the sparse runs below spend their time: a step touches a few rows of a table of up to
# 6.4M elements, so the whole table is handled once per step in its own dtype (a copy
# before the step; after it, "did any untouched row change", bit for bit), and in float64
# only on the touched rows. That checks what whole-table float64 comparisons checked:
#
# - untouched rows keep θ and G bit for bit (`_assert_rows_kept`: `!=` on the tensors is
#   np.array_equal on their exact float64 values: ±0 equal, NaN never);
# - the one-step bound (`_check_step`) on the touched rows: on an untouched row θ = θ_prev
#   (just asserted) and the reference keeps θ* = θ_prev, G* = G_prev, an error of 0;
# - the reference's sparse step on the touched rows alone (`_sparse_ref_rows`): its update
#   is row by row (a row's new θ, G and `last` depend on its own θ, G, `last`, summed
#   gradient and the tensor's step/lr history), so those rows come out bit for bit as in
#   the whole table's step, and it keeps every other row;
# - the trajectory on the touched rows: an untouched row keeps its values on both sides
#   (ours asserted, the reference's by its rule), so its comparison is that of the step it
#   was last touched at, or, never touched, that of the start (`_check_start`).


def _held(state: dict[str, Any] | None, shape: tuple[int, ...], iav: float,
          sum_dtype: torch.dtype) -> torch.Tensor:
    """A copy of the accumulator the optimizer holds (G₀ before its first step)."""
    if state:
        return state["sum"].detach().clone()
    return torch.full(shape, float(torch.tensor(iav, dtype=sum_dtype)), dtype=sum_dtype)


def _untouched_changed(now: torch.Tensor, before: torch.Tensor, touched: np.ndarray) -> int:
    """How many rows of the table (first dimension) outside ``touched`` differ from
    ``before``'s, not bit for bit equal (as np.array_equal of the float64 values: ±0
    equal, NaN differs)."""
    assert now.shape == before.shape and now.dtype == before.dtype
    changed = (now != before).reshape(now.shape[0], -1).any(dim=1)
    changed[torch.from_numpy(touched)] = False
    return int(changed.sum())


def _assert_rows_kept(now: torch.Tensor, before: torch.Tensor, touched: np.ndarray,
                      what: str) -> None:
    """Rows outside ``touched`` keep their values bit for bit."""
    changed = _untouched_changed(now, before, touched)
    assert not changed, f"{what}: {changed} untouched rows changed"


def _rows64(table: torch.Tensor, rows: np.ndarray) -> np.ndarray:
    """``table[rows]`` as a float64 array."""
    return to64(table[torch.from_numpy(rows)])


def _sparse_ref_rows(theta_rows: np.ndarray, G_rows: np.ndarray, state: dict[str, Any],
                     rows: np.ndarray, local: np.ndarray, values: np.ndarray,
                     hp: dict[str, Any]) -> tuple[np.ndarray, dict[str, Any]]:
    """`reference.adagrad_sparse` on the table's ``rows`` (distinct, ascending; θ and G
    given for them alone) fed the positions ``local`` (places in ``rows``): those rows of
    the whole table's step, bit for bit (see above). Its state holds those rows' G and
    ``last``."""
    return reference.adagrad_sparse(theta_rows, local, values,
                                    dict(state, sum=G_rows, last=state["last"][rows]), **hp)


def _traj_step(traj: np.ndarray, rstate: dict[str, Any], rows: np.ndarray, local: np.ndarray,
               values: np.ndarray, hp: dict[str, Any]) -> None:
    """One step of the float64 reference run (``traj``, ``rstate``), in place: the
    reference's step on the touched ``rows``, every other row kept as its rule keeps it."""
    theta_rows, new = _sparse_ref_rows(traj[rows], rstate["sum"][rows], rstate, rows, local,
                                       values, hp)
    traj[rows] = theta_rows
    rstate["sum"][rows] = new["sum"]
    rstate["last"][rows] = new["last"]
    rstate["step"], rstate["lr_history"] = new["step"], new["lr_history"]


def _check_start(G0: torch.Tensor, rstate: dict[str, Any], tol: dict[str, float]) -> None:
    """The start against the reference's, what a row no step has touched yet is compared
    with: the optimizer's initial accumulator G₀ (θ₀ is the reference's own start)."""
    np.testing.assert_allclose(to64(G0), rstate["sum"], **tol)


def _run_sparse(case: SparseCase) -> None:
    hp, iav = _sparse_hp(case.kwargs)
    _label(case.path, case.dtype, case.sum_dtype, case.nnz * case.width, case.shape,
           case.kwargs)
    event(f"layout={case.layout}, feed={case.feed}")
    lazy = bool(hp["sparse_weight_decay"] == "lazy" and hp["weight_decay"])
    gen = torch.Generator().manual_seed(case.seed)
    param = _start(case.shape, gen).to(case.dtype).requires_grad_(True)
    opt = Adagrad([param], **{k: v for k, v in case.kwargs.items() if v is not None})
    sum_dtype = case.sum_dtype
    independent = _independent(case.dtype, sum_dtype)
    tol = _trajectory_tol(case.dtype, sum_dtype)
    theta0 = to64(param)  # the references copy what they are given
    rstate = reference.adagrad_sparse_init(_ref_view(case, theta0), iav)
    traj_theta = _ref_view(case, theta0).copy()  # stepped in place
    # after flush(), lazy decay equals dense decoupled decay (touched L2 does not)
    check_dense = independent and not (hp["sparse_weight_decay"] == "touched"
                                       and hp["weight_decay"])
    dense_theta, dense_state = theta0, reference.adagrad_init(theta0, iav)
    dense_hp = dict(hp, decoupled_weight_decay=True)
    dense_hp.pop("sparse_weight_decay")
    expected_events = _expected_events(case.path)
    ref_rows = traj_theta.shape[0]

    def view(t: torch.Tensor) -> torch.Tensor:
        """A tensor of the table's shape as the reference's table (see `_ref_view`)."""
        return t.detach().reshape(-1) if case.layout == "sparse_dim2" else t.detach()

    if independent:
        _check_start(view(_held(opt.state.get(param), case.shape, iav, sum_dtype)), rstate,
                     tol)
    with PathSpy() as spy:
        for t in range(1, case.steps + 1):
            flat, values = _random_rows(case, gen)
            # what the optimizer holds: nothing ran since the last step
            before_theta = view(param).clone()
            before_G = view(_held(opt.state.get(param), case.shape, iav, sum_dtype))
            if case.feed == "grad":
                grad = _coo(case, flat, values)
                param.grad = grad
                opt.step()
            else:
                table = param.detach().view(case.shape[0], -1)
                opt.step_rows(param, SparseGrad(table, flat, values.to(case.values_dtype)))
            assert spy.take() == expected_events, f"step {t} did not take {case.path}"
            state = opt.state[param]
            assert state["sum"].dtype == sum_dtype and param.dtype == case.dtype
            assert float(state["step"]) == t
            # rows no position touches keep θ and G bit for bit (:ref:`algo-sparse`)
            idx = flat.numpy()
            rows, local = reference.distinct_rows(idx)
            _assert_rows_kept(view(param), before_theta, rows, f"step {t} θ")
            _assert_rows_kept(view(state["sum"]), before_G, rows, f"step {t} sum")
            # one step from the optimizer's own θ and G, the reference's bookkeeping
            theta_prev, G_prev = _rows64(before_theta, rows), _rows64(before_G, rows)
            theta, G = _rows64(view(param), rows), _rows64(view(state["sum"]), rows)
            theta_star, star = _sparse_ref_rows(theta_prev, G_prev, rstate, rows, local,
                                                values.numpy(), hp)
            lr_t = reference.lr_at(hp["lr"], hp["lr_decay"], t)
            _check_step(theta, G, theta_star, star["sum"], theta_prev, lr_t, case.dtype,
                        sum_dtype, lazy, what=f"step {t} (touched rows)")
            _traj_step(traj_theta, rstate, rows, local, values.numpy(), hp)
            if check_dense:
                if case.feed == "grad":
                    dense_grad = grad.to_dense().to(torch.float64).numpy()
                else:
                    dense_grad = np.zeros(case.shape)
                    np.add.at(dense_grad, idx, values.numpy())
                dense_theta, dense_state = reference.adagrad(dense_theta, dense_grad,
                                                             dense_state, **dense_hp)
            if independent:
                np.testing.assert_allclose(theta, traj_theta[rows], **tol)
                np.testing.assert_allclose(G, rstate["sum"][rows], **tol)
    # flush(): every row's pending decay applied; then lazy equals dense decoupled decay
    theta_prev = to64(view(param))
    G_prev = to64(view(_held(opt.state.get(param), case.shape, iav, sum_dtype)))
    opt.flush()
    theta, G = to64(view(param)), to64(view(opt.state[param]["sum"]))
    flush_hp = {k: hp[k] for k in ("weight_decay", "accumulator_decay", "sparse_weight_decay")}
    theta_star, star = reference.adagrad_sparse_flush(theta_prev, dict(rstate, sum=G_prev),
                                                      **flush_hp)
    _check_step(theta, G, theta_star, star["sum"], theta_prev, 0.0, case.dtype, sum_dtype,
                lazy, what="flush")
    if independent:
        traj_theta, rstate = reference.adagrad_sparse_flush(traj_theta, rstate, **flush_hp)
        np.testing.assert_allclose(theta, traj_theta, **tol)
        np.testing.assert_allclose(G, rstate["sum"], **tol)
        if check_dense:
            np.testing.assert_allclose(theta, _ref_view(case, dense_theta), **tol)
            np.testing.assert_allclose(G, _ref_view(case, dense_state["sum"]), **tol)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("dtype", DEFAULT_NUMBA_DTYPES, ids=str)
@settings(max_examples=N_DEFAULT)
@given(data=st.data())
def test_sparse_numba_kernel(dtype, size, data):
    """Numba sparse kernel, serial and parallel (nnz·D ≥ 65,536): f32/f64 tables (COO
    gradient or step_rows) and bf16 tables (step_rows, f32 values); 1-D, 2-D, 3-D tables
    and sparse_dim=2; duplicates, empty gradients; lazy/touched weight decay, ρ < 1 and
    every other option; flush() and, for lazy decay, dense decoupled Adagrad."""
    _run_sparse(data.draw(sparse_cases("numba", dtype, size=size, float32_only=True), label="case"))


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("variant", SPARSE_TORCH_OPS_VARIANTS)
@settings(max_examples=N_DEFAULT)
@given(data=st.data())
def test_sparse_torch_ops_path(variant, size, data):
    """The torch-ops sparse kernel through the optimizer: bf16/fp16 tables (their COO
    values are half precision) and half-precision sums; every option and layout."""
    _run_sparse(data.draw(sparse_cases("torch-ops", variant=variant, size=size),
                          label="case"))


@pytest.mark.slow
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("dtype", SPARSE_NUMBA_DTYPES, ids=str)
@settings(max_examples=N_SLOW)
@given(data=st.data())
def test_sparse_numba_kernel_slow(dtype, size, data):
    _run_sparse(data.draw(sparse_cases("numba", dtype, size=size, large=SPARSE_LARGE_SLOW),
                          label="case"))


@pytest.mark.slow
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("variant", SPARSE_TORCH_OPS_VARIANTS)
@settings(max_examples=N_SLOW)
@given(data=st.data())
def test_sparse_torch_ops_path_slow(variant, size, data):
    _run_sparse(data.draw(sparse_cases("torch-ops", variant=variant, size=size,
                                       large=SPARSE_LARGE_SLOW), label="case"))


# ------------------------------------------------------------------ the kernels, called directly


@dataclass
class KernelCase:
    kernel: str  # "numba" or "torch-ops"
    dtype: torch.dtype
    sum_dtype: torch.dtype
    values_dtype: torch.dtype
    rows: int
    width: int
    nnz: int
    gather: str  # "none", "value_of", "value_of+scale", "scalar scale"
    lr: float
    lr_decay: float
    eps: float
    eps_inside: bool
    maximize: bool
    weight_decay: float
    mode: str | None
    rho: float
    iav: float
    steps: int
    seed: int


@st.composite
def kernel_cases(draw, kernel: str, size: str, large: list = SPARSE_LARGE,
                 float32_only: bool = False) -> KernelCase:
    if kernel == "numba" and float32_only:
        dtype = sum_dtype = values_dtype = torch.float32
    elif kernel == "numba":
        dtype = draw(st.sampled_from(SPARSE_NUMBA_DTYPES))
        sum_dtype = draw(st.sampled_from([torch.float32, torch.float64]))
        values_dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    else:
        dtype = draw(st.sampled_from([torch.float32, torch.float64, torch.bfloat16,
                                      torch.float16]))
        sum_dtype = draw(st.sampled_from([torch.float32, torch.float64, torch.bfloat16,
                                          torch.float16]))
        values_dtype = draw(st.sampled_from([dtype, torch.float32]))
    if size == "small":
        rows, width, nnz = draw(st.integers(1, 40)), draw(st.integers(1, 6)), \
            draw(st.integers(0, 60))
    else:
        rows, width, nnz = draw(st.sampled_from(large))
    wd = draw(st.sampled_from([0.0, 0.01, 0.05]))
    iav = draw(st.sampled_from([0.0, 0.1]))
    if sum_dtype == torch.float16:  # see _guard_half_sum
        iav = 0.1
    return KernelCase(
        kernel, dtype, sum_dtype, values_dtype, rows, width, nnz,
        draw(st.sampled_from(["none", "value_of", "value_of+scale", "scalar scale"])),
        draw(st.sampled_from([0.01, 0.1, 0.5])), draw(st.sampled_from([0.0, 0.5])),
        draw(st.sampled_from([1e-10, 1e-7, 1e-3])), draw(st.booleans()), draw(st.booleans()),
        wd, draw(st.sampled_from(["lazy", "touched"])) if wd else None,
        draw(st.sampled_from([1.0, 0.9])), iav, draw(st.integers(1, 4)),
        draw(st.integers(0, 2 ** 16)))


def _run_kernel(case: KernelCase) -> None:
    """The kernels' contract (adagrad.kernels): position k adds scale[k]·values[value_of[k]]
    to row indices[k]; lazy decay comes through `RowClocks` whose clocks this test keeps
    as clocks.py documents them (Σ log(1 - lr_s·wd), Σ log ρ; per-row snapshots)."""
    numel = case.nnz * case.width
    event(f"kernel={case.kernel}, {'parallel' if numel >= PARALLEL else 'serial'}")
    event(f"dtype={str(case.dtype)[6:]}, sum={str(case.sum_dtype)[6:]}, "
          f"values={str(case.values_dtype)[6:]}")
    event(f"gather={case.gather}, decay={case.mode}, rho={case.rho}")
    gen = torch.Generator().manual_seed(case.seed)
    param = _start((case.rows, case.width), gen).to(case.dtype)
    state_sum = torch.full((case.rows, case.width), case.iav, dtype=case.sum_dtype)
    lazy = case.mode == "lazy"
    param_log = sum_log = 0.0
    row_param_log = torch.zeros(case.rows, dtype=torch.float64) if lazy else None
    row_sum_log = torch.zeros(case.rows, dtype=torch.float64) if case.rho != 1 else None
    hp = dict(lr=case.lr, lr_decay=case.lr_decay, weight_decay=case.weight_decay, eps=case.eps,
              eps_placement="inside" if case.eps_inside else "outside",
              accumulator_decay=case.rho, maximize=case.maximize,
              sparse_weight_decay=case.mode)
    rstate = reference.adagrad_sparse_init(to64(param), case.iav)
    traj = to64(param)  # stepped in place
    independent = _independent(case.dtype, case.sum_dtype) and case.values_dtype not in HALF
    tol = _trajectory_tol(case.dtype, case.sum_dtype)
    if independent:
        _check_start(state_sum, rstate, tol)
    with PathSpy() as spy:
        fn = sparse_cpu.sparse_adagrad_ if case.kernel == "numba" else portable.sparse_adagrad_
        for t in range(1, case.steps + 1):
            lr_t = reference.lr_at(case.lr, case.lr_decay, t)
            if lazy:
                param_log += math.log(1 - lr_t * case.weight_decay)
            if row_sum_log is not None:
                sum_log += math.log(case.rho)
            indices = torch.randint(0, case.rows, (case.nnz,), generator=gen)
            value_of = scale = None
            sources = case.nnz
            if case.gather != "none":
                sources = max(1, case.nnz // 3)
                value_of = torch.randint(0, sources, (case.nnz,), generator=gen)
            # touched L2: one sign per column, so that duplicates add up (see _random_rows)
            sign = _signs((case.width,), gen) if case.mode == "touched" else None
            values = _dyadic((sources, case.width), gen, 0.1, bits=6, sign=sign)
            expanded = values if value_of is None else values[value_of]
            if case.gather == "value_of+scale":
                scale = _scales(case.nnz, gen)
                expanded = expanded * scale[:, None]
            elif case.gather == "scalar scale":
                scale = torch.tensor([1.5], dtype=torch.float64)
                expanded = expanded * 1.5
            before_theta, before_G = param.clone(), state_sum.clone()
            rule = StepRule(lr=lr_t, eps=case.eps, eps_inside=case.eps_inside,
                            maximize=case.maximize,
                            weight_decay=case.weight_decay if case.mode == "touched" else 0.0,
                            decoupled=lazy, accumulator_decay=case.rho)
            fn(param, state_sum, indices, values.to(case.values_dtype), rule,
               RowClocks(param_log, row_param_log, sum_log, row_sum_log),
               value_of, None if scale is None else scale.to(case.values_dtype))
            events = spy.take()
            if case.kernel == "numba":
                parallel = case.nnz * case.width >= PARALLEL
                assert events == _expected_events(
                    f"sparse:numba-{'parallel' if parallel else 'serial'}"), events
            else:
                assert events == ["sparse:torch-ops"], events
            # the rows the step touches; where an untouched row moved (which the bound may
            # allow), every row, as a whole-table comparison
            idx = indices.numpy()
            rows, local = reference.distinct_rows(idx)
            if (_untouched_changed(param, before_theta, rows)
                    or _untouched_changed(state_sum, before_G, rows)):
                rows, local = np.arange(case.rows), idx
            theta_prev, G_prev = _rows64(before_theta, rows), _rows64(before_G, rows)
            theta_star, star = _sparse_ref_rows(theta_prev, G_prev, rstate, rows, local,
                                                expanded.numpy(), hp)
            theta, G = _rows64(param, rows), _rows64(state_sum, rows)
            _check_step(theta, G, theta_star, star["sum"], theta_prev, lr_t, case.dtype,
                        case.sum_dtype, lazy, what=f"step {t}")
            _traj_step(traj, rstate, rows, local, expanded.numpy(), hp)
            if independent:
                np.testing.assert_allclose(theta, traj[rows], **tol)
                np.testing.assert_allclose(G, rstate["sum"][rows], **tol)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("kernel", ["numba", "torch-ops"])
@settings(max_examples=N_DEFAULT)
@given(data=st.data())
def test_sparse_kernels_called_directly(kernel, size, data):
    """sparse_cpu.sparse_adagrad_ (serial and parallel) and portable.sparse_adagrad_ with
    a StepRule and RowClocks: f32/f64/bf16 (and fp16 for torch ops) tables, f32/f64 sums,
    value_of/scale gathers, touched L2, lazy decay and ρ < 1 through the clocks (numba on
    float32 here, every dtype in the slow twin)."""
    _run_kernel(data.draw(kernel_cases(kernel, size, float32_only=True), label="case"))


@pytest.mark.slow
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("kernel", ["numba", "torch-ops"])
@settings(max_examples=N_SLOW)
@given(data=st.data())
def test_sparse_kernels_called_directly_slow(kernel, size, data):
    _run_kernel(data.draw(kernel_cases(kernel, size, SPARSE_LARGE_SLOW), label="case"))


# ================================================================== fused layers


@dataclass
class LayerCase:
    kind: str  # "bag" or "embedding"
    dtype: torch.dtype
    rows: int
    width: int
    ids: int  # ids per step
    bags: int
    weights: bool  # per_sample_weights (bags)
    kwargs: dict[str, Any]
    steps: int
    seed: int
    path: str = ""

    @property
    def sum_dtype(self) -> torch.dtype:
        return _sum_dtype(self.dtype, self.kwargs.get("state_dtype"))


LAYER_LARGE = [(5000, 16, 4096), (20_000, 32, 2048)]
LAYER_LARGE_SLOW = LAYER_LARGE + [(100_000, 64, 16_384)]


@st.composite
def layer_cases(draw, dtype: torch.dtype, size: str, large: list = LAYER_LARGE) -> LayerCase:
    kw = draw(_options(sparse=True))
    kw["state_dtype"] = draw(st.sampled_from([None, torch.float32, torch.float64]))
    if size == "small":
        rows, width, ids = draw(st.integers(1, 30)), draw(st.integers(1, 6)), \
            draw(st.integers(0, 40))
    else:
        rows, width, ids = draw(st.sampled_from(large))
    kind = draw(st.sampled_from(["bag", "embedding"]))
    case = LayerCase(kind, dtype, rows, width, ids, draw(st.integers(1, 6)),
                     kind == "bag" and draw(st.booleans()), kw, draw(st.integers(1, 4)),
                     draw(st.integers(0, 2 ** 16)))
    case.path = _sparse_path(dtype, case.sum_dtype, dtype, ids, width)
    return case


def _run_layer(case: LayerCase) -> None:
    """The fused layer against the reference fed the gradient torch's sparse layer gives
    for the same batch. The loss is linear in the output ((out·head).sum()), so that
    gradient does not depend on θ and the reference is independent of the run; the
    forward must read the rows as dense Adagrad holds them (lazy decay caught up)."""
    hp, iav = _sparse_hp(case.kwargs)
    _label(case.path, case.dtype, case.sum_dtype, case.ids * case.width,
           (case.rows, case.width), case.kwargs)
    event(f"layer={case.kind}" + (" with per_sample_weights" if case.weights else ""))
    lazy = bool(hp["sparse_weight_decay"] == "lazy" and hp["weight_decay"])
    gen = torch.Generator().manual_seed(case.seed)
    if case.kind == "bag":
        layer = adagrad.nn.EmbeddingBag(case.rows, case.width, mode="sum")
        theirs = torch.nn.EmbeddingBag(case.rows, case.width, mode="sum", sparse=True)
    else:
        layer = adagrad.nn.Embedding(case.rows, case.width)
        theirs = torch.nn.Embedding(case.rows, case.width, sparse=True)
    with torch.no_grad():
        layer.weight.copy_(_start((case.rows, case.width), gen))
    layer.to(case.dtype)
    theirs.to(case.dtype)
    weight = layer.weight
    opt = Adagrad(layer.parameters(), **{k: v for k, v in case.kwargs.items() if v is not None})
    assert layer.update_in_backward(opt) is layer
    sum_dtype = case.sum_dtype
    independent = _independent(case.dtype, sum_dtype)
    traj = to64(weight)  # stepped in place
    rstate = reference.adagrad_sparse_init(traj, iav)
    flush_hp = {k: hp[k] for k in ("weight_decay", "accumulator_decay", "sparse_weight_decay")}
    expected_events = _expected_events(case.path)
    u_p = UNIT[case.dtype]
    table_shape = (case.rows, case.width)
    tol = _trajectory_tol(case.dtype, sum_dtype)
    if independent:
        _check_start(_held(opt.state.get(weight), table_shape, iav, sum_dtype), rstate, tol)
    with PathSpy() as spy:
        for t in range(1, case.steps + 1):
            ids = torch.randint(0, case.rows, (case.ids,), generator=gen)
            if case.kind == "bag":
                cuts = torch.randint(0, case.ids + 1, (case.bags - 1,), generator=gen)
                offsets = torch.cat([torch.zeros(1, dtype=torch.long), cuts.sort().values])
                weights = _scales(case.ids, gen) if case.weights else None
                args = (ids, offsets, None if weights is None else weights.to(case.dtype))
                out_shape = (case.bags, case.width)
            else:
                shape = (2, case.ids // 2) if case.ids % 2 == 0 else (case.ids,)
                args = (ids.view(shape),)
                out_shape = shape + (case.width,)
            # times the weights: exact in bf16; one sign per column, so that a row's
            # contributions add up (|g_r| ≥ 0.25) and touched L2 never cancels them
            head = _dyadic(out_shape, gen, 0.0, bits=6, sign=_signs(out_shape[-1:], gen))
            # what the optimizer holds: nothing ran since the last step
            before_theta = weight.detach().clone()
            before_G = _held(opt.state.get(weight), table_shape, iav, sum_dtype)
            out = layer(*args)
            # forward: the looked-up rows as the dense algorithm holds them (the flush of
            # the looked-up rows alone: it is row by row, as the step)
            looked_up, at = reference.distinct_rows(ids.numpy())
            dense_rows, _ = reference.adagrad_sparse_flush(
                _rows64(before_theta, looked_up),
                dict(rstate, sum=_rows64(before_G, looked_up), last=rstate["last"][looked_up]),
                **flush_hp)
            dense_rows_t = torch.from_numpy(dense_rows)
            at = torch.from_numpy(at)  # the lookup in that table: each id as its place in it
            if case.kind == "bag":
                expected = F.embedding_bag(at, dense_rows_t, offsets, mode="sum",
                                           per_sample_weights=weights)
                magnitude = F.embedding_bag(at, dense_rows_t.abs(), offsets, mode="sum",
                                            per_sample_weights=None if weights is None
                                            else weights.abs()).numpy()
                # a sum of n terms rounded in θ's dtype: within (n + 1)·u of Σ|terms|
                sizes = torch.diff(offsets, append=torch.tensor([case.ids])).numpy()
                terms = (sizes + 2.0)[:, None]
            else:
                expected = F.embedding(at.view(args[0].shape), dense_rows_t)
                magnitude, terms = expected.abs().numpy(), 2.0
            _assert_within(to64(out), expected.numpy(),
                           (terms + K) * u_p * magnitude + _subnormal_step(case.dtype),
                           f"step {t} forward")
            (out * head.to(case.dtype)).sum().backward()
            opt.step()  # nothing left to do for the fused table
            assert spy.take() == expected_events, f"step {t} did not take {case.path}"
            assert weight.grad is None
            state = opt.state[weight]
            assert state["sum"].dtype == sum_dtype and float(state["step"]) == t
            # torch's sparse gradient for the same batch (the loss is linear in the output)
            theirs.zero_grad(set_to_none=True)
            (theirs(*args) * head.to(case.dtype)).sum().backward()
            idx, vals = rows_and_values(theirs.weight.grad)
            rows, local = reference.distinct_rows(idx)
            _assert_rows_kept(weight.detach(), before_theta, rows, f"step {t} θ")
            _assert_rows_kept(state["sum"], before_G, rows, f"step {t} sum")
            theta_prev, G_prev = _rows64(before_theta, rows), _rows64(before_G, rows)
            theta, G = _rows64(weight.detach(), rows), _rows64(state["sum"], rows)
            theta_star, star = _sparse_ref_rows(theta_prev, G_prev, rstate, rows, local, vals, hp)
            lr_t = reference.lr_at(hp["lr"], hp["lr_decay"], t)
            _check_step(theta, G, theta_star, star["sum"], theta_prev, lr_t, case.dtype,
                        sum_dtype, lazy, what=f"step {t} (touched rows)")
            _traj_step(traj, rstate, rows, local, vals, hp)
            if independent:
                np.testing.assert_allclose(theta, traj[rows], **tol)
                np.testing.assert_allclose(G, rstate["sum"][rows], **tol)


LAYER_DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("dtype", LAYER_DTYPES[:1], ids=str)  # float32; every dtype: the slow twin
@settings(max_examples=N_DEFAULT)
@given(data=st.data())
def test_fused_layers(dtype, size, data):
    """adagrad.nn.EmbeddingBag(mode="sum", per_sample_weights or not) and
    adagrad.nn.Embedding with update_in_backward: f32/f64 tables (numba, serial and
    parallel) and bf16/fp16 (torch ops); every option, lazy and touched decay."""
    _run_layer(data.draw(layer_cases(dtype, size), label="case"))


@pytest.mark.slow
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("dtype", LAYER_DTYPES, ids=str)
@settings(max_examples=N_SLOW)
@given(data=st.data())
def test_fused_layers_slow(dtype, size, data):
    _run_layer(data.draw(layer_cases(dtype, size, LAYER_LARGE_SLOW), label="case"))


def test_fused_embedding_empty_lookup():
    """An empty lookup is one step with an empty row gradient, as torch's sparse layer and
    optimizer.step() give (the step counts: lr_decay shows it); then a real lookup."""
    lr, lr_decay = 0.1, 0.5
    layer = adagrad.nn.Embedding(5, 3)
    theta0 = to64(layer.weight)
    opt = Adagrad(layer.parameters(), lr=lr, lr_decay=lr_decay)
    layer.update_in_backward(opt)
    layer(torch.zeros((0,), dtype=torch.long)).sum().backward()
    assert float(opt.state[layer.weight]["step"]) == 1
    np.testing.assert_array_equal(to64(layer.weight), theta0)
    ids = torch.tensor([1, 1, 3])
    layer(ids).sum().backward()
    state = reference.adagrad_sparse_init(theta0)
    theta, state = reference.adagrad_sparse(theta0, [], np.zeros((0, 3)), state, lr=lr,
                                            lr_decay=lr_decay)
    theta, state = reference.adagrad_sparse(theta, ids.numpy(), np.ones((3, 3)), state, lr=lr,
                                            lr_decay=lr_decay)
    np.testing.assert_allclose(to64(layer.weight), theta, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(to64(opt.state[layer.weight]["sum"]), state["sum"], rtol=1e-6)
