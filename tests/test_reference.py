"""The float64 reference rules against closed forms and against torch.optim.Adagrad (float64)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import to64

from adagrad import reference as ref


def run_dense(theta0, grads, G0=0.0, **hp):
    theta, state = np.array(theta0, np.float64), ref.adagrad_init(theta0, G0)
    for g in grads:
        theta, state = ref.adagrad(theta, g, state, **hp)
    return theta, state


# ---------------------------------------------------------------- closed forms, :ref:`algo-adagrad`


@pytest.mark.parametrize("G0", [0.0, 0.1, 2.0])
@pytest.mark.parametrize("placement", ["outside", "inside"])
def test_constant_gradient_closed_form(G0, placement):
    """g constant for T steps: G_t = G0 + t g², θ_T = θ0 - lr Σ_t g / den(G_t)."""
    T, lr, eps = 50, 0.05, 1e-3
    theta0 = np.array([1.0, -2.0, 0.5])
    g = np.array([0.3, -1.5, 2.0])
    theta, state = run_dense(theta0, [g] * T, G0, lr=lr, eps=eps, eps_placement=placement)
    expect = theta0.copy()
    for t in range(1, T + 1):
        Gt = G0 + t * g**2
        den = np.sqrt(Gt) + eps if placement == "outside" else np.sqrt(Gt + eps)
        expect = expect - lr * g / den
    assert state["step"] == T
    np.testing.assert_allclose(state["sum"], G0 + T * g**2, rtol=1e-14)
    np.testing.assert_allclose(theta, expect, rtol=1e-13)


def test_eps_inside_differs_from_outside():
    """The two placements give different numbers for a large eps, and the right ones."""
    theta0, g, eps, lr = np.array([0.0]), np.array([1.0]), 0.5, 1.0
    out, _ = run_dense(theta0, [g], eps=eps, eps_placement="outside", lr=lr)
    ins, _ = run_dense(theta0, [g], eps=eps, eps_placement="inside", lr=lr)
    np.testing.assert_allclose(out, [-1.0 / (1.0 + 0.5)], rtol=1e-15)
    np.testing.assert_allclose(ins, [-1.0 / np.sqrt(1.5)], rtol=1e-15)


def test_eps_inside_zero_denominator_gives_zero_update():
    """Inside placement, G + eps == 0 (g = 0, G0 = 0, eps = 0): update 0, not NaN."""
    theta, state = run_dense([1.0, 2.0], [[0.0, 3.0]], eps=0.0, eps_placement="inside", lr=0.1)
    assert np.isfinite(theta).all()
    np.testing.assert_allclose(theta, [1.0, 2.0 - 0.1], rtol=1e-15)
    np.testing.assert_allclose(state["sum"], [0.0, 9.0])


def test_lr_decay_schedule():
    """lr_t = lr / (1 + (t-1)·lr_decay), applied with the per-tensor step count."""
    assert ref.lr_at(0.1, 0.5, 1) == pytest.approx(0.1)
    assert ref.lr_at(0.1, 0.5, 3) == pytest.approx(0.1 / 2.0)
    T, lr, d, eps = 20, 0.3, 0.25, 1e-10
    g = np.array([1.0, -0.5])
    theta, _ = run_dense(np.zeros(2), [g] * T, lr=lr, lr_decay=d, eps=eps)
    expect = -sum(lr / (1 + (t - 1) * d) * g / (np.sqrt(t * g**2) + eps) for t in range(1, T + 1))
    np.testing.assert_allclose(theta, expect, rtol=1e-13)


@pytest.mark.parametrize("lr_decay", [0.0, 0.3])
def test_decoupled_weight_decay_closed_form(lr_decay):
    """g = 0, G0 > 0: θ_T = θ0 · Π_t (1 - lr_t·wd) and G stays G0."""
    T, lr, wd = 30, 0.2, 0.4
    theta0 = np.array([[1.0, -3.0], [0.25, 7.0]])
    theta, state = run_dense(
        theta0, [np.zeros_like(theta0)] * T, 0.1,
        lr=lr, lr_decay=lr_decay, weight_decay=wd, decoupled_weight_decay=True,
    )
    factor = np.prod([1 - ref.lr_at(lr, lr_decay, t) * wd for t in range(1, T + 1)])
    np.testing.assert_allclose(theta, theta0 * factor, rtol=1e-13)
    np.testing.assert_allclose(state["sum"], np.full_like(theta0, 0.1))


def test_decoupled_uses_undecayed_gradient():
    """Decoupled: one step is θ(1 - lr·wd) - lr·g/(sqrt(G0+g²)+eps), g not mixed with θ."""
    theta0, g, lr, wd, G0, eps = np.array([2.0]), np.array([0.5]), 0.1, 0.3, 0.2, 1e-10
    theta, state = run_dense(theta0, [g], G0, lr=lr, weight_decay=wd, eps=eps,
                             decoupled_weight_decay=True)
    np.testing.assert_allclose(state["sum"], G0 + g**2)
    np.testing.assert_allclose(theta, theta0 * (1 - lr * wd) - lr * g / (np.sqrt(G0 + g**2) + eps))


def test_coupled_weight_decay_one_step():
    """Coupled: g' = g + wd·θ enters both G and the update."""
    theta0, g, lr, wd, eps = np.array([2.0]), np.array([0.5]), 0.1, 0.3, 1e-10
    theta, state = run_dense(theta0, [g], lr=lr, weight_decay=wd, eps=eps)
    gp = g + wd * theta0
    np.testing.assert_allclose(state["sum"], gp**2)
    np.testing.assert_allclose(theta, theta0 - lr * gp / (np.sqrt(gp**2) + eps))


