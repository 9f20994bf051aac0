"""Sparse gradients: dtypes and edge cases (issue 3, items 4; :ref:`algo-sparse`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sparse_support import (
    SparseRef,
    assert_close64,
    coo,
    np64,
    random_row_grad,
    run_opt,
    tol_for,
    torch_adagrad_replay,
)

from adagrad import Adagrad, reference

# torch.optim.Adagrad itself builds COO tensors without invariant checks.
pytestmark = pytest.mark.filterwarnings("ignore:Sparse invariant checks")

# Index errors and shape errors need indices that break COO invariants on purpose.
# float32/float64 go through the CPU kernel, bfloat16 through the portable torch path.
DTYPES = [torch.float32, torch.float64, torch.bfloat16]
DTYPE_IDS = ["f32", "f64", "bf16"]


# ------------------------------------------------------------------ low-precision params

LOW_PRECISION = [
    pytest.param(torch.bfloat16, 2.0 ** -7, id="bf16"),
    pytest.param(torch.float16, 2.0 ** -10, id="fp16"),
]


@pytest.mark.parametrize("dtype,ulp", LOW_PRECISION)
@pytest.mark.parametrize("options", [
    {},
    {"lr_decay": 0.1, "maximize": True},
    {"eps_placement": "inside", "eps": 1e-7, "initial_accumulator_value": 0.1},
    {"weight_decay": 0.1, "sparse_weight_decay": "touched"},
], ids=["defaults", "lr_decay-maximize", "inside-G0", "touched"])
def test_low_precision_params_keep_a_float32_sum(dtype, ulp, options):
    """Each step equals the float64 reference started from the current state, to one ulp
    of the parameter's dtype; the accumulator is float32 and matches to float32 rounding."""
    lr = 0.1
    gen = torch.Generator().manual_seed(21)
    p = torch.randn(16, 4, generator=gen).to(dtype).requires_grad_(True)
    opt = Adagrad([p], lr=lr, **options)
    hp = {k: v for k, v in options.items() if k != "initial_accumulator_value"}
    state = reference.adagrad_init(np64(p), options.get("initial_accumulator_value", 0.0))
    for _ in range(5):
        grad = random_row_grad(16, 4, 12, dtype=dtype, id_range=10, gen=gen)
        theta_before = np64(p)
        ref_theta, state = reference.adagrad_sparse(
            theta_before, grad._indices()[0].numpy(), np64(grad._values()), state, lr=lr, **hp)
        run_opt(opt, p, [grad])
        s = opt.state[p]["sum"]
        assert s.dtype == torch.float32
        assert p.dtype == dtype
        assert_close64(s, state["sum"], rtol=1e-6, atol=1e-7)
        assert_close64(p, ref_theta, rtol=ulp, atol=1e-6)
        # Continue the reference from what the optimizer holds (its θ is rounded each step).
        state = {"step": state["step"], "sum": np64(s)}
    assert float(opt.state[p]["step"]) == 5.0


def test_bf16_accumulator_does_not_stall():
    """300 steps of g=1 on one row: a bf16 sum would stall at 256 (:ref:`algo-adagrad`)."""
    p = torch.zeros(3, 2, dtype=torch.bfloat16, requires_grad=True)
    opt = Adagrad([p], lr=1e-3)
    grad = coo([1], torch.ones(1, 2, dtype=torch.bfloat16), (3, 2))
    run_opt(opt, p, [grad] * 300)
    torch.testing.assert_close(opt.state[p]["sum"][1], torch.full((2,), 300.0))


# ------------------------------------------------------------------ empty gradient


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_empty_sparse_gradient_is_a_counted_no_op(dtype):
    lr, decay = 0.2, 0.5
    gen = torch.Generator().manual_seed(22)
    p0 = torch.randn(10, 3, generator=gen).to(dtype)
    empty = coo(torch.zeros(0, dtype=torch.long), torch.zeros(0, 3, dtype=dtype), (10, 3))
    assert empty._nnz() == 0
    real = random_row_grad(10, 3, 6, dtype=dtype, gen=gen)

    p = p0.clone().requires_grad_(True)
    opt = Adagrad([p], lr=lr, lr_decay=decay, initial_accumulator_value=0.1)
    run_opt(opt, p, [empty])
    assert float(opt.state[p]["step"]) == 1.0
    assert torch.equal(p.detach(), p0)
    assert torch.equal(opt.state[p]["sum"], torch.full_like(opt.state[p]["sum"], 0.1))
    run_opt(opt, p, [real])
    assert float(opt.state[p]["step"]) == 2.0

    # The second step used lr_2 = lr / (1 + decay): the empty step advanced the schedule.
    ref = SparseRef(p0, 0.1, lr=lr, lr_decay=decay)
    ref.step(empty)
    ref.step(real)
    tol = tol_for(dtype) if dtype != torch.bfloat16 else dict(rtol=2 ** -7, atol=1e-6)
    assert_close64(p, ref.theta, **tol)
    # ... and it is not the result of a single first step.
    skipped = SparseRef(p0, 0.1, lr=lr, lr_decay=decay)
    skipped.step(real)
    assert np.max(np.abs(ref.theta - skipped.theta)) > 1e-2


