"""Helpers shared by tests/test_proximal.py and tests/test_dual_averaging.py.

Nothing here computes an update: the oracles are the float64 rules of `adagrad.reference`
and closed forms written in the tests. What is here: exact (dyadic) test data, row
gradients, the comparison with a bound, and a spy that records which kernels ran.
"""

from __future__ import annotations

import contextlib
import functools
import io
from collections.abc import Iterator
from typing import Any
from unittest import mock

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from numba.core.dispatcher import Dispatcher

from conftest import to64  # noqa: F401 (the members' tests take it from here)

from adagrad.optim.base import SparseGrad

PARALLEL = 1 << 16  # the documented threshold of the parallel kernels
HALF = (torch.bfloat16, torch.float16)
UNIT = {torch.float64: 2.0 ** -53, torch.float32: 2.0 ** -24, torch.bfloat16: 2.0 ** -8,
        torch.float16: 2.0 ** -11}
K = 8  # arithmetic slack, in units of the accumulator's roundoff

# hypothesis examples per case: the default pass (the parallel kernels' cases cost ~10x
# more; float32 only, see `sparse_case`), and the slow pass (pytest -m slow, every dtype)
N_EXAMPLES, N_PARALLEL, N_SLOW = 12, 5, 60


def examples(path: str) -> int:
    """The default pass's examples for a case of ``path``."""
    return N_PARALLEL if path.endswith("parallel") else N_EXAMPLES


def run_examples(cases: st.SearchStrategy, run, count: int) -> None:
    """``run`` on ``count`` examples of ``cases`` (a hypothesis test made here, so that the
    count can depend on the parametrized path)."""
    settings(max_examples=count)(given(case=cases)(run))()


def dyadic(shape: tuple[int, ...], gen: torch.Generator, zero_frac: float = 0.0) -> torch.Tensor:
    """±k/128 with 64 ≤ k < 256 (8 significant bits) and exact zeros, as float64: exact
    in every dtype, and so are sums of a few of them in float32."""
    k = torch.randint(64, 256, shape, generator=gen).to(torch.float64)
    sign = torch.randint(0, 2, shape, generator=gen).to(torch.float64) * 2 - 1
    keep = (torch.rand(shape, generator=gen) >= zero_frac).to(torch.float64)
    return sign * k / 128 * keep