@pytest.mark.parametrize("decoupled", [False, True])
def test_maximize_flips_gradient_sign(decoupled):
    """maximize=True on g equals maximize=False on -g (weight decay unaffected)."""
    rng = np.random.default_rng(1)
    theta0 = rng.normal(size=5)
    grads = [rng.normal(size=5) for _ in range(7)]
    hp = dict(lr=0.1, weight_decay=0.2, decoupled_weight_decay=decoupled, lr_decay=0.1)
    a, sa = run_dense(theta0, grads, 0.1, maximize=True, **hp)
    b, sb = run_dense(theta0, [-g for g in grads], 0.1, **hp)
    np.testing.assert_allclose(a, b, rtol=1e-15)
    np.testing.assert_allclose(sa["sum"], sb["sum"], rtol=1e-15)
    # and the maximized trajectory goes up the gradient
    c, _ = run_dense([0.0], [np.array([1.0])], lr=0.1, maximize=True)
    assert c[0] > 0


@pytest.mark.parametrize("rho", [0.5, 0.9, 0.999])
def test_accumulator_decay_closed_form(rho):
    """Constant g: G_T = ρ^T G0 + g²(1-ρ^T)/(1-ρ)."""
    T, G0 = 40, 0.3
    g = np.array([0.7, -2.0])
    _, state = run_dense(np.zeros(2), [g] * T, G0, lr=0.01, accumulator_decay=rho)
    expect = rho**T * G0 + g**2 * (1 - rho**T) / (1 - rho)
    np.testing.assert_allclose(state["sum"], expect, rtol=1e-12)


def test_reference_is_pure():
    """The rule does not modify its inputs."""
    theta, g = np.array([1.0, 2.0]), np.array([0.1, 0.2])
    state = ref.adagrad_init(theta, 0.5)
    before = (theta.copy(), g.copy(), state["sum"].copy(), state["step"])
    ref.adagrad(theta, g, state, lr=0.1, weight_decay=0.1)
    np.testing.assert_array_equal(theta, before[0])
    np.testing.assert_array_equal(g, before[1])
    np.testing.assert_array_equal(state["sum"], before[2])
    assert state["step"] == before[3]


def test_unknown_eps_placement_raises():
    with pytest.raises(ValueError, match="eps_placement"):
        run_dense([1.0], [[1.0]], lr=0.1, eps_placement="middle")


# ---------------------------------------------------------------- against torch (float64), :ref:`algo-adagrad`

TORCH_CONFIGS = [
    {},
    {"weight_decay": 0.1},
    {"weight_decay": 0.1, "maximize": True},
    {"lr": 0.1},
    {"initial_accumulator_value": 0.1, "weight_decay": 0.1},
    {"lr": 0.1, "lr_decay": 0.5, "weight_decay": 0.1},
    {"eps": 1e-3, "lr": 0.05},
]


