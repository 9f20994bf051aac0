"""Sparse gradients (:ref:`algo-sparse`, issue 3): parity with torch and with the references.

Every expected value comes from `adagrad.reference` (float64), `torch.optim.Adagrad`, or a
closed form written here; never from our own optimizer or kernels.
Companion files: test_sparse_decay.py (weight decay modes, accumulator decay),
test_sparse_edge.py (edge cases, dtypes), test_sparse_kernels.py (kernels, property test).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sparse_support import (
    DenseRef,
    EmbeddingWorkload,
    SparseRef,
    assert_close64,
    coo,
    np64,
    random_row_grad,
    rows_and_values,
    run_opt,
    tol_for,
    torch_adagrad_replay,
)

from adagrad import Adagrad

# torch.optim.Adagrad itself builds COO tensors without invariant checks.
pytestmark = pytest.mark.filterwarnings("ignore:Sparse invariant checks")

EMBEDDING_CASES = [
    pytest.param("embedding", "sum", False, id="Embedding"),
    pytest.param("bag", "sum", False, id="EmbeddingBag-sum"),
    pytest.param("bag", "mean", False, id="EmbeddingBag-mean"),
    pytest.param("bag", "sum", True, id="EmbeddingBag-sum-per_sample_weights"),
    pytest.param("embedding", "padding_idx", False, id="Embedding-padding_idx"),
    pytest.param("bag", "padding_idx", False, id="EmbeddingBag-mean-padding_idx"),
]


def _workload(kind, mode, psw, **kw):
    """Id 0 is frequent in the workload's batches; "padding_idx" makes it the padding row
    (torch drops it from the gradient or gives it zeros; either way it must not move)."""
    if mode == "padding_idx":
        return EmbeddingWorkload(kind, "mean", per_sample_weights=psw, padding_idx=0, **kw)
    return EmbeddingWorkload(kind, mode, per_sample_weights=psw, **kw)


def _has_duplicates(grad: torch.Tensor) -> bool:
    idx, _ = rows_and_values(grad)
    return np.unique(idx).size < idx.size


# ------------------------------------------------------------------ parity with torch


@pytest.mark.parametrize("kind,mode,psw", EMBEDDING_CASES)
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64], ids=["int32", "int64"])
def test_embedding_gradients_match_torch_and_reference(kind, mode, psw, index_dtype):
    work = _workload(kind, mode, psw, index_dtype=index_dtype)
    w0, grads, opt, weight = work.train(lambda ps: Adagrad(ps, lr=0.1), steps=5)
    # The workload really produces what the issue is about.
    assert all(g.is_sparse and not g.is_coalesced() for g in grads)
    assert any(_has_duplicates(g) for g in grads)
    if mode == "padding_idx":
        assert torch.equal(weight.detach()[0], w0[0])

    t_param, t_sum = torch_adagrad_replay(w0, grads, lr=0.1)
    torch.testing.assert_close(weight.detach(), t_param, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(opt.state[weight]["sum"], t_sum, rtol=1e-6, atol=1e-7)
    assert float(opt.state[weight]["step"]) == 5.0

    ref = SparseRef(w0, lr=0.1)
    for g in grads:
        ref.step(g)
    assert_close64(weight, ref.theta, **tol_for(torch.float32))
    assert_close64(opt.state[weight]["sum"], ref.sum, **tol_for(torch.float32))


@pytest.mark.parametrize("kind,mode,psw", EMBEDDING_CASES)
def test_embedding_float64_equals_reference(kind, mode, psw):
    work = _workload(kind, mode, psw, dtype=torch.float64)
    kw = dict(lr=0.2, lr_decay=0.1, initial_accumulator_value=0.05)
    w0, grads, opt, weight = work.train(lambda ps: Adagrad(ps, **kw), steps=4)
    ref = SparseRef(w0, 0.05, lr=0.2, lr_decay=0.1)
    for g in grads:
        ref.step(g)
    assert_close64(weight, ref.theta, rtol=1e-12, atol=1e-14)
    assert_close64(opt.state[weight]["sum"], ref.sum, rtol=1e-12, atol=1e-14)
    t_param, t_sum = torch_adagrad_replay(w0, grads, **kw)
    torch.testing.assert_close(weight.detach(), t_param, rtol=1e-12, atol=1e-14)


TORCH_OPTIONS = [
    {},
    {"lr_decay": 0.3},
    {"maximize": True},
    {"initial_accumulator_value": 0.7},
    {"eps": 1e-2},
    {"lr": 0.5, "lr_decay": 0.05, "maximize": True, "initial_accumulator_value": 0.1,
     "eps": 1e-4},
]


@pytest.mark.parametrize("options", TORCH_OPTIONS, ids=lambda o: ",".join(o) or "defaults")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_random_sparse_grads_match_torch(options, dtype):
    gen = torch.Generator().manual_seed(3)
    p0 = torch.randn(30, 5, generator=gen).to(dtype)
    grads = [random_row_grad(30, 5, 40, dtype=dtype, id_range=12, gen=gen) for _ in range(6)]
    p = p0.clone().requires_grad_(True)
    opt = Adagrad([p], **options)
    run_opt(opt, p, grads)
    t_param, t_sum = torch_adagrad_replay(p0, grads, **options)
    tol = dict(rtol=1e-6, atol=1e-7) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(p.detach(), t_param, **tol)
    torch.testing.assert_close(opt.state[p]["sum"], t_sum, **tol)


# ------------------------------------------------------------------ duplicates


def test_duplicates_are_summed_before_the_update():
    lr, eps = 0.5, 1e-10
    p0 = torch.randn(4, 3)
    a = torch.tensor([1.0, 2.0, -1.0])
    b = torch.tensor([1.0, -3.0, 0.5])
    dup = coo([2, 0, 2], torch.stack([a, torch.zeros(3), b]), (4, 3))
    summed = coo([2, 0], torch.stack([a + b, torch.zeros(3)]), (4, 3))

    results = []
    for grad in (dup, summed):
        p = p0.clone().requires_grad_(True)
        opt = Adagrad([p], lr=lr)
        run_opt(opt, p, [grad])
        results.append((p.detach().clone(), opt.state[p]["sum"].clone()))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=0, atol=0)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=0, atol=0)

    # Closed forms, float64, row 2.
    th0, a64, b64 = np64(p0[2]), np64(a), np64(b)
    g = a64 + b64
    summed_row = th0 - lr * g / (np.abs(g) + eps)
    G1 = a64 ** 2
    th1 = th0 - lr * a64 / (np.sqrt(G1) + eps)
    G2 = G1 + b64 ** 2
    one_by_one_row = th1 - lr * b64 / (np.sqrt(G2) + eps)
    # The two semantics really differ on this input...
    assert np.max(np.abs(one_by_one_row - summed_row)) > 0.1
    # ...and ours is the summed one.
    assert_close64(results[0][0][2], summed_row, rtol=1e-6, atol=1e-7)
    assert_close64(results[0][1][2], g ** 2, rtol=1e-6, atol=0)
    assert np.max(np.abs(np64(results[0][0][2]) - one_by_one_row)) > 0.1
    # Row 0 was touched with a zero gradient: G stays 0, θ stays (0/(0+eps) = 0).
    torch.testing.assert_close(results[0][0][0], p0[0], rtol=0, atol=0)


def test_many_duplicates_of_one_row():
    p0 = torch.randn(3, 4, dtype=torch.float64)
    vals = torch.randn(500, 4, dtype=torch.float64)
    grad = coo(torch.ones(500, dtype=torch.long), vals, (3, 4))
    p = p0.clone().requires_grad_(True)
    opt = Adagrad([p], lr=0.3)
    run_opt(opt, p, [grad])
    g = np64(vals).sum(0)
    expected = np64(p0[1]) - 0.3 * g / (np.abs(g) + 1e-10)
    assert_close64(p[1], expected, rtol=1e-12, atol=1e-13)
    assert_close64(opt.state[p]["sum"][1], g ** 2, rtol=1e-12, atol=0)


# ------------------------------------------------------------------ untouched rows


UNTOUCHED_OPTIONS = [
    {},
    {"lr_decay": 0.2, "maximize": True},
    {"eps_placement": "inside", "eps": 1e-7, "initial_accumulator_value": 0.1},
    {"weight_decay": 0.1, "sparse_weight_decay": "touched"},
    {"weight_decay": 0.0, "sparse_weight_decay": "lazy"},
]


@pytest.mark.parametrize("options", UNTOUCHED_OPTIONS, ids=lambda o: ",".join(o) or "defaults")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16],
                         ids=["f32", "f64", "bf16"])
def test_untouched_rows_keep_param_and_sum_bit_for_bit(options, dtype):
    gen = torch.Generator().manual_seed(5)
    p0 = torch.randn(20, 3, generator=gen).to(dtype)
    p = p0.clone().requires_grad_(True)
    opt = Adagrad([p], lr=0.1, **options)
    touched = torch.tensor([1, 4, 4, 7, 1, 9])
    for _ in range(4):
        grad = coo(touched, torch.randn(6, 3, generator=gen).to(dtype), (20, 3))
        run_opt(opt, p, [grad])
    untouched = torch.tensor(sorted(set(range(20)) - set(touched.tolist())))
    assert torch.equal(p.detach()[untouched], p0[untouched])
    G0 = options.get("initial_accumulator_value", 0.0)
    s = opt.state[p]["sum"]
    assert torch.equal(s[untouched], torch.full_like(s[untouched], G0))
    assert not torch.equal(p.detach()[touched], p0[touched])


# ------------------------------------------------------------------ sparse == dense with zero rows


DENSE_EQUIVALENT_OPTIONS = [
    pytest.param({}, id="defaults"),
    pytest.param({"lr_decay": 0.25}, id="lr_decay"),
    pytest.param({"maximize": True}, id="maximize"),
    pytest.param({"eps_placement": "outside", "eps": 1e-3}, id="eps-outside"),
    pytest.param({"eps_placement": "inside", "eps": 1e-3}, id="eps-inside"),
    pytest.param({"eps_placement": "inside", "eps": 1e-7, "initial_accumulator_value": 0.0},
                 id="eps-inside-G0-0"),
    pytest.param({"initial_accumulator_value": 0.3}, id="initial_accumulator_value"),
    pytest.param({"accumulator_decay": 0.9}, id="accumulator_decay"),
    pytest.param({"accumulator_decay": 0.8, "initial_accumulator_value": 0.5, "lr_decay": 0.1,
                  "eps_placement": "inside", "eps": 1e-4, "maximize": True}, id="all"),
]


def _dense_hp(options: dict) -> tuple[float, dict]:
    hp = {k: v for k, v in options.items() if k != "initial_accumulator_value"}
    hp.setdefault("eps", 1e-10)
    return options.get("initial_accumulator_value", 0.0), hp


@pytest.mark.parametrize("options", DENSE_EQUIVALENT_OPTIONS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_sparse_equals_dense_with_zero_rows(options, dtype):
    lr = 0.1
    gen = torch.Generator().manual_seed(11)
    p0 = torch.randn(25, 4, generator=gen).to(dtype)
    grads = [random_row_grad(25, 4, 15, dtype=dtype, id_range=10 + 3 * k, gen=gen)
             for k in range(6)]
    p = p0.clone().requires_grad_(True)
    opt = Adagrad([p], lr=lr, **options)
    run_opt(opt, p, grads)
    opt.flush()

    G0, hp = _dense_hp(options)
    dense = DenseRef(p0, G0, lr=lr, **hp)
    for g in grads:
        dense.step(g)
    assert_close64(p, dense.theta, **tol_for(dtype))
    assert_close64(opt.state[p]["sum"], dense.sum, **tol_for(dtype))
    assert float(opt.state[p]["step"]) == len(grads)

    # The sparse reference agrees with the dense one (a check of the oracles themselves).
    sparse = SparseRef(p0, G0, lr=lr, **hp)
    for g in grads:
        sparse.step(g)
    sparse.flush()
    np.testing.assert_allclose(sparse.theta, dense.theta, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("lazy", [False, True], ids=["plain", "lazy-decay"])
def test_step_count_and_lr_decay_are_per_tensor(lazy):
    lr, decay = 0.2, 0.5
    gen = torch.Generator().manual_seed(2)
    a0 = torch.randn(6, 2, generator=gen)
    b0 = torch.randn(8, 3, generator=gen)
    a = a0.clone().requires_grad_(True)
    b = b0.clone().requires_grad_(True)
    decay_kw = dict(weight_decay=0.3) if lazy else {}
    opt = Adagrad([a, b], lr=lr, lr_decay=decay,
                  **(dict(decay_kw, sparse_weight_decay="lazy") if lazy else {}))
    ref_kw = dict(decay_kw, decoupled_weight_decay=True) if lazy else {}
    ref_a = DenseRef(a0, lr=lr, lr_decay=decay, **ref_kw)
    ref_b = DenseRef(b0, lr=lr, lr_decay=decay, **ref_kw)
    schedule = [(True, True), (True, False), (True, False), (True, True), (False, True)]
    for use_a, use_b in schedule:
        a.grad = random_row_grad(6, 2, 5, gen=gen) if use_a else None
        b.grad = random_row_grad(8, 3, 5, gen=gen) if use_b else None
        if use_a:
            ref_a.step(a.grad)
        if use_b:
            ref_b.step(b.grad)
        opt.step()
    assert float(opt.state[a]["step"]) == 4.0
    assert float(opt.state[b]["step"]) == 3.0
    opt.flush()
    assert_close64(a, ref_a.theta, **tol_for(torch.float32))
    assert_close64(b, ref_b.theta, **tol_for(torch.float32))


def test_sparse_and_dense_gradients_interleaved_on_one_tensor():
    """A tensor may get a sparse gradient one step and a dense one the next (:ref:`algo-sparse`: same t)."""
    gen = torch.Generator().manual_seed(9)
    p0 = torch.randn(10, 3, generator=gen)
    grads = [random_row_grad(10, 3, 6, gen=gen), torch.randn(10, 3, generator=gen),
             random_row_grad(10, 3, 6, gen=gen)]
    p = p0.clone().requires_grad_(True)
    opt = Adagrad([p], lr=0.1, lr_decay=0.2)
    run_opt(opt, p, grads)
    dense = DenseRef(p0, lr=0.1, lr_decay=0.2)
    for g in grads:
        dense.step(g if g.is_sparse else np64(g))
    assert_close64(p, dense.theta, **tol_for(torch.float32))
    assert_close64(opt.state[p]["sum"], dense.sum, **tol_for(torch.float32))


def test_reset_state_with_sparse_gradients():
    """reset_state() puts G back to G0 (pending lazy accumulator decay included); the
    parameters and the step count are kept."""
    options = dict(lr=0.1, lr_decay=0.1, accumulator_decay=0.8, initial_accumulator_value=0.2)
    gen = torch.Generator().manual_seed(12)
    p0 = torch.randn(15, 3, generator=gen)
    first = [random_row_grad(15, 3, 8, id_range=10, gen=gen) for _ in range(3)]
    second = [random_row_grad(15, 3, 8, gen=gen) for _ in range(3)]
    p = p0.clone().requires_grad_(True)
    opt = Adagrad([p], **options)
    run_opt(opt, p, first)
    opt.reset_state()
    assert torch.equal(opt.state[p]["sum"], torch.full((15, 3), 0.2))
    run_opt(opt, p, second)
    opt.flush()

    dense = DenseRef(p0, 0.2, lr=0.1, lr_decay=0.1, accumulator_decay=0.8)
    for g in first:
        dense.step(g)
    dense.state["sum"] = np.full((15, 3), 0.2)
    for g in second:
        dense.step(g)
    assert float(opt.state[p]["step"]) == 6.0
    assert_close64(p, dense.theta, **tol_for(torch.float32))
    assert_close64(opt.state[p]["sum"], dense.sum, **tol_for(torch.float32))