# ------------------------------------------------------------------ out-of-range indices


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("bad", [10, 11, 1000, -1], ids=["n", "n+1", "far", "negative"])
@pytest.mark.parametrize("mode", [None, "lazy"])
def test_index_out_of_range_raises_before_writing(dtype, bad, mode):
    rows = 10
    gen = torch.Generator().manual_seed(23)
    p0 = torch.randn(rows, 3, generator=gen).to(dtype)
    options = dict(lr=0.1, lr_decay=0.2)
    if mode:
        options.update(weight_decay=0.1, sparse_weight_decay=mode)
    p = p0.clone().requires_grad_(True)
    opt = Adagrad([p], **options)
    first = random_row_grad(rows, 3, 5, dtype=dtype, gen=gen)
    run_opt(opt, p, [first])
    param_before = p.detach().clone()
    sum_before = opt.state[p]["sum"].clone()
    step_before = opt.state[p]["step"].clone()

    # Valid rows around the bad one, so a kernel that writes as it goes would be caught.
    p.grad = coo([0, 3, bad, 5, 3], torch.ones(5, 3, dtype=dtype), (rows, 3))
    with pytest.raises(IndexError) as info:
        opt.step()
    message = str(info.value)
    assert str(bad) in message and str(rows) in message
    assert torch.equal(p.detach(), param_before)
    assert torch.equal(opt.state[p]["sum"], sum_before)
    assert torch.equal(opt.state[p]["step"], step_before)

    # The failed step left no trace: continuing equals a run that never saw it.
    nxt = random_row_grad(rows, 3, 5, dtype=dtype, gen=gen)
    run_opt(opt, p, [nxt])
    opt.flush()
    ref = SparseRef(p0, **options)
    ref.step(first)
    ref.step(nxt)
    ref.flush()
    tol = tol_for(dtype) if dtype != torch.bfloat16 else dict(rtol=2 ** -6, atol=1e-5)
    assert_close64(p, ref.theta, **tol)


def test_index_error_writes_no_parameter_of_the_step():
    """'before anything is written' (issue 3): a bad index in the second tensor leaves the
    first tensor of the same step() untouched too."""
    a0, b0 = torch.randn(6, 2), torch.randn(8, 2)
    a = a0.clone().requires_grad_(True)
    b = b0.clone().requires_grad_(True)
    opt = Adagrad([a, b], lr=0.1)
    a.grad = coo([1, 2], torch.ones(2, 2), (6, 2))
    b.grad = coo([1, 8], torch.ones(2, 2), (8, 2))
    with pytest.raises(IndexError, match="8"):
        opt.step()
    assert torch.equal(a.detach(), a0)
    assert torch.equal(b.detach(), b0)


# ------------------------------------------------------------------ shapes