@pytest.mark.parametrize("cfg", TORCH_CONFIGS, ids=str)
@pytest.mark.parametrize("complex_param", [False, True])
def test_reference_matches_torch_float64(cfg, complex_param):
    """Reference == torch.optim.Adagrad(float64), including complex through view_as_real."""
    gen = torch.Generator().manual_seed(3)
    dtype = torch.complex128 if complex_param else torch.float64
    p = torch.randn(4, 3, dtype=dtype, generator=gen, requires_grad=True)
    opt = torch.optim.Adagrad([p], **cfg)
    hp = {k: v for k, v in cfg.items() if k != "initial_accumulator_value"}
    hp.setdefault("lr", 0.01)
    theta = to64(p)
    state = ref.adagrad_init(theta, cfg.get("initial_accumulator_value", 0.0))
    for _ in range(25):
        g = torch.randn(4, 3, dtype=dtype, generator=gen)
        p.grad = g.clone()
        opt.step()
        theta, state = ref.adagrad(theta, to64(g), state, **hp)
    np.testing.assert_allclose(to64(p), theta, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(to64(opt.state[p]["sum"]), state["sum"], rtol=1e-12)


# ---------------------------------------------------------------- :ref:`algo-sparse` sparse


def _dense_of(indices, values, shape):
    g = np.zeros(shape)
    np.add.at(g, np.asarray(indices), np.asarray(values))
    return g


def test_sparse_duplicates_are_summed_first():
    """Rows [1, 1] with values a, b equal one row 1 with a + b (never applied one by one)."""
    theta0 = np.arange(12.0).reshape(4, 3)
    a, b = np.array([1.0, 2.0, 3.0]), np.array([-0.5, 4.0, 0.25])
    s0 = ref.adagrad_sparse_init(theta0)
    t1, s1 = ref.adagrad_sparse(theta0, [1, 1], np.stack([a, b]), s0, lr=0.1)
    t2, s2 = ref.adagrad_sparse(theta0, [1], (a + b)[None], s0, lr=0.1)
    np.testing.assert_allclose(t1, t2, rtol=1e-15)
    np.testing.assert_allclose(s1["sum"], s2["sum"], rtol=1e-15)
    # applying them one by one would give a different result
    t3, _ = ref.adagrad_sparse(theta0, [1], a[None], s0, lr=0.1)
    t3, _ = ref.adagrad_sparse(t3, [1], b[None], _, lr=0.1)
    assert not np.allclose(t1, t3)


@pytest.mark.parametrize("placement", ["outside", "inside"])
@pytest.mark.parametrize("maximize", [False, True])
def test_sparse_equals_dense_with_zero_rows(placement, maximize):
    """Without weight decay and ρ = 1, sparse == dense (zero rows) after every step."""
    rng = np.random.default_rng(5)
    theta_s = theta_d = rng.normal(size=(6, 2))
    s_sparse, s_dense = ref.adagrad_sparse_init(theta_s, 0.1), ref.adagrad_init(theta_d, 0.1)
    hp = dict(lr=0.1, lr_decay=0.2, eps=1e-6, eps_placement=placement, maximize=maximize)
    for _ in range(10):
        idx = rng.integers(0, 6, size=4)
        vals = rng.normal(size=(4, 2))
        theta_s, s_sparse = ref.adagrad_sparse(theta_s, idx, vals, s_sparse, **hp)
        theta_d, s_dense = ref.adagrad(theta_d, _dense_of(idx, vals, (6, 2)), s_dense, **hp)
        np.testing.assert_allclose(theta_s, theta_d, rtol=1e-14)
        np.testing.assert_allclose(s_sparse["sum"], s_dense["sum"], rtol=1e-14)
    assert s_sparse["step"] == s_dense["step"] == 10


@pytest.mark.parametrize("wd,rho", [(0.3, 1.0), (0.0, 0.8), (0.3, 0.8)])
def test_sparse_lazy_after_flush_equals_dense_decoupled(wd, rho):
    """'lazy' decay and ρ < 1: after flush, sparse == dense decoupled on zero-row gradients."""
    rng = np.random.default_rng(7)
    shape = (8, 3)
    theta_s = theta_d = rng.normal(size=shape)
    s_sparse, s_dense = ref.adagrad_sparse_init(theta_s, 0.1), ref.adagrad_init(theta_d, 0.1)
    hp = dict(lr=0.1, lr_decay=0.1, weight_decay=wd, accumulator_decay=rho, eps=1e-8)
    mode = "lazy" if wd else None
    for step in range(15):
        nnz = 0 if step == 4 else 3  # includes an empty gradient
        idx = rng.integers(0, 8, size=nnz)
        vals = rng.normal(size=(nnz, 3))
        theta_s, s_sparse = ref.adagrad_sparse(
            theta_s, idx, vals, s_sparse, sparse_weight_decay=mode, **hp
        )
        theta_d, s_dense = ref.adagrad(
            theta_d, _dense_of(idx, vals, shape), s_dense, decoupled_weight_decay=True, **hp
        )
    flushed, s_flushed = ref.adagrad_sparse_flush(
        theta_s, s_sparse, weight_decay=wd, accumulator_decay=rho, sparse_weight_decay=mode
    )
    np.testing.assert_allclose(flushed, theta_d, rtol=1e-13)
    np.testing.assert_allclose(s_flushed["sum"], s_dense["sum"], rtol=1e-13)
    assert (s_flushed["last"] == 15).all()


def test_sparse_lazy_untouched_row_closed_form():
    """A row never touched decays by exactly Π_s(1 - lr_s·wd) at flush, and not before."""
    theta0 = np.array([[1.0, 2.0], [3.0, -4.0]])
    lr, d, wd, T = 0.2, 0.5, 0.1, 9
    theta, state = theta0, ref.adagrad_sparse_init(theta0, 0.1)
    for _ in range(T):
        theta, state = ref.adagrad_sparse(theta, [0], [[1.0, 1.0]], state, lr=lr, lr_decay=d,
                                          weight_decay=wd, sparse_weight_decay="lazy")
    np.testing.assert_array_equal(theta[1], theta0[1])  # not yet decayed
    flushed, _ = ref.adagrad_sparse_flush(theta, state, weight_decay=wd, sparse_weight_decay="lazy")
    factor = np.prod([1 - lr / (1 + (t - 1) * d) * wd for t in range(1, T + 1)])
    np.testing.assert_allclose(flushed[1], theta0[1] * factor, rtol=1e-14)
    np.testing.assert_array_equal(flushed[0], theta[0])  # touched at the last step: current


def test_sparse_touched_weight_decay():
    """'touched': g_r += wd·θ_r on touched rows only; untouched rows keep θ and G."""
    theta0 = np.array([[1.0, 2.0], [3.0, -4.0], [0.5, 0.5]])
    lr, wd = 0.1, 0.2
    state0 = ref.adagrad_sparse_init(theta0, 0.1)
    theta, state = ref.adagrad_sparse(theta0, [2, 0], [[1.0, 1.0], [0.5, -1.0]], state0,
                                      lr=lr, weight_decay=wd, sparse_weight_decay="touched")
    for r, g in [(0, np.array([0.5, -1.0])), (2, np.array([1.0, 1.0]))]:
        gp = g + wd * theta0[r]
        np.testing.assert_allclose(state["sum"][r], 0.1 + gp**2, rtol=1e-15)
        np.testing.assert_allclose(theta[r], theta0[r] - lr * gp / (np.sqrt(0.1 + gp**2) + 1e-10))
    np.testing.assert_array_equal(theta[1], theta0[1])
    np.testing.assert_array_equal(state["sum"][1], [0.1, 0.1])


def test_sparse_weight_decay_needs_a_mode():
    with pytest.raises(ValueError, match="sparse_weight_decay"):
        ref.adagrad_sparse(np.zeros((2, 2)), [0], [[1.0, 1.0]], ref.adagrad_sparse_init(np.zeros((2, 2))),
                           lr=0.1, weight_decay=0.1)


def test_sparse_reference_matches_torch_sparse():
    """Uncoalesced sparse gradients: reference == torch.optim.Adagrad's sparse path (float64)."""
    gen = torch.Generator().manual_seed(11)
    p = torch.randn(10, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    opt = torch.optim.Adagrad([p], lr=0.1, lr_decay=0.05, initial_accumulator_value=0.1)
    theta, state = to64(p), ref.adagrad_sparse_init(to64(p), 0.1)
    for _ in range(12):
        idx = torch.randint(0, 10, (6,), generator=gen)
        vals = torch.randn(6, 4, dtype=torch.float64, generator=gen)
        p.grad = torch.sparse_coo_tensor(idx[None], vals, (10, 4))  # uncoalesced
        opt.step()
        theta, state = ref.adagrad_sparse(theta, idx.numpy(), vals.numpy(), state,
                                          lr=0.1, lr_decay=0.05)
    np.testing.assert_allclose(to64(p), theta, rtol=1e-12)
    np.testing.assert_allclose(to64(opt.state[p]["sum"]), state["sum"], rtol=1e-12)


# ------------------------------------------- later sections (algo-rowwise ... algo-norm)


def test_rowwise_constant_gradient_closed_form():
    """:ref:`algo-rowwise`: G_r = G0 + t·mean(g_r²); θ_r moves by lr·g_r/(sqrt(G_r)+ε) each step."""
    theta0 = np.array([[1.0, 2.0, 3.0], [-1.0, 0.0, 1.0]])
    g = np.array([[0.5, -1.0, 2.0], [0.1, 0.1, 0.1]])
    lr, eps, G0, T = 0.1, 1e-10, 0.2, 12
    theta, state = theta0, ref.rowwise_adagrad_init(theta0, G0)
    assert state["sum"].shape == (2,)
    for _ in range(T):
        theta, state = ref.rowwise_adagrad(theta, g, state, lr=lr, eps=eps)
    row_ms = np.mean(g**2, axis=1)
    np.testing.assert_allclose(state["sum"], G0 + T * row_ms, rtol=1e-14)
    steps = sum(lr / (np.sqrt(G0 + t * row_ms) + eps) for t in range(1, T + 1))
    np.testing.assert_allclose(theta, theta0 - steps[:, None] * g, rtol=1e-13)


def test_rowwise_decoupled_and_l2():
    theta0 = np.array([[2.0, -2.0]])
    g = np.array([[0.5, 1.0]])
    lr, wd, G0 = 0.1, 0.3, 0.1
    s0 = ref.rowwise_adagrad_init(theta0, G0)
    dec, sd = ref.rowwise_adagrad(theta0, g, s0, lr=lr, weight_decay=wd, decoupled_weight_decay=True)
    G = G0 + np.mean(g**2)
    np.testing.assert_allclose(sd["sum"], [G])
    np.testing.assert_allclose(dec, theta0 * (1 - lr * wd) - lr / (np.sqrt(G) + 1e-10) * g)
    l2, sl = ref.rowwise_adagrad(theta0, g, s0, lr=lr, weight_decay=wd)
    gp = g + wd * theta0
    G = G0 + np.mean(gp**2)
    np.testing.assert_allclose(sl["sum"], [G])
    np.testing.assert_allclose(l2, theta0 - lr / (np.sqrt(G) + 1e-10) * gp)


def test_rowwise_1d_is_elementwise():
    theta0, g = np.array([1.0, -2.0]), np.array([0.3, 0.4])
    a, sa = ref.rowwise_adagrad(theta0, g, ref.rowwise_adagrad_init(theta0, 0.1), lr=0.1)
    b, sb = ref.adagrad(theta0, g, ref.adagrad_init(theta0, 0.1), lr=0.1)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(sa["sum"], sb["sum"])


def _rowwise_sparse_run(theta0, batches, **hp):
    theta, state = np.array(theta0, np.float64), ref.rowwise_adagrad_sparse_init(theta0)
    for idx, vals in batches:
        theta, state = ref.rowwise_adagrad_sparse(theta, idx, vals, state, **hp)
    return theta, state


def _rowwise_batches(rows, width, steps, seed):
    rng = np.random.default_rng(seed)
    return [(rng.integers(0, rows - 2, 7), rng.normal(size=(7, width))) for _ in range(steps)]


def _densify(idx, vals, rows):
    g = np.zeros((rows,) + vals.shape[1:])
    np.add.at(g, idx, vals)
    return g


def test_rowwise_sparse_duplicates_summed_equals_dense_without_decay():
    """:ref:`algo-sparse`, :ref:`algo-rowwise`: duplicates summed first; a zero row changes neither θ nor G, so without
    weight decay the sparse rule equals the dense one on every row."""
    theta0 = np.random.default_rng(0).normal(size=(9, 4))
    batches = _rowwise_batches(9, 4, 5, 1)
    sparse, s_state = _rowwise_sparse_run(theta0, batches, lr=0.3, lr_decay=0.1, maximize=True)
    dense, d_state = theta0, ref.rowwise_adagrad_init(theta0)
    for idx, vals in batches:
        dense, d_state = ref.rowwise_adagrad(dense, _densify(idx, vals, 9), d_state, lr=0.3,
                                             lr_decay=0.1, maximize=True)
    np.testing.assert_allclose(sparse, dense, rtol=1e-13)
    np.testing.assert_allclose(s_state["sum"], d_state["sum"], rtol=1e-13)
    assert np.all(s_state["sum"][-2:] == 0)  # never touched


def test_rowwise_sparse_lazy_after_flush_equals_dense_decoupled():
    theta0 = np.random.default_rng(2).normal(size=(9, 3))
    batches = _rowwise_batches(9, 3, 6, 3)
    hp = dict(lr=0.2, lr_decay=0.3, weight_decay=0.1)
    sparse, s_state = _rowwise_sparse_run(theta0, batches, sparse_weight_decay="lazy", **hp)
    sparse, s_state = ref.rowwise_adagrad_sparse_flush(sparse, s_state, weight_decay=0.1,
                                                       sparse_weight_decay="lazy")
    dense, d_state = theta0, ref.rowwise_adagrad_init(theta0)
    for idx, vals in batches:
        dense, d_state = ref.rowwise_adagrad(dense, _densify(idx, vals, 9), d_state,
                                             decoupled_weight_decay=True, **hp)
    np.testing.assert_allclose(sparse, dense, rtol=1e-13)
    np.testing.assert_allclose(s_state["sum"], d_state["sum"], rtol=1e-13)


@pytest.mark.parametrize("decoupled", [False, True])
def test_rowwise_sparse_touched_closed_form(decoupled):
    """One step, "touched": row 1 (touched twice) takes :ref:`algo-rowwise` with its decay, row 0 is kept."""
    theta0 = np.array([[1.0, -1.0], [2.0, 0.5]])
    idx, vals = np.array([1, 1]), np.array([[0.5, 1.0], [0.5, -2.0]])
    theta, state = ref.rowwise_adagrad_sparse(
        theta0, idx, vals, ref.rowwise_adagrad_sparse_init(theta0, 0.1), lr=0.1,
        weight_decay=0.2, decoupled_weight_decay=decoupled, sparse_weight_decay="touched")
    g = np.array([1.0, -1.0])
    gp = g if decoupled else g + 0.2 * theta0[1]
    G = 0.1 + np.mean(gp ** 2)
    m = 0.1 / (np.sqrt(G) + 1e-10)
    expected = theta0[1] * (1 - 0.1 * 0.2) - m * g if decoupled else theta0[1] - m * gp
    np.testing.assert_allclose(theta[1], expected, rtol=1e-15)
    np.testing.assert_allclose(state["sum"], [0.1, G], rtol=1e-15)
    np.testing.assert_array_equal(theta[0], theta0[0])


def test_rowwise_sparse_weight_decay_needs_a_mode():
    theta0 = np.zeros((3, 2))
    with pytest.raises(ValueError, match="sparse_weight_decay"):
        ref.rowwise_adagrad_sparse(theta0, [0], np.ones((1, 2)),
                                   ref.rowwise_adagrad_sparse_init(theta0), lr=0.1,
                                   weight_decay=0.1)


def test_proximal_without_regularization_is_adagrad_without_eps():
    theta0, g = np.array([1.0, -2.0, 0.5]), np.array([0.3, 0.4, -2.0])
    a, sa = ref.proximal_adagrad(theta0, g, ref.proximal_adagrad_init(theta0), lr=0.1)
    np.testing.assert_allclose(sa["sum"], 0.1 + g**2)
    np.testing.assert_allclose(a, theta0 - 0.1 * g / np.sqrt(0.1 + g**2), rtol=1e-15)


def test_proximal_l1_l2_closed_form_and_exact_zeros():
    theta0, g = np.array([0.01, 1.0, -1.0]), np.array([0.0, 0.5, -0.5])
    lr, l1, l2 = 0.1, 0.5, 0.2
    th, _ = ref.proximal_adagrad(theta0, g, ref.proximal_adagrad_init(theta0), lr=lr, l1=l1, l2=l2)
    eta = lr / np.sqrt(0.1 + g**2)
    v = theta0 - eta * g
    np.testing.assert_allclose(th, np.sign(v) * np.maximum(np.abs(v) - eta * l1, 0) / (1 + eta * l2))
    assert th[0] == 0.0  # the L1 step drives the small weight to an exact zero


def test_rda_constant_gradient_closed_form():
    """:ref:`algo-dual-averaging`, l1 = l2 = 0: θ_T = -lr·T·g / sqrt(G0 + T g²); with
    |g| < l1, θ stays exactly 0."""
    g, lr, T = np.array([0.5, -2.0]), 0.3, 9
    theta, state = np.zeros(2), ref.adagrad_da_init(np.zeros(2))
    for _ in range(T):
        theta, state = ref.adagrad_da(theta, g, state, lr=lr)
    np.testing.assert_allclose(theta, -lr * T * g / np.sqrt(0.1 + T * g**2), rtol=1e-14)
    theta, state = np.ones(2), ref.adagrad_da_init(np.ones(2))
    for _ in range(T):
        theta, state = ref.adagrad_da(theta, g, state, lr=lr, l1=1.0, l2=0.1)
    z, G = T * g, 0.1 + T * g**2
    expect = -np.sign(z) * lr * np.maximum(np.abs(z) - 1.0 * T, 0) / (0.1 * T * lr + np.sqrt(G))
    np.testing.assert_allclose(theta, expect, rtol=1e-14)
    assert theta[0] == 0.0


def test_ftrl_first_step_closed_form():
    """:ref:`algo-ftrl` from θ = 0, n = 0: z = g, n = g², θ = -g / ((β + |g|)/α + λ2) unless |g| <= λ1."""
    g, alpha, beta, l2 = np.array([0.5, -2.0, 0.05]), 0.1, 1.0, 0.3
    th, st = ref.ftrl(np.zeros(3), g, ref.ftrl_init(np.zeros(3)), lr=alpha, beta=beta, l1=0.1, l2=l2)
    np.testing.assert_allclose(st["z"], g)
    np.testing.assert_allclose(st["n"], g**2)
    expect = -(g - np.sign(g) * 0.1) / ((beta + np.abs(g)) / alpha + l2)
    expect[2] = 0.0
    np.testing.assert_allclose(th, expect)


def test_ftrl_sigma_uses_current_weights():
    theta, g, alpha = np.array([1.0]), np.array([2.0]), 0.5
    state = {"step": 3, "z": np.array([0.3]), "n": np.array([1.0])}
    _, st = ref.ftrl(theta, g, state, lr=alpha)
    sigma = (np.sqrt(1.0 + 4.0) - 1.0) / alpha
    np.testing.assert_allclose(st["z"], 0.3 + 2.0 - sigma * 1.0)
    assert st["step"] == 4


def test_adagrad_norm_constant_gradient_closed_form():
    """:ref:`algo-norm`: b² = b0² + t·||g||², one scalar for the whole tensor."""
    theta0, g, lr, T = np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([[0.1, -0.2], [0.3, 0.0]]), 0.2, 15
    theta, state = theta0, ref.adagrad_norm_init(theta0, 0.5)
    for _ in range(T):
        theta, state = ref.adagrad_norm(theta, g, state, lr=lr, lr_decay=0.1)
    n2 = np.sum(g**2)
    assert state["sum"].shape == ()
    np.testing.assert_allclose(state["sum"], 0.5 + T * n2)
    steps = sum(lr / (1 + (t - 1) * 0.1) / (np.sqrt(0.5 + t * n2) + 1e-10) for t in range(1, T + 1))
    np.testing.assert_allclose(theta, theta0 - steps * g, rtol=1e-13)
