"""Weight decay and accumulator decay with sparse gradients (:ref:`algo-sparse`, issue 3).

`sparse_weight_decay="lazy"`: decoupled decay caught up per row; after `flush()` (or
`state_dict()`) equal to dense decoupled-weight-decay Adagrad on the densified gradients.
`sparse_weight_decay="touched"`: L2 on the touched rows only; equal to the reference, not
to dense L2. Without a mode, sparse gradients plus weight decay raise.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from sparse_support import (
    DenseRef,
    SparseRef,
    assert_close64,
    coo,
    np64,
    random_row_grad,
    run_opt,
    tol_for,
)

from adagrad import Adagrad

# torch.optim.Adagrad itself builds COO tensors without invariant checks.
pytestmark = pytest.mark.filterwarnings("ignore:Sparse invariant checks")

ROWS, WIDTH = 30, 4


def _grads(seed: int, steps: int, dtype=torch.float32, nnz: int = 8, id_range: int = 20):
    """Sparse gradients touching only rows < id_range (so rows id_range.. are never touched)."""
    gen = torch.Generator().manual_seed(seed)
    return [random_row_grad(ROWS, WIDTH, nnz, dtype=dtype, id_range=id_range, gen=gen)
            for _ in range(steps)]


def _p0(seed: int = 0, dtype=torch.float32):
    return torch.randn(ROWS, WIDTH, generator=torch.Generator().manual_seed(seed)).to(dtype)


# ------------------------------------------------------------------ lazy


LAZY_CASES = [
    pytest.param({}, id="plain"),
    pytest.param({"lr_decay": 0.3}, id="lr_decay"),
    pytest.param({"maximize": True, "eps_placement": "inside", "eps": 1e-6,
                  "initial_accumulator_value": 0.1}, id="maximize-inside-G0"),
    pytest.param({"accumulator_decay": 0.9, "lr_decay": 0.1}, id="accumulator_decay"),
]


@pytest.mark.parametrize("options", LAZY_CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_lazy_equals_dense_decoupled_after_flush(options, dtype):
    lr, wd = 0.1, 0.2
    p0 = _p0(1, dtype)
    grads = _grads(2, 8, dtype)
    p = p0.clone().requires_grad_(True)
    opt = Adagrad([p], lr=lr, weight_decay=wd, sparse_weight_decay="lazy", **options)
    run_opt(opt, p, grads)
    opt.flush()

    G0 = options.get("initial_accumulator_value", 0.0)
    hp = {k: v for k, v in options.items() if k != "initial_accumulator_value"}
    dense = DenseRef(p0, G0, lr=lr, weight_decay=wd, decoupled_weight_decay=True, **hp)
    for g in grads:
        dense.step(g)
    assert_close64(p, dense.theta, **tol_for(dtype))
    assert_close64(opt.state[p]["sum"], dense.sum, **tol_for(dtype))
    # Rows >= 20 were never touched and have still decayed.
    assert not torch.equal(p.detach()[20:], p0[20:])

    # flush() is idempotent.
    before = p.detach().clone()
    opt.flush()
    assert torch.equal(p.detach(), before)


def test_lazy_matches_sparse_reference_before_flush():
    """Between flushes, touched rows are exactly caught up; the others wait (reference)."""
    lr, wd = 0.2, 0.1
    p0 = _p0(3)
    grads = _grads(4, 6)
    p = p0.clone().requires_grad_(True)
    opt = Adagrad([p], lr=lr, lr_decay=0.2, weight_decay=wd, sparse_weight_decay="lazy")
    ref = SparseRef(p0, lr=lr, lr_decay=0.2, weight_decay=wd, sparse_weight_decay="lazy")
    for g in grads:
        run_opt(opt, p, [g])
        ref.step(g)
        # The rows touched by this very step are up to date now.
        idx = np.unique(g._indices()[0].numpy())
        assert_close64(p.detach()[idx], ref.theta[idx], **tol_for(torch.float32))


@pytest.mark.parametrize("lr_decay", [0.0, 0.2])
def test_lazy_with_lr_scheduler(lr_decay):
    lr, wd = 0.3, 0.15
    p0 = _p0(5)
    grads = _grads(6, 10)
    p = p0.clone().requires_grad_(True)
    opt = Adagrad([p], lr=lr, lr_decay=lr_decay, weight_decay=wd, sparse_weight_decay="lazy")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: [1.0, 0.5, 2.0, 0.1, 1.5][e % 5])
    dense = DenseRef(p0, lr=lr, lr_decay=lr_decay, weight_decay=wd,
                     decoupled_weight_decay=True)
    lrs = []
    for g in grads:
        group_lr = opt.param_groups[0]["lr"]
        lrs.append(group_lr)
        run_opt(opt, p, [g])
        dense.step(g, lr=group_lr)
        sched.step()
    assert len(set(lrs)) > 2  # the scheduler really changed lr between steps
    opt.flush()
    assert_close64(p, dense.theta, **tol_for(torch.float32))
    assert_close64(opt.state[p]["sum"], dense.sum, **tol_for(torch.float32))


def test_lazy_untouched_rows_decay_over_many_steps():
    """Closed form: a never-touched row ends at θ0·Π_s(1 - lr_s·wd)."""
    lr, wd, decay, steps = 0.1, 0.1, 0.01, 120
    p0 = torch.randn(5, 3, dtype=torch.float32)
    p = p0.clone().requires_grad_(True)
    opt = Adagrad([p], lr=lr, lr_decay=decay, weight_decay=wd, sparse_weight_decay="lazy")
    gen = torch.Generator().manual_seed(0)
    grads = []
    for s in range(1, steps + 1):
        rows = [0] if s != 60 else [0, 3]  # row 3 touched once, in the middle
        grads.append(coo(rows, torch.randn(len(rows), 3, generator=gen), (5, 3)))
    run_opt(opt, p, grads)
    opt.flush()
    factor = np.prod([1.0 - lr / (1.0 + (s - 1) * decay) * wd for s in range(1, steps + 1)])
    assert factor < 0.5  # the decay is substantial
    for r in (1, 2, 4):
        assert_close64(p[r], np64(p0[r]) * factor, rtol=1e-5, atol=1e-7)
        assert torch.equal(opt.state[p]["sum"][r], torch.zeros(3))
    ref = SparseRef(p0, lr=lr, lr_decay=decay, weight_decay=wd, sparse_weight_decay="lazy")
    for g in grads:
        ref.step(g)
    ref.flush()
    assert_close64(p, ref.theta, rtol=1e-5, atol=1e-6)


def test_lazy_empty_steps_still_decay():
    """An nnz=0 step is a dense step with a zero gradient: every row decays."""
    lr, wd = 0.1, 0.3
    p0 = _p0(7)
    empty = coo(torch.zeros(0, dtype=torch.long), torch.zeros(0, WIDTH), (ROWS, WIDTH))
    grads = [_grads(8, 1)[0], empty, empty, _grads(9, 1)[0]]
    p = p0.clone().requires_grad_(True)
    opt = Adagrad([p], lr=lr, lr_decay=0.5, weight_decay=wd, sparse_weight_decay="lazy")
    run_opt(opt, p, grads)
    opt.flush()
    dense = DenseRef(p0, lr=lr, lr_decay=0.5, weight_decay=wd, decoupled_weight_decay=True)
    for g in grads:
        dense.step(g)
    assert_close64(p, dense.theta, **tol_for(torch.float32))


def _lazy_run(p0, grads, **options):
    p = p0.clone().requires_grad_(True)
    opt = Adagrad([p], **options)
    run_opt(opt, p, grads)
    return p, opt


def test_state_dict_changes_nothing_and_resumes_exactly():
    """state_dict() is a pure read: the pending decay is saved, not applied (a run that
    takes a checkpoint is bit-identical to one that does not), a run resumed from it is
    bit-identical to one that never stopped, and after flush() both equal dense decoupled
    decay (:ref:`algo-sparse`)."""
    options = dict(lr=0.1, lr_decay=0.1, weight_decay=0.2, sparse_weight_decay="lazy",
                   accumulator_decay=0.95)
    p0 = _p0(10)
    grads, more = _grads(11, 7), _grads(12, 4)
    p_straight, opt_straight = _lazy_run(p0, grads + more, **options)

    p_sd, opt_sd = _lazy_run(p0, grads, **options)
    p_before = p_sd.detach().clone()
    sd = copy.deepcopy(opt_sd.state_dict())
    assert torch.equal(p_sd.detach(), p_before)
    assert {"param_log", "row_param_log", "sum_log", "row_sum_log"} <= set(sd["state"][0])

    p2 = p_sd.detach().clone().requires_grad_(True)
    opt2 = Adagrad([p2], **options)
    opt2.load_state_dict(sd)
    run_opt(opt2, p2, more)
    run_opt(opt_sd, p_sd, more)
    for p, opt in ((p2, opt2), (p_sd, opt_sd)):
        assert torch.equal(p.detach(), p_straight.detach())
        for key, value in opt_straight.state[p_straight].items():
            assert torch.equal(opt.state[p][key], value), key
    assert float(opt2.state[p2]["step"]) == 11.0

    opt2.flush()
    dense = DenseRef(p0, lr=0.1, lr_decay=0.1, weight_decay=0.2, decoupled_weight_decay=True,
                     accumulator_decay=0.95)
    for g in grads + more:
        dense.step(g)
    assert_close64(p2, dense.theta, **tol_for(torch.float32))
    assert_close64(opt2.state[p2]["sum"], dense.sum, **tol_for(torch.float32))


@pytest.mark.parametrize("dtype,rtol", [(torch.float32, 1e-5), (torch.bfloat16, 2 ** -6),
                                        (torch.float16, 2 ** -9)], ids=["f32", "bf16", "fp16"])
def test_lazy_decay_resumes_from_a_checkpoint(dtype, rtol):
    """Save after a phase of strong decay, load into a fresh optimizer, continue with a
    small lr (a scheduler's drop): untouched rows keep decaying exactly as dense
    decoupled decay, also for low-precision parameters."""
    wd, rows = 0.1, 6
    p0 = torch.randn(rows, 2, generator=torch.Generator().manual_seed(40)).to(dtype)
    grad = coo([0], torch.ones(1, 2, dtype=dtype), (rows, 2))  # only row 0 is ever touched
    p = p0.clone().requires_grad_(True)
    opt = Adagrad([p], lr=1.0, weight_decay=wd, sparse_weight_decay="lazy")
    run_opt(opt, p, [grad] * 6)  # factor 0.9 per step
    sd = copy.deepcopy(opt.state_dict())  # rows 1.. still owe 0.9 ** 6

    p2 = p.detach().clone().requires_grad_(True)
    opt2 = Adagrad([p2], lr=1.0, weight_decay=wd, sparse_weight_decay="lazy")
    opt2.load_state_dict(sd)
    opt2.param_groups[0]["lr"] = 0.01  # factor 0.999 per step
    run_opt(opt2, p2, [grad] * 40)
    opt2.flush()
    expected = np64(p0[1:]) * (1 - wd) ** 6 * (1 - 0.01 * wd) ** 40
    assert_close64(p2[1:], expected, rtol=rtol, atol=0)


# ------------------------------------------------------------------ touched


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_touched_equals_reference_and_differs_from_dense_l2(dtype):
    lr, wd = 0.1, 0.25
    p0 = _p0(13, dtype)
    grads = _grads(14, 6, dtype)
    p = p0.clone().requires_grad_(True)
    opt = Adagrad([p], lr=lr, lr_decay=0.1, weight_decay=wd, sparse_weight_decay="touched")
    run_opt(opt, p, grads)
    ref = SparseRef(p0, lr=lr, lr_decay=0.1, weight_decay=wd, sparse_weight_decay="touched")
    for g in grads:
        ref.step(g)
    assert_close64(p, ref.theta, **tol_for(dtype))
    assert_close64(opt.state[p]["sum"], ref.sum, **tol_for(dtype))
    opt.flush()  # nothing pending in "touched" mode
    assert_close64(p, ref.theta, **tol_for(dtype))

    # Documented difference: dense L2 also moves rows the gradient never touched.
    dense_l2 = DenseRef(p0, lr=lr, lr_decay=0.1, weight_decay=wd)
    for g in grads:
        dense_l2.step(g)
    assert np.max(np.abs(np64(p[20:]) - dense_l2.theta[20:])) > 1e-2
    assert torch.equal(p.detach()[20:], p0[20:])


def test_touched_closed_form_one_step():
    lr, wd = 0.5, 0.1
    p0 = torch.tensor([[1.0, -2.0], [3.0, 4.0]], dtype=torch.float64)
    g = torch.tensor([[0.5, 0.0]], dtype=torch.float64)
    p = p0.clone().requires_grad_(True)
    opt = Adagrad([p], lr=lr, weight_decay=wd, sparse_weight_decay="touched")
    run_opt(opt, p, [coo([0], g, (2, 2))])
    gg = np.array([0.5, 0.0]) + wd * np.array([1.0, -2.0])
    expected = np.array([1.0, -2.0]) - lr * gg / (np.abs(gg) + 1e-10)
    assert_close64(p[0], expected, rtol=1e-12, atol=1e-14)
    assert torch.equal(p.detach()[1], p0[1])


# ------------------------------------------------------------------ no mode


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
def test_weight_decay_without_mode_raises(dtype):
    p0 = _p0(15, dtype)
    p = p0.clone().requires_grad_(True)
    opt = Adagrad([p], lr=0.1, weight_decay=0.1)
    p.grad = coo([1, 2], torch.ones(2, WIDTH, dtype=dtype), (ROWS, WIDTH))
    with pytest.raises((RuntimeError, ValueError), match="sparse_weight_decay"):
        opt.step()
    assert torch.equal(p.detach(), p0)


def test_invalid_sparse_weight_decay_value_raises():
    p = torch.zeros(3, 2, requires_grad=True)
    with pytest.raises(ValueError, match="sparse_weight_decay"):
        Adagrad([p], sparse_weight_decay="eager")
