"""`adagrad.AdagradNorm` (:ref:`algo-norm`).

Oracles: closed forms worked out by hand here, the float64 rule
`adagrad.reference.adagrad_norm` (for ``scope="group"`` fed the group's gradients
concatenated), dense runs for sparse ones (an untouched row's dense update is 0), and
torch's own sparse layers stepped by `step()` for the fused ones.

Trajectory bound (`_bound`): the gradients never depend on θ, so b² and the factor
``c_t = lr / (sqrt(b²) + ε)`` follow the reference's whatever θ is, and θ_T = θ_0 − Σ c_t·g_t.
A correct run then differs from the float64 run only by the rounding of θ each step (one
rounding to θ's dtype, one to the accumulator's) and by b² kept in the accumulator's dtype
(a relative error growing by at most K·u each step, K covering the norm's reduction), so
the bound is accumulated step by step from the reference's own numbers.
"""

from __future__ import annotations

import copy
import io
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sparse_support import coo

import adagrad.nn
from adagrad import Adagrad, AdagradNorm, reference
from adagrad.kernels.norm import torch_ops as norm_ops
from adagrad.kernels.norm import cpu as norm_cpu

pytestmark = pytest.mark.filterwarnings("ignore:Sparse invariant checks")

UNIT = {torch.float64: 2.0 ** -53, torch.float32: 2.0 ** -24, torch.bfloat16: 2.0 ** -8,
        torch.float16: 2.0 ** -11}
REAL = {torch.complex64: torch.float32, torch.complex128: torch.float64}
K = 24  # the norm's reduction, sqrt and square, the addition and the factor, in units of u


def _sum_dtype(dtype: torch.dtype) -> torch.dtype:
    """The documented dtype of b²: float32 for half θ, the real dtype of complex θ."""
    return {torch.bfloat16: torch.float32, torch.float16: torch.float32}.get(
        dtype, REAL.get(dtype, dtype))


def _real64(t: torch.Tensor) -> np.ndarray:
    t = t.detach()
    if t.is_complex():
        t = torch.view_as_real(t)
    return t.to(torch.float64).cpu().numpy().copy()