@pytest.mark.parametrize("new_shape", [(6, 3), (5, 4)], ids=["more-rows", "wider"])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_gradient_shape_not_fitting_the_param_raises(new_shape, dtype):
    p0 = torch.randn(5, 3).to(dtype)
    p = p0.clone().requires_grad_(True)
    opt = Adagrad([p], lr=0.1)
    p.grad = coo([1], torch.ones(1, 3, dtype=dtype), (5, 3))
    # torch refuses to assign a mismatched gradient, so resize it in place afterwards.
    p.grad.sparse_resize_(new_shape, 1, 1)
    assert tuple(p.grad.shape) == new_shape
    with pytest.raises((ValueError, RuntimeError)):
        opt.step()
    assert torch.equal(p.detach(), p0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_one_dimensional_param(dtype):
    gen = torch.Generator().manual_seed(24)
    p0 = torch.randn(12, generator=gen).to(dtype)
    grads = [coo(torch.randint(0, 8, (10,), generator=gen),
                 torch.randn(10, generator=gen).to(dtype), (12,)) for _ in range(4)]
    p = p0.clone().requires_grad_(True)
    opt = Adagrad([p], lr=0.1, lr_decay=0.1)
    run_opt(opt, p, grads)
    t_param, t_sum = torch_adagrad_replay(p0, grads, lr=0.1, lr_decay=0.1)
    tol = dict(rtol=1e-6, atol=1e-7) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(p.detach(), t_param, **tol)
    torch.testing.assert_close(opt.state[p]["sum"], t_sum, **tol)
    ref = SparseRef(p0, lr=0.1, lr_decay=0.1)
    for g in grads:
        ref.step(g)
    assert_close64(p, ref.theta, **tol_for(dtype))
    assert torch.equal(p.detach()[8:], p0[8:])


def test_three_dimensional_table_rows():
    """sparse_dim=1 on a (rows, 2, 3) parameter: each row is a 2×3 block."""
    gen = torch.Generator().manual_seed(27)
    p0 = torch.randn(8, 2, 3, generator=gen)
    grads = [torch.sparse_coo_tensor(torch.randint(0, 5, (1, 7), generator=gen),
                                     torch.randn(7, 2, 3, generator=gen), (8, 2, 3))
             for _ in range(3)]
    p = p0.clone().requires_grad_(True)
    opt = Adagrad([p], lr=0.1, maximize=True)
    run_opt(opt, p, grads)
    t_param, t_sum = torch_adagrad_replay(p0, grads, lr=0.1, maximize=True)
    torch.testing.assert_close(p.detach(), t_param, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(opt.state[p]["sum"], t_sum, rtol=1e-6, atol=1e-7)
    assert torch.equal(p.detach()[5:], p0[5:])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_sparse_dim_2_gradient_on_a_matrix(dtype):
    """Element-wise COO (sparse_dim=2, duplicate elements) on a 2-D parameter is supported
    (`sparse_rows` flattens it to one row index): equal to torch.optim.Adagrad and to the
    float64 reference run on the flattened parameter; untouched elements keep θ and G."""
    gen = torch.Generator().manual_seed(25)
    p0 = torch.randn(6, 5, generator=gen).to(dtype)
    grads = []
    for _ in range(3):
        idx = torch.stack([torch.randint(0, 6, (9,), generator=gen),
                           torch.randint(0, 5, (9,), generator=gen)])
        idx[:, 1] = idx[:, 0]  # a duplicate element
        grads.append(torch.sparse_coo_tensor(idx, torch.randn(9, generator=gen).to(dtype),
                                             (6, 5)))
    assert grads[0].sparse_dim() == 2
    p = p0.clone().requires_grad_(True)
    opt = Adagrad([p], lr=0.1, lr_decay=0.1)
    run_opt(opt, p, grads)
    assert float(opt.state[p]["step"]) == 3
    assert opt.state[p]["sum"].shape == p.shape
    tol = dict(rtol=1e-6, atol=1e-7) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-14)
    t_param, t_sum = torch_adagrad_replay(p0, grads, lr=0.1, lr_decay=0.1)
    torch.testing.assert_close(p.detach(), t_param, **tol)
    torch.testing.assert_close(opt.state[p]["sum"], t_sum, **tol)
    ref = SparseRef(np64(p0).reshape(-1), lr=0.1, lr_decay=0.1)
    touched = np.zeros(30, bool)
    for g in grads:
        flat = (g._indices()[0] * 5 + g._indices()[1]).numpy()
        touched[flat] = True
        ref.step((flat, np64(g._values())))
    assert_close64(p.detach().reshape(-1), ref.theta, **tol_for(dtype))
    assert_close64(opt.state[p]["sum"].reshape(-1), ref.sum, **tol_for(dtype))
    assert not touched.all()
    assert torch.equal(p.detach().reshape(-1)[~torch.from_numpy(touched)],
                       p0.reshape(-1)[~torch.from_numpy(touched)])


def test_coalesced_gradient_gives_the_same_result():
    gen = torch.Generator().manual_seed(26)
    p0 = torch.randn(10, 3, generator=gen)
    grads = [random_row_grad(10, 3, 12, id_range=5, gen=gen) for _ in range(3)]
    results = []
    for gs in (grads, [g.coalesce() for g in grads]):
        p = p0.clone().requires_grad_(True)
        opt = Adagrad([p], lr=0.1)
        run_opt(opt, p, gs)
        results.append(p.detach())
    torch.testing.assert_close(results[0], results[1], rtol=1e-6, atol=1e-7)