def start(shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    return torch.randn(shape, generator=gen, dtype=torch.float64).clamp_(-2, 2)


def sum_dtype_of(dtype: torch.dtype, state_dtype: torch.dtype | None) -> torch.dtype:
    """The documented accumulator dtype: ``state_dtype``, else float32 for fp16/bf16
    parameters and the parameter's own otherwise."""
    if state_dtype is not None:
        return state_dtype
    return torch.float32 if dtype in HALF else dtype


def coo(indices: torch.Tensor, values: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """An uncoalesced COO row gradient."""
    return torch.sparse_coo_tensor(indices.reshape(1, -1), values, shape,
                                   check_invariants=False)


def densify(indices: torch.Tensor, values: torch.Tensor, shape: tuple[int, ...]) -> np.ndarray:
    """A row gradient as a dense float64 array (duplicates summed in float64)."""
    out = np.zeros(shape, np.float64)
    np.add.at(out, indices.numpy(), values.to(torch.float64).numpy())
    return out


def assert_within(actual: np.ndarray, expected: np.ndarray, bound: np.ndarray | float,
                  what: str) -> None:
    """|actual - expected| ≤ bound everywhere (NaN fails), with the worst place named."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    err = np.abs(actual - expected)
    bound = np.broadcast_to(np.asarray(bound, np.float64), err.shape)
    bad = ~(err <= bound)
    if bad.any():
        worst = np.unravel_index(np.argmax(np.where(bad, np.nan_to_num(err, nan=np.inf) - bound,
                                                    -np.inf)), err.shape)
        raise AssertionError(f"{what}: {int(bad.sum())} of {err.size} outside the bound; worst "
                             f"at {worst}: got {actual[worst]!r}, reference {expected[worst]!r}, "
                             f"bound {bound[worst]!r}")


def subnormal(dtype: torch.dtype) -> float:
    """The spacing of ``dtype``'s subnormals: what rounding may lose near 0."""
    info = torch.finfo(dtype)
    return info.smallest_normal * info.eps


def bits(t: torch.Tensor) -> torch.Tensor:
    """A tensor's bits, for bit-identity checks (-0.0 ≠ 0.0, NaN = NaN)."""
    t = t.detach().contiguous()
    return t.view({2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])


def assert_bit_identical(a: torch.Tensor, b: torch.Tensor, what: str = "") -> None:
    assert a.dtype == b.dtype and a.shape == b.shape, what
    differ = bits(a) != bits(b)
    assert not differ.any(), (f"{what}: {int(differ.sum())} of {differ.numel()} differ, max "
                              f"{(a.double() - b.double()).abs().max().item():.3g}")


def resumed(state_dict: dict[str, Any]) -> dict[str, Any]:
    """A state dict as it comes back from torch.save / torch.load."""
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


class KernelSpy:
    """Records the kernels that run: the named entry points, and the numba kernels of the
    given dispatch tables (``numba-parallel`` for one compiled with ``parallel=True``,
    ``numba-serial`` otherwise)."""

    def __init__(self, entry_points: list[tuple[Any, str, str]], numba_tables: list[dict]):
        self.entry_points = entry_points
        self.numba_tables = numba_tables
        self.events: list[str] = []
        self._stack = contextlib.ExitStack()

    def _wrap(self, label: str, fn):
        @functools.wraps(fn)
        def spy(*args, **kwargs):
            self.events.append(label)
            return fn(*args, **kwargs)
        return spy

    def __enter__(self) -> KernelSpy:
        stack = self._stack.__enter__()
        for module, name, label in self.entry_points:
            stack.enter_context(mock.patch.object(module, name,
                                                  self._wrap(label, getattr(module, name))))
        for table in self.numba_tables:
            assert table and all(isinstance(f, Dispatcher) for f in table.values()), table
            stack.enter_context(mock.patch.dict(table, {
                key: self._wrap("numba-parallel" if f.targetoptions.get("parallel")
                                else "numba-serial", f)
                for key, f in table.items()}))
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stack.__exit__(*exc)

    def take(self) -> set[str]:
        events, self.events = set(self.events), []
        return events


# ------------------------------------------------------------------ sparse cases

SPARSE_PATHS = ["numba-serial", "numba-parallel", "torch-ops", "torch-ops-half"]
SPARSE_LARGE = [(4096, 32, 2048), (3000, 16, 4500)]  # (rows, D, nnz) with nnz·D ≥ 65,536
EXPECTED_SPARSE = {"numba-serial": {"sparse:numba", "numba-serial"},
                   "numba-parallel": {"sparse:numba", "numba-parallel"},
                   "torch-ops": {"sparse:torch-ops"}, "torch-ops-half": {"sparse:torch-ops"}}


@st.composite
def sparse_case(draw, path: str, kw: dict[str, Any], float32_only: bool = False) -> dict[str, Any]:
    """A table and row gradients that take ``path`` by the documented dispatch rules:
    numba for float32/float64/bfloat16 tables with float32/float64 values and sums
    (serial below nnz·D = 65,536, parallel from there); "torch-ops-half" for fp16/bf16
    gradient values or half-precision sums; "torch-ops" the same float32/float64 cases
    with the CPU kernels switched off (`cpu_kernels_off`: the path CUDA takes).
    ``float32_only`` (the default pass): float32 tables, values and sums, so each numba
    kernel compiles one signature; the slow pass draws every dtype."""
    if path == "torch-ops-half":
        dtype = draw(st.sampled_from([torch.bfloat16, torch.float16, torch.float32]))
        state_dtype = draw(st.sampled_from(
            HALF if dtype == torch.float32 else [None, torch.float32, dtype]))
        values_dtype, feed = dtype, "grad"
    else:
        dtypes = [torch.float32, torch.float64] + ([torch.bfloat16] if path != "torch-ops" else [])
        dtype = draw(st.sampled_from(dtypes[:1] if float32_only else dtypes))
        state_dtype = draw(st.sampled_from([None, torch.float32] if dtype == torch.bfloat16
                                           or float32_only else [None, torch.float32, torch.float64]))
        # a bf16 table's COO gradient is bf16, which the numba kernels do not read; a row
        # gradient with float32 values (what a fused layer may hand over) is
        values_dtype = torch.float32 if dtype == torch.bfloat16 else dtype
        feed = "step_rows" if dtype == torch.bfloat16 else draw(st.sampled_from(["grad",
                                                                                 "step_rows"]))
    if path == "numba-parallel":
        rows, width, nnz = draw(st.sampled_from(SPARSE_LARGE))
        id_range = draw(st.sampled_from([rows, rows // 2]))
    else:
        rows, width, nnz = draw(st.integers(1, 30)), draw(st.integers(1, 5)), draw(st.integers(0, 40))
        id_range = draw(st.integers(1, rows))
    return dict(path=path, dtype=dtype, values_dtype=values_dtype, kw={**kw, "state_dtype": state_dtype},
                rows=rows, width=width, nnz=nnz, id_range=id_range, feed=feed,
                steps=draw(st.integers(1, 6 if path != "numba-parallel" else 3)),
                seed=draw(st.integers(0, 2 ** 16)))


def sparse_grads(case: dict[str, Any], gen: torch.Generator):
    """Per step: row indices (duplicates likely) and dyadic values of the case's dtype."""
    for _ in range(case["steps"]):
        indices = torch.randint(0, case["id_range"], (case["nnz"],), generator=gen)
        yield indices, dyadic((case["nnz"], case["width"]), gen, 0.1).to(case["values_dtype"])


def feed(opt, param: torch.Tensor, indices: torch.Tensor, values: torch.Tensor, how: str) -> None:
    """One step from a row gradient: as a COO ``param.grad`` or through ``step_rows``."""
    if how == "grad":
        param.grad = coo(indices, values, tuple(param.shape))
        opt.step()
    else:
        opt.step_rows(param, SparseGrad(param.detach(), indices, values))


@contextlib.contextmanager
def cpu_kernels_off(off: bool = True) -> Iterator[None]:
    """Every numba kernel reports that it does not support its inputs, so that the
    dispatchers take the torch-ops kernels, as on a GPU."""
    if not off:
        yield
        return
    from adagrad.kernels.engine import catch_up_cpu
    from adagrad.kernels.adagrad import cpu as dense_cpu
    from adagrad.kernels.dual_averaging import cpu as dual_averaging_cpu
    from adagrad.kernels.engine import sparse_cpu
    with contextlib.ExitStack() as stack:
        for module in (catch_up_cpu, dense_cpu, dual_averaging_cpu, sparse_cpu):
            stack.enter_context(mock.patch.object(module, "supports", lambda *args: False))
        yield