def _dyadic(shape, gen: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """±k/128 (64 ≤ k < 256) with some exact zeros: exact in every dtype."""
    real = REAL.get(dtype, dtype)
    full = tuple(shape) + ((2,) if dtype.is_complex else ())
    k = torch.randint(64, 256, full, generator=gen).double()
    sign = torch.randint(0, 2, full, generator=gen).double() * 2 - 1
    keep = torch.rand(full, generator=gen) > 0.2
    values = (sign * k / 128 * keep).to(real)
    return torch.view_as_complex(values) if dtype.is_complex else values


# ------------------------------------------------------------------ closed forms


def test_one_dimensional_quadratic_by_hand():
    """f(θ) = θ²/2 from θ₀ = 1, b₀² = 0, lr = 1.5, ε = 0, worked out by hand:
    g₁ = 1, b₁² = 1, θ₁ = 1 − 1.5 = −1/2; g₂ = −1/2, b₂² = 5/4,
    θ₂ = −1/2 + 1.5·(1/2)/sqrt(5/4) = (3√5 − 5)/10; g₃ = θ₂, b₃² = 5/4 + θ₂²,
    θ₃ = θ₂·(1 − 1.5/sqrt(5/4 + θ₂²))."""
    theta = torch.tensor([1.0], dtype=torch.float64, requires_grad=True)
    opt = AdagradNorm([theta], lr=1.5, eps=0.0)
    theta2 = (3 * math.sqrt(5) - 5) / 10
    expected = [(-0.5, 1.0), (theta2, 1.25),
                (theta2 * (1 - 1.5 / math.sqrt(1.25 + theta2 ** 2)), 1.25 + theta2 ** 2)]
    for want_theta, want_b2 in expected:
        opt.zero_grad()
        (0.5 * theta ** 2).sum().backward()
        opt.step()
        assert theta.item() == pytest.approx(want_theta, rel=1e-15, abs=1e-16)
        assert opt.state[theta]["sum"].item() == pytest.approx(want_b2, rel=1e-15)


def test_constant_gradient_closed_form_over_many_steps():
    """A linear loss c·θ: b_t² = b₀² + t·||c||², θ_T = θ₀ − lr·c·Σ_t 1/(sqrt(b_t²) + ε)."""
    c = torch.tensor([[0.5, -1.0], [0.25, 0.0]], dtype=torch.float64)
    theta = torch.zeros(2, 2, dtype=torch.float64, requires_grad=True)
    opt = AdagradNorm([theta], lr=0.3, initial_accumulator_value=2.0, eps=1e-3)
    for _ in range(50):
        opt.zero_grad()
        (c * theta).sum().backward()
        opt.step()
    n2 = float((c ** 2).sum())
    steps = sum(1 / (math.sqrt(2.0 + t * n2) + 1e-3) for t in range(1, 51))
    torch.testing.assert_close(theta.detach(), -0.3 * steps * c, rtol=1e-14, atol=0)
    assert opt.state[theta]["sum"].item() == pytest.approx(2.0 + 50 * n2, rel=1e-15)


@pytest.mark.parametrize("lr", [0.3, 1.0, 1e2, 1e4])
def test_converges_on_a_quadratic_for_any_learning_rate(lr):
    """The method's claim (Ward et al., Theorem 2.1's setting): on f(θ) = a·θ²/2, b grows
    until lr/b < 2/a and the iterates then converge, however large lr is (gradient descent
    with a fixed step lr diverges for every lr > 2/a = 0.5 here)."""
    a = 4.0
    theta = torch.tensor([3.0], dtype=torch.float64, requires_grad=True)
    opt = AdagradNorm([theta], lr=lr, initial_accumulator_value=1e-4)
    for _ in range(1000):
        opt.zero_grad()
        (0.5 * a * theta ** 2).sum().backward()
        opt.step()
    assert abs(theta.item()) < 1e-12
    b = math.sqrt(opt.state[theta]["sum"].item())
    assert lr / b < 2 / a  # the step size settled below the stability limit
    assert b < 4 * a * 3.0 + lr * a  # and b stays bounded (measured: about lr·a/4 for large lr)


# ------------------------------------------------------------------ the reference


def _reference_run(start: list[np.ndarray], grads: list[list[np.ndarray | None]], scope: str,
                   lr: float, iav: float, eps: float):
    """Float64 :ref:`algo-norm` runs: per tensor, or the group as one concatenated vector (a missing
    gradient is a zero one: it adds nothing to ||g||² and moves nothing). Returns the
    trajectory of θ, of b² and of the update magnitudes, per step."""
    thetas = [t.copy() for t in start]
    if scope == "group":
        flat = np.concatenate([t.reshape(-1) for t in thetas])
        state = reference.adagrad_norm_init(flat, iav)
        states = None
    else:
        states = [reference.adagrad_norm_init(t, iav) for t in thetas]
    out = []
    for step_grads in grads:
        before = [t.copy() for t in thetas]
        if scope == "group":
            g = np.concatenate([(np.zeros_like(t) if gr is None else gr).reshape(-1)
                                for t, gr in zip(thetas, step_grads)])
            flat = np.concatenate([t.reshape(-1) for t in thetas])
            flat, state = reference.adagrad_norm(flat, g, state, lr=lr, eps=eps)
            pieces = np.split(flat, np.cumsum([t.size for t in thetas])[:-1])
            thetas = [p.reshape(t.shape) for p, t in zip(pieces, thetas)]
            b2 = [float(state["sum"])] * len(thetas)
        else:
            b2 = []
            for i, gr in enumerate(step_grads):
                if gr is not None:
                    thetas[i], states[i] = reference.adagrad_norm(thetas[i], gr, states[i],
                                                                  lr=lr, eps=eps)
                b2.append(float(states[i]["sum"]))
        out.append(([t.copy() for t in thetas], b2,
                    [np.abs(t - b) for t, b in zip(thetas, before)]))
    return out


def _bound_check(params, opt, expected, step_index, bounds, dtype):
    """Compare the optimizer after step ``step_index`` with the reference (see the module
    docstring); ``bounds`` carries each tensor's accumulated bound."""
    thetas, b2s, moves = expected[step_index]
    u_p, u_s = UNIT[REAL.get(dtype, dtype)], UNIT[_sum_dtype(dtype)]
    tiny = torch.finfo(REAL.get(dtype, dtype)).smallest_normal * 4
    t = step_index + 1
    for i, (param, want) in enumerate(zip(params, thetas)):
        bounds[i] = bounds[i] + (u_p + u_s) * np.abs(want) + (t * K + 2) * u_s * moves[i] + tiny
        got = _real64(param)
        excess = np.abs(got - want) - bounds[i]
        assert (excess <= 0).all(), (f"step {t}, tensor {i}: |θ − θ*| exceeds the bound by "
                                     f"{excess.max():.3g}")
        state = opt.state.get(param)
        if state:
            got_b2 = state["sum"].item()
            assert abs(got_b2 - b2s[i]) <= t * K * u_s * b2s[i] + 1e-300, (t, i, got_b2, b2s[i])


SHAPES = st.sampled_from([(), (0,), (1,), (7,), (3, 5), (2, 3, 4), (40, 9)])


@st.composite
def norm_cases(draw, large: bool = False):
    dtype = draw(st.sampled_from([torch.float32, torch.float64, torch.bfloat16, torch.float16,
                                  torch.complex64]))
    shapes = draw(st.lists(SHAPES, min_size=1, max_size=3))
    if large:
        shapes[0] = draw(st.sampled_from([(1 << 16,), (300, 257)]))
    return dict(dtype=dtype, shapes=shapes, scope=draw(st.sampled_from(["tensor", "group"])),
                lr=draw(st.sampled_from([1e-3, 0.05, 1.0])),
                iav=draw(st.sampled_from([0.0, 0.5])),
                eps=draw(st.sampled_from([0.0, 1e-10, 1e-3])),
                steps=draw(st.integers(1, 5)), seed=draw(st.integers(0, 2 ** 16)))


def _run_against_reference(case: dict) -> None:
    gen = torch.Generator().manual_seed(case["seed"])
    dtype = case["dtype"]
    params = [(torch.rand(s, generator=gen, dtype=torch.float64) * 4 - 2).to(REAL.get(dtype, dtype))
              for s in case["shapes"]]
    params = [torch.view_as_complex(torch.stack([p, p.flip(-1) if p.dim() else p], -1))
              if dtype.is_complex else p for p in params]
    params = [p.contiguous().requires_grad_() for p in params]
    grads = [[_dyadic(p.shape, gen, dtype) if torch.rand((), generator=gen) < 0.8 else None
              for p in params] for _ in range(case["steps"])]
    opt = AdagradNorm(params, lr=case["lr"], initial_accumulator_value=case["iav"],
                      eps=case["eps"], scope=case["scope"])
    expected = _reference_run([_real64(p) for p in params],
                              [[None if g is None else _real64(g) for g in gs] for gs in grads],
                              case["scope"], case["lr"], case["iav"], case["eps"])
    bounds = [0.0] * len(params)
    for index, step_grads in enumerate(grads):
        for p, g in zip(params, step_grads):
            p.grad = g
        opt.step()
        _bound_check(params, opt, expected, index, bounds, dtype)


@given(case=norm_cases())
@settings(max_examples=40)
def test_dense_against_the_reference(case):
    _run_against_reference(case)


@given(case=norm_cases(large=True))
@settings(max_examples=6)
def test_dense_against_the_reference_large_tensors(case):
    _run_against_reference(case)


@given(case=norm_cases())
@settings(max_examples=200)
@pytest.mark.slow
def test_dense_against_the_reference_slow(case):
    _run_against_reference(case)


# ------------------------------------------------------------------ group scope


def test_group_scope_shares_one_b2_and_params_without_grad_follow_it():
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(3, 4, generator=gen, dtype=torch.float64).requires_grad_()
    b = torch.randn(5, generator=gen, dtype=torch.float64).requires_grad_()
    c = torch.randn(2, generator=gen, dtype=torch.float64).requires_grad_()
    opt = AdagradNorm([{"params": [a, b, c]}], lr=0.1, initial_accumulator_value=0.25,
                      scope="group")
    ga, gb = torch.randn(3, 4, generator=gen, dtype=torch.float64), torch.randn(5, generator=gen,
                                                                              dtype=torch.float64)
    a_before, b_before, c_before = a.detach().clone(), b.detach().clone(), c.detach().clone()
    a.grad, b.grad = ga, gb
    opt.step()
    b2 = 0.25 + float((ga ** 2).sum() + (gb ** 2).sum())
    factor = 0.1 / (math.sqrt(b2) + 1e-10)
    for p in (a, b, c):
        assert opt.state[p]["sum"].item() == pytest.approx(b2, rel=1e-15)
    torch.testing.assert_close(a.detach(), a_before - factor * ga, rtol=1e-15, atol=1e-16)
    torch.testing.assert_close(b.detach(), b_before - factor * gb, rtol=1e-15, atol=1e-16)
    assert torch.equal(c.detach(), c_before)
    assert opt.state[c]["step"].item() == 0 and opt.state[a]["step"].item() == 1
    # differs from scope="tensor": each would divide by its own norm
    a2 = torch.zeros(3, 4, dtype=torch.float64, requires_grad=True)
    alone = AdagradNorm([a2], lr=0.1, initial_accumulator_value=0.25)
    a2.grad = ga
    alone.step()
    assert alone.state[a2]["sum"].item() < b2


def test_group_scope_state_dict_round_trip_keeps_the_shared_value():
    ps = [torch.randn(4, requires_grad=True), torch.randn(2, 3, requires_grad=True)]
    opt = AdagradNorm(ps, lr=0.1, scope="group")
    for _ in range(3):
        for p in ps:
            p.grad = torch.randn_like(p)
        opt.step()
    saved = copy.deepcopy(opt.state_dict())
    clones = [p.detach().clone().requires_grad_() for p in ps]
    other = AdagradNorm(clones, lr=0.1, scope="group")
    other.load_state_dict(saved)
    for p, q in zip(ps, clones):
        assert torch.equal(opt.state[p]["sum"], other.state[q]["sum"])
    grads = [torch.randn_like(p) for p in ps]
    for opt_, params in ((opt, ps), (other, clones)):
        for p, g in zip(params, grads):
            p.grad = g.clone()
        opt_.step()
    for p, q in zip(ps, clones):
        assert torch.equal(p, q)


def test_group_scope_parameter_added_later_gets_the_groups_value():
    """State created lazily for a parameter whose group-mates already stepped holds the
    group's b², not b₀² (e.g. `state_dict()` before its first gradient)."""
    a, b = torch.randn(3, requires_grad=True), torch.randn(3, requires_grad=True)
    opt = AdagradNorm([a, b], lr=0.1, initial_accumulator_value=1.0, scope="group")
    a.grad = torch.ones(3)
    opt.step()
    del opt.state[b]  # as if b's state had never been created
    state = opt.state_dict()["state"]
    assert state[0]["sum"].item() == state[1]["sum"].item() == 4.0


def test_group_scope_mixed_dtypes_share_the_widest_value():
    a = torch.randn(3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(3, dtype=torch.bfloat16, requires_grad=True)
    opt = AdagradNorm([a, b], lr=0.1, scope="group")
    a.grad, b.grad = torch.full((3,), 0.1, dtype=torch.float64), torch.ones(3, dtype=torch.bfloat16)
    opt.step()
    assert opt.state[a]["sum"].dtype == torch.float64 and opt.state[b]["sum"].dtype == torch.float32
    assert opt.state[a]["sum"].item() == pytest.approx(3.03, rel=1e-15)
    assert opt.state[b]["sum"].item() == pytest.approx(3.03, rel=1e-7)


# ------------------------------------------------------------------ sparse gradients


def _table_grads(rows, width, steps, gen, dtype, nnz=12):
    """Row gradients with duplicates, values k/8 (|k| ≤ 4): every sum of duplicates is
    exact even in bf16, so the dense twin's gradient is the same gradient."""
    out = []
    for _ in range(steps):
        idx = torch.randint(0, max(rows // 2, 1), (nnz,), generator=gen)
        vals = (torch.randint(-4, 5, (nnz, width), generator=gen) / 8).to(dtype)
        out.append(coo(idx, vals, (rows, width)))
    return out


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("scope", ["tensor", "group"])
def test_sparse_equals_dense_and_leaves_untouched_rows(dtype, scope):
    gen = torch.Generator().manual_seed(2)
    rows, width = 30, 4
    start = (torch.rand(rows, width, generator=gen) * 4 - 2).to(dtype)
    extra_start = torch.randn(5, generator=gen).to(dtype)
    sparse_table = start.clone().requires_grad_()
    dense_table = start.clone().requires_grad_()
    sparse_extra, dense_extra = extra_start.clone().requires_grad_(), extra_start.clone().requires_grad_()
    sparse_opt = AdagradNorm([sparse_table, sparse_extra], lr=0.2, scope=scope)
    dense_opt = AdagradNorm([dense_table, dense_extra], lr=0.2, scope=scope)
    touched = torch.zeros(rows, dtype=torch.bool)
    for grad in _table_grads(rows, width, 6, gen, dtype):
        extra_grad = _dyadic((5,), gen, dtype)
        touched[grad._indices()[0]] = True
        sparse_table.grad, sparse_extra.grad = grad, extra_grad
        dense_table.grad, dense_extra.grad = grad.to_dense(), extra_grad.clone()
        sparse_opt.step()
        dense_opt.step()
    tol = dict(rtol=2 * UNIT[dtype] + 1e-12, atol=2 * UNIT[dtype])
    torch.testing.assert_close(sparse_table[touched], dense_table[touched], **tol)
    torch.testing.assert_close(sparse_extra, dense_extra, **tol)
    assert torch.equal(sparse_table.detach()[~touched], start[~touched])
    assert torch.equal(dense_table.detach()[~touched], start[~touched])
    for s, d in ((sparse_table, dense_table), (sparse_extra, dense_extra)):
        torch.testing.assert_close(sparse_opt.state[s]["sum"], dense_opt.state[d]["sum"],
                                   rtol=1e-6, atol=0)


@given(rows=st.integers(1, 40), width=st.sampled_from([1, 3, 8]), nnz=st.integers(0, 30),
       trailing=st.booleans(), dtype=st.sampled_from([torch.float32, torch.float64,
                                                     torch.bfloat16, torch.float16]),
       scope=st.sampled_from(["tensor", "group"]), steps=st.integers(1, 4),
       seed=st.integers(0, 2 ** 16))
@settings(max_examples=30)
def test_sparse_against_the_reference(rows, width, nnz, trailing, dtype, scope, steps, seed):
    """Random tables (2-D, or 3-D with one sparse dimension), duplicates, empty gradients:
    the sparse run against the float64 rule fed the densified gradient (duplicates summed
    in float64), with the module's trajectory bound."""
    gen = torch.Generator().manual_seed(seed)
    shape = (rows, width, 2) if trailing else (rows, width)
    table = (torch.rand(shape, generator=gen, dtype=torch.float64) * 4 - 2).to(dtype)
    table.requires_grad_()
    opt = AdagradNorm([table], lr=0.1, initial_accumulator_value=0.5, scope=scope)
    grads, dense = [], []
    for _ in range(steps):
        idx = torch.randint(0, rows, (nnz,), generator=gen)
        vals = (torch.randint(-4, 5, (nnz,) + shape[1:], generator=gen) / 8).to(dtype)
        grads.append(coo(idx, vals, shape))
        summed = np.zeros(shape)
        np.add.at(summed, idx.numpy(), vals.double().numpy())
        dense.append([summed])
    expected = _reference_run([_real64(table)], dense, scope, 0.1, 0.5, 1e-10)
    bounds = [0.0]
    for index, grad in enumerate(grads):
        table.grad = grad
        opt.step()
        _bound_check([table], opt, expected, index, bounds, dtype)


def test_sparse_duplicates_are_summed_before_the_norm():
    """Two positions of one row, +1 and −1: the row's gradient is 0, so b² is unchanged
    (applied one by one, b² would grow by 2)."""
    table = torch.ones(3, 2, dtype=torch.float64, requires_grad=True)
    opt = AdagradNorm([table], lr=0.1, initial_accumulator_value=1.0)
    table.grad = coo([1, 1, 2], torch.tensor([[1.0, 1.0], [-1.0, -1.0], [0.0, 2.0]],
                                            dtype=torch.float64), (3, 2))
    opt.step()
    assert opt.state[table]["sum"].item() == 5.0
    expected = torch.ones(3, 2, dtype=torch.float64)
    expected[2, 1] -= 0.1 * 2 / (math.sqrt(5) + 1e-10)
    torch.testing.assert_close(table.detach(), expected, rtol=1e-15, atol=0)


@pytest.mark.parametrize("kind", ["bag", "bag-weights", "bag-mean", "embedding"])
def test_fused_layer_equals_torch_sparse_layer_and_step(kind):
    torch.manual_seed(0)
    rows, width = 25, 4
    if kind == "embedding":
        theirs = torch.nn.Embedding(rows, width, sparse=True)
        ours = adagrad.nn.Embedding(rows, width)
    else:
        mode = "mean" if kind == "bag-mean" else "sum"
        theirs = torch.nn.EmbeddingBag(rows, width, sparse=True, mode=mode)
        ours = adagrad.nn.EmbeddingBag(rows, width, mode=mode)
    ours.load_state_dict(theirs.state_dict())
    head = torch.randn(width, 1)
    their_opt = AdagradNorm(theirs.parameters(), lr=0.3)
    our_opt = AdagradNorm(ours.parameters(), lr=0.3)
    ours.update_in_backward(our_opt)
    gen = torch.Generator().manual_seed(3)
    for _ in range(5):
        ids = torch.randint(0, 8, (12,), generator=gen)
        if kind == "embedding":
            args = (ids.view(4, 3),)
        else:
            weights = torch.rand(12, generator=gen) if kind == "bag-weights" else None
            args = (ids, torch.tensor([0, 4, 4, 9]), weights)
        for layer, opt in ((theirs, their_opt), (ours, our_opt)):
            opt.zero_grad()
            out = layer(*args)
            ((out @ head - 1) ** 2).sum().backward()
            opt.step()
        torch.testing.assert_close(ours.weight, theirs.weight, rtol=1e-6, atol=1e-7)
        torch.testing.assert_close(our_opt.state[ours.weight]["sum"],
                                   their_opt.state[theirs.weight]["sum"], rtol=1e-6, atol=0)
    assert our_opt.state[ours.weight]["step"].item() == 5


def test_fused_layer_in_a_shared_group_is_refused_at_its_first_step():
    layer = adagrad.nn.EmbeddingBag(10, 3, mode="sum")
    other = torch.zeros(3, requires_grad=True)
    opt = AdagradNorm([layer.weight, other], lr=0.1, scope="group")
    layer.update_in_backward(opt)
    before = layer.weight.detach().clone()
    with pytest.raises(RuntimeError, match="cannot be stepped alone"):
        (layer(torch.tensor([1, 2, 3]), torch.tensor([0])) @ other).sum().backward()
    assert torch.equal(layer.weight.detach(), before) and not opt.state.get(layer.weight)
    # alone in its group, the shared b² is the tensor's own: exact
    opt = AdagradNorm([{"params": [layer.weight]}, {"params": [other]}], lr=0.1, scope="group")
    layer.update_in_backward(opt)
    layer(torch.tensor([1, 2, 3]), torch.tensor([0])).sum().backward()
    assert opt.state[layer.weight]["step"].item() == 1


# ------------------------------------------------------------------ state and checkpoints


def test_state_is_lazy_0d_and_follows_the_dtype_policy():
    ps = {dtype: torch.zeros(3, dtype=dtype, requires_grad=True)
          for dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16,
                        torch.complex64)}
    opt = AdagradNorm(ps.values(), lr=0.1)
    assert not opt.state
    for p in ps.values():
        p.grad = torch.full_like(p, 1 + 1j) if p.is_complex() else torch.ones_like(p)
    opt.step()
    for dtype, p in ps.items():
        state = opt.state[p]
        assert set(state) == {"step", "sum"} and state["sum"].shape == ()
        assert state["sum"].dtype == _sum_dtype(dtype) and state["sum"].device == p.device
    assert opt.state[ps[torch.complex64]]["sum"].item() == 6.0  # |1 + i|² = 2 per element


def test_loading_keeps_float32_b2_for_bf16_params():
    p = torch.zeros(4, dtype=torch.bfloat16, requires_grad=True)
    opt = AdagradNorm([p], lr=0.1, initial_accumulator_value=1.0)
    p.grad = torch.full((4,), 1 / 3, dtype=torch.bfloat16)
    opt.step()
    saved = opt.state_dict()
    other = AdagradNorm([p.detach().clone().requires_grad_()], lr=0.1)
    other.load_state_dict(saved)
    loaded = next(iter(other.state.values()))["sum"]
    assert loaded.dtype == torch.float32 and torch.equal(loaded, opt.state[p]["sum"])


@pytest.mark.parametrize("scope", ["tensor", "group"])
def test_mid_run_save_and_load_ends_bit_identical(scope):
    gen = torch.Generator().manual_seed(4)
    start = [torch.randn(6, 3, generator=gen), torch.randn(4, generator=gen).to(torch.bfloat16)]
    grads = [[torch.randn(p.shape, generator=gen).to(p.dtype) for p in start] for _ in range(8)]

    def run(params, opt, steps):
        for gs in steps:
            for p, g in zip(params, gs):
                p.grad = g.clone()
            opt.step()

    straight = [p.clone().requires_grad_() for p in start]
    opt = AdagradNorm(straight, lr=0.1, scope=scope, initial_accumulator_value=0.1)
    run(straight, opt, grads)
    first = [p.clone().requires_grad_() for p in start]
    opt1 = AdagradNorm(first, lr=0.1, scope=scope, initial_accumulator_value=0.1)
    run(first, opt1, grads[:3])
    buffer = io.BytesIO()
    torch.save({"params": first, "optimizer": opt1.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer)
    resumed = [p.detach().clone().requires_grad_() for p in saved["params"]]
    opt2 = AdagradNorm(resumed, lr=0.5, scope="tensor")  # hyperparameters come from the checkpoint
    opt2.load_state_dict(saved["optimizer"])
    run(resumed, opt2, grads[3:])
    for a, b in zip(straight, resumed):
        assert torch.equal(a, b)
        for key in ("step", "sum"):
            assert torch.equal(opt.state[a][key], opt2.state[b][key])
    assert opt2.param_groups[0]["scope"] == scope


def test_checkpoints_are_refused_across_classes():
    p = torch.zeros(3, requires_grad=True)
    norm, plain = AdagradNorm([p]), Adagrad([p])
    p.grad = torch.ones(3)
    norm.step()
    plain.step()
    with pytest.raises(ValueError, match="lacks 'scope'.*not a checkpoint of AdagradNorm"):
        AdagradNorm([p]).load_state_dict(plain.state_dict())
    with pytest.raises(ValueError, match="not a checkpoint of Adagrad"):
        Adagrad([p]).load_state_dict(norm.state_dict())


def test_checkpoint_with_a_bad_b2_is_refused():
    p = torch.zeros(3, requires_grad=True)
    opt = AdagradNorm([p])
    p.grad = torch.ones(3)
    opt.step()
    for bad, message in ((torch.zeros(3), "has shape"), (torch.tensor(-1.0), "negative"),
                         (torch.tensor(float("nan")), "NaN")):
        saved = copy.deepcopy(opt.state_dict())
        saved["state"][0]["sum"] = bad
        with pytest.raises(ValueError, match=message):
            AdagradNorm([p]).load_state_dict(saved)


@pytest.mark.parametrize("kwargs, name", [
    (dict(lr=-0.1), "lr"), (dict(eps=-1e-3), "eps"),
    (dict(initial_accumulator_value=-1.0), "initial_accumulator_value"),
    (dict(scope="layer"), "scope"), (dict(lr=float("nan")), "lr"),
])
def test_invalid_hyperparameters_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=f"argument `{name}`"):
        AdagradNorm([torch.zeros(2, requires_grad=True)], **kwargs)
    opt = AdagradNorm([torch.zeros(2, requires_grad=True)])
    with pytest.raises(ValueError, match=f"argument `{name}`"):
        opt.add_param_group({"params": [torch.zeros(1, requires_grad=True)], **kwargs})
    saved = opt.state_dict()
    saved["param_groups"][0].update(kwargs)
    with pytest.raises(ValueError, match=f"argument `{name}`"):
        opt.load_state_dict(saved)


def test_zero_gradients_with_zero_eps_do_not_make_nan():
    p = torch.ones(3, requires_grad=True)
    opt = AdagradNorm([p], eps=0.0)
    p.grad = torch.zeros(3)
    opt.step()
    assert torch.equal(p.detach(), torch.ones(3))


def test_stepping_one_parameter_of_a_shared_group_alone_is_refused():
    a, b = torch.ones(2, requires_grad=True), torch.ones(2, requires_grad=True)
    opt = AdagradNorm([a, b], scope="group")
    a.grad = torch.ones(2)
    with pytest.raises(RuntimeError, match="cannot be stepped alone"):
        opt.step_parameter(a)
    assert torch.equal(a.detach(), torch.ones(2)) and not opt.state


# ------------------------------------------------------------------ the two paths


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("size", [0, 1, 7, 8, 9, norm_cpu.CHUNK - 1, norm_cpu.CHUNK + 3,
                                  (1 << 16) + 5])
def test_squared_norm_kernels_against_an_exact_sum(dtype, size):
    """The numba kernel (serial below 65,536 elements, parallel above) and the torch-ops
    reduction against ``math.fsum`` of the float64 squares (exact, then one rounding)."""
    values = torch.randn(size, generator=torch.Generator().manual_seed(size)).to(dtype)
    exact = math.fsum(float(x) ** 2 for x in values.double().tolist())
    tol = 2 * size * 2.0 ** -53 * exact + 1e-300  # a float64 sum of `size` terms
    assert abs(norm_cpu.squared_norm(values) - exact) <= tol
    assert abs(norm_ops.squared_norm_torch(values).item() - exact) <= tol
    strided = torch.stack([values, values], 1)[:, 0]  # non-contiguous: copied first
    assert norm_cpu.squared_norm(strided) == norm_cpu.squared_norm(values)


def test_parallel_and_serial_kernels_give_the_same_bits():
    values = torch.randn(3 * norm_cpu.CHUNK + 11)
    flat = norm_cpu.as_numpy(values)
    assert norm_cpu._float_serial(flat) == norm_cpu._float_parallel(flat)
    words = norm_cpu.as_numpy(values.to(torch.bfloat16))
    assert norm_cpu._bf16_serial(words) == norm_cpu._bf16_parallel(words)


class _Paths:
    """Counts the reductions that ran: the numba kernels, by name, and torch's."""

    def __init__(self, monkeypatch):
        self.seen: list[str] = []
        for key, kernel in list(norm_cpu._KERNELS.items()):
            monkeypatch.setitem(norm_cpu._KERNELS, key, self._spy(kernel.__name__, kernel))
        monkeypatch.setattr(norm_ops, "squared_norm_torch",
                            self._spy("torch", norm_ops.squared_norm_torch))

    def _spy(self, label, fn):
        def spy(*args):
            self.seen.append(label)
            return fn(*args)
        return spy


@pytest.mark.parametrize("dtype, numel, kernel", [
    (torch.float32, 100, "_float_serial"), (torch.float64, 1 << 16, "_float_parallel"),
    (torch.bfloat16, 100, "_bf16_serial"), (torch.bfloat16, 1 << 16, "_bf16_parallel"),
    (torch.float16, 100, "_float_serial"), (torch.complex64, 100, "_float_serial")])
def test_the_cpu_takes_the_numba_reduction(monkeypatch, dtype, numel, kernel):
    paths = _Paths(monkeypatch)
    p = torch.zeros(numel, dtype=dtype, requires_grad=True)
    opt = AdagradNorm([p])
    p.grad = torch.ones_like(p)
    opt.step()
    assert paths.seen == [kernel]


@given(case=norm_cases())
@settings(max_examples=25)
def test_torch_ops_path_against_the_reference(case):
    """The path of other devices (torch's float64 ``vector_norm``), forced on the CPU."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        paths = _Paths(monkeypatch)
        monkeypatch.setattr(norm_cpu, "supports", lambda grad: False)
        _run_against_reference(case)
    assert set(paths.seen) <= {"torch"}
