"""adagrad.Adagrad's own options against the float64 reference and closed forms (issue 2, 3-5)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from conftest import to64
from hypothesis import given, settings
from hypothesis import strategies as st

from adagrad import Adagrad
from adagrad import reference as ref

# :ref:`algo-conventions`: (eps, eps_placement, initial_accumulator_value, decoupled_weight_decay)
CONVENTIONS = {
    "torch": (1e-10, "outside", 0.0, False),
    "optax": (1e-7, "inside", 0.1, False),
    "keras": (1e-7, "inside", 0.1, True),
    "tensorflow": (1e-7, "outside", 0.1, False),
    "fbgemm": (1e-8, "outside", 0.0, False),
}
RESOLVED_KEYS = ("eps", "eps_placement", "initial_accumulator_value", "decoupled_weight_decay")


def ours_vs_reference(opt_kwargs, ref_kwargs, G0, *, shape=(3, 4), dtype=torch.float64,
                      steps=20, seed=0, zero_frac=0.0):
    """Run ours and reference.adagrad on the same gradients; return both results."""
    gen = torch.Generator().manual_seed(seed)
    p = torch.randn(shape, dtype=dtype, generator=gen).requires_grad_()
    opt = Adagrad([p], **opt_kwargs)
    theta, state = to64(p), ref.adagrad_init(to64(p), G0)
    for _ in range(steps):
        g = torch.randn(shape, dtype=dtype, generator=gen)
        if zero_frac:
            g = g * (torch.rand(shape, generator=gen) >= zero_frac)
        p.grad = g.clone()
        opt.step()
        theta, state = ref.adagrad(theta, to64(g), state, **ref_kwargs)
    return p, opt.state.get(p, {}), theta, state


def assert_matches(p, st_ours, theta, st_ref, rtol=1e-10, atol=1e-12):
    np.testing.assert_allclose(to64(p), theta, rtol=rtol, atol=atol)
    if theta.size:
        np.testing.assert_allclose(to64(st_ours["sum"]), st_ref["sum"], rtol=rtol, atol=atol)
    assert float(st_ours["step"]) == st_ref["step"]


# ------------------------------------------------------------------------- defaults, conventions


def test_defaults_are_resolved_torch_values():
    """No convention: torch's values, resolved (not None) in defaults and in the groups."""
    opt = Adagrad([torch.zeros(2, requires_grad=True)])
    want = dict(zip(RESOLVED_KEYS, CONVENTIONS["torch"]))
    want.update(lr=1e-2, lr_decay=0, weight_decay=0, accumulator_decay=1.0, maximize=False)
    for k, v in want.items():
        assert opt.defaults[k] == v, k
        assert opt.param_groups[0][k] == v, k


@pytest.mark.parametrize("name", list(CONVENTIONS))
def test_convention_sets_defaults(name):
    opt = Adagrad([torch.zeros(2, requires_grad=True)], convention=name)
    for k, v in zip(RESOLVED_KEYS, CONVENTIONS[name]):
        assert opt.defaults[k] == v, k
        assert opt.param_groups[0][k] == v, k


@pytest.mark.parametrize("name", list(CONVENTIONS))
def test_convention_trajectory_matches_reference(name):
    """20 steps with weight decay under each convention equal the reference with the table values."""
    eps, placement, G0, decoupled = CONVENTIONS[name]
    hp = dict(lr=0.05, weight_decay=0.1)
    p, s, theta, rs = ours_vs_reference(
        dict(hp, convention=name), dict(hp, eps=eps, eps_placement=placement,
                                        decoupled_weight_decay=decoupled), G0)
    assert_matches(p, s, theta, rs)


@pytest.mark.parametrize("name", list(CONVENTIONS))
def test_explicit_arguments_win_over_convention(name):
    """Arguments given explicitly win, even when equal to torch's defaults."""
    explicit = dict(eps=1e-3, eps_placement="inside" if name in ("torch", "tensorflow", "fbgemm")
                    else "outside", initial_accumulator_value=0.0 if name != "torch" else 0.5,
                    decoupled_weight_decay=not CONVENTIONS[name][3])
    opt = Adagrad([torch.zeros(2, requires_grad=True)], convention=name, **explicit)
    for k, v in explicit.items():
        assert opt.defaults[k] == v, k
    hp = dict(lr=0.05, weight_decay=0.1)
    ref_hp = {k: v for k, v in explicit.items() if k != "initial_accumulator_value"}
    p, s, theta, rs = ours_vs_reference(dict(hp, convention=name, **explicit), dict(hp, **ref_hp),
                                        explicit["initial_accumulator_value"])
    assert_matches(p, s, theta, rs)


def test_convention_none_explicit_is_torch():
    a = Adagrad([torch.zeros(1, requires_grad=True)], convention=None).defaults
    b = Adagrad([torch.zeros(1, requires_grad=True)], convention="torch").defaults
    for k in RESOLVED_KEYS:
        assert a[k] == b[k]


# ------------------------------------------------------------------------- bad input

BAD = [
    ("lr", -1e-3, "Invalid learning rate"),
    ("eps", -1e-8, "Invalid epsilon value"),
    ("lr_decay", -0.5, "Invalid lr_decay value: -0.5"),
    ("weight_decay", -0.1, "Invalid weight_decay value"),
    ("initial_accumulator_value", -0.1, "Invalid initial_accumulator_value value"),
    ("eps_placement", "middle", None),
    ("convention", "pytorch", None),
    ("accumulator_decay", 0.0, None),
    ("accumulator_decay", 1.5, None),
    ("accumulator_decay", -0.1, None),
    ("accumulator_decay", float("nan"), None),
]


@pytest.mark.parametrize("arg,value,torch_text", BAD, ids=lambda v: str(v))
def test_bad_hyperparameter_raises_value_error(arg, value, torch_text):
    """ValueError naming the argument and the value (and torch's wording where torch has one)."""
    with pytest.raises(ValueError) as exc:
        Adagrad([torch.zeros(2, requires_grad=True)], **{arg: value})
    msg = str(exc.value)
    assert re.search(rf"\b{arg}\b", msg), f"{arg!r} not named in {msg!r}"
    assert str(value) in msg, f"{value!r} not in {msg!r}"
    if torch_text:
        assert torch_text in msg


def test_negative_per_group_initial_accumulator_value_raises():
    """A per-group value is honoured, so it must be validated too (at construction or first step)."""
    p = torch.zeros(2, requires_grad=True)
    with pytest.raises(ValueError, match="initial_accumulator_value"):
        opt = Adagrad([{"params": [p], "initial_accumulator_value": -1.0}])
        p.grad = torch.ones_like(p)
        opt.step()


def test_fused_and_foreach_together_raise():
    with pytest.raises(RuntimeError, match="`fused` and `foreach` cannot be `True` together."):
        Adagrad([torch.zeros(2, requires_grad=True)], foreach=True, fused=True)


def test_tensor_lr_must_be_one_element():
    with pytest.raises(ValueError, match="Tensor lr must be 1-element"):
        Adagrad([torch.zeros(2, requires_grad=True)], lr=torch.tensor([0.1, 0.1]))


# ------------------------------------------------------------------------- property tests

IMPLS = [(None, None), (False, False), (True, False), (False, True)]


@settings(max_examples=60)
@given(
    shape=st.lists(st.integers(0, 4), min_size=0, max_size=3).map(tuple),
    dtype=st.sampled_from([torch.float32, torch.float64]),
    eps_placement=st.sampled_from(["outside", "inside"]),
    eps=st.sampled_from([1e-10, 1e-7, 1e-3]),
    decoupled=st.booleans(),
    rho=st.sampled_from([1.0, 0.9, 0.5]),
    lr=st.sampled_from([0.01, 0.1, 0.5]),
    lr_decay=st.sampled_from([0.0, 0.1]),
    maximize=st.booleans(),
    wd=st.sampled_from([0.0, 0.05]),
    iav=st.sampled_from([0.0, 0.1]),
    impl=st.sampled_from(IMPLS),
    steps=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_property_matches_reference(shape, dtype, eps_placement, eps, decoupled, rho, lr,
                                    lr_decay, maximize, wd, iav, impl, steps, seed):
    """Random shapes (0-d and empty too), dtypes and options: ours == reference.adagrad."""
    hp = dict(lr=lr, lr_decay=lr_decay, weight_decay=wd, eps=eps, eps_placement=eps_placement,
              decoupled_weight_decay=decoupled, accumulator_decay=rho, maximize=maximize)
    foreach, fused = impl
    p, s, theta, rs = ours_vs_reference(
        dict(hp, initial_accumulator_value=iav, foreach=foreach, fused=fused), hp, iav,
        shape=shape, dtype=dtype, steps=steps, seed=seed, zero_frac=0.3)
    if dtype == torch.float32:
        assert_matches(p, s, theta, rs, rtol=1e-5, atol=1e-6)
    else:
        assert_matches(p, s, theta, rs)
    assert p.dtype == dtype and tuple(p.shape) == shape


# ------------------------------------------------------------------------- the founding formula


def test_eps_inside_is_the_founding_formula():
    """θ_t = θ_{t-1} - η g / sqrt(G_t + ε), G_t = G_{t-1} + g² (constant g, closed form)."""
    T, lr, eps = 30, 0.1, 1e-2
    g = torch.tensor([0.5, -2.0], dtype=torch.float64)
    p = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    opt = Adagrad([p], lr=lr, eps=eps, eps_placement="inside")
    expect = torch.zeros(2, dtype=torch.float64)
    for t in range(1, T + 1):
        p.grad = g.clone()
        opt.step()
        expect = expect - lr * g / torch.sqrt(t * g**2 + eps)
    torch.testing.assert_close(p.detach(), expect, rtol=1e-12, atol=0)


def test_eps_inside_zero_denominator_is_zero_update():
    """eps=0 inside, G0=0, a zero gradient coordinate: update 0, no NaN."""
    p = torch.tensor([1.0, 2.0], dtype=torch.float64, requires_grad=True)
    opt = Adagrad([p], lr=0.1, eps=0.0, eps_placement="inside")
    p.grad = torch.tensor([0.0, 4.0], dtype=torch.float64)
    opt.step()
    torch.testing.assert_close(p.detach(), torch.tensor([1.0, 1.9], dtype=torch.float64))


# ------------------------------------------------------------------------- accumulator decay, reset


@pytest.mark.parametrize("rho", [0.5, 0.9, 0.99])
def test_accumulator_decay_closed_form(rho):
    """Constant g: G_T = ρ^T G0 + g²(1-ρ^T)/(1-ρ)."""
    T, G0 = 40, 0.2
    g = torch.tensor([0.3, -1.7, 2.5], dtype=torch.float64)
    p = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    opt = Adagrad([p], lr=0.01, accumulator_decay=rho, initial_accumulator_value=G0)
    for _ in range(T):
        p.grad = g.clone()
        opt.step()
    expect = rho**T * G0 + g**2 * (1 - rho**T) / (1 - rho)
    torch.testing.assert_close(opt.state[p]["sum"], expect, rtol=1e-12, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_accumulator_decay_matches_reference(dtype):
    hp = dict(lr=0.1, accumulator_decay=0.8, weight_decay=0.01)
    p, s, theta, rs = ours_vs_reference(dict(hp, initial_accumulator_value=0.1), hp, 0.1,
                                        dtype=dtype, steps=30)
    if dtype == torch.float32:
        assert_matches(p, s, theta, rs, rtol=1e-5, atol=1e-6)
    else:
        assert_matches(p, s, theta, rs)


def test_reset_state_restores_initial_accumulators_per_group():
    """reset_state(): every sum back to its group's G0 (complex: complex(v, v)); training goes on."""
    a = torch.randn(3, 2, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)
    c = torch.randn(2, dtype=torch.complex128, requires_grad=True)
    opt = Adagrad([{"params": [a], "initial_accumulator_value": 0.5}, {"params": [b, c]}],
                  lr=0.1, initial_accumulator_value=0.1)
    for _ in range(5):
        for p in (a, b, c):
            p.grad = torch.randn_like(p)
        opt.step()
    opt.reset_state()
    torch.testing.assert_close(opt.state[a]["sum"], torch.full_like(a, 0.5))
    torch.testing.assert_close(opt.state[b]["sum"], torch.full_like(b, 0.1))
    torch.testing.assert_close(opt.state[c]["sum"], torch.full_like(c, complex(0.1, 0.1)))
    # the next step starts from G0 again (lr_decay = 0, so the step count does not matter)
    theta = to64(a)
    g = torch.randn_like(a)
    a.grad, b.grad, c.grad = g.clone(), None, None
    opt.step()
    expect, _ = ref.adagrad(theta, to64(g), {"step": 5, "sum": np.full((3, 2), 0.5)}, lr=0.1)
    np.testing.assert_allclose(to64(a), expect, rtol=1e-12)


# ------------------------------------------------------------------------- torch quirks we fix


def test_per_group_initial_accumulator_value_is_honoured():
    """torch ignores a per-group initial_accumulator_value; ours uses it."""
    a = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    opt = Adagrad([{"params": [a], "initial_accumulator_value": 0.5}, {"params": [b]}],
                  lr=0.1, initial_accumulator_value=0.1)
    assert opt.param_groups[0]["initial_accumulator_value"] == 0.5
    assert opt.param_groups[1]["initial_accumulator_value"] == 0.1
    g = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    a.grad, b.grad = g.clone(), g.clone()
    opt.step()
    for p, G0 in ((a, 0.5), (b, 0.1)):
        torch.testing.assert_close(opt.state[p]["sum"], G0 + g**2)
        torch.testing.assert_close(p.detach(), -0.1 * g / (torch.sqrt(G0 + g**2) + 1e-10))


def test_state_is_created_lazily():
    p = torch.zeros(3, requires_grad=True)
    opt = Adagrad([p])
    assert len(opt.state) == 0 or all(len(s) == 0 for s in opt.state.values())
    p.grad = torch.ones(3)
    opt.step()
    assert set(opt.state[p]) >= {"step", "sum"}


def test_model_cast_after_building_optimizer_keeps_working():
    """model.double() after Adagrad(model.parameters()): ours trains like torch built after the cast."""
    torch.manual_seed(0)
    m_o = torch.nn.Linear(4, 2)
    m_t = torch.nn.Linear(4, 2)
    m_t.load_state_dict(m_o.state_dict())
    opt_o = Adagrad(m_o.parameters(), lr=0.1, initial_accumulator_value=0.1)
    m_o.double()
    m_t.double()
    opt_t = torch.optim.Adagrad(m_t.parameters(), lr=0.1, initial_accumulator_value=0.1)
    x = torch.randn(8, 4, dtype=torch.float64)
    for _ in range(5):
        for m, opt in ((m_o, opt_o), (m_t, opt_t)):
            opt.zero_grad()
            m(x).pow(2).sum().backward()
            opt.step()
    for a, b in zip(m_o.parameters(), m_t.parameters()):
        assert opt_o.state[a]["sum"].dtype == torch.float64
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(opt_o.state[a]["sum"], opt_t.state[b]["sum"], rtol=1e-12, atol=0)


def _ones_steps(opt, p, n):
    for _ in range(n):
        p.grad = torch.ones_like(p)
        opt.step()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_low_precision_params_get_float32_sum(dtype):
    """bf16/fp16 θ, 3000 steps of g = 1: sum is float32 and exactly 3000 (torch: 256 / 2048)."""
    p = torch.zeros(4, dtype=dtype, requires_grad=True)
    opt = Adagrad([p], lr=1e-3)
    _ones_steps(opt, p, 3000)
    s = opt.state[p]["sum"]
    assert s.dtype == torch.float32
    torch.testing.assert_close(s, torch.full((4,), 3000.0), rtol=0, atol=0)
    assert p.dtype == dtype


def test_state_dtype_bfloat16_reproduces_torch():
    """state_dtype=torch.bfloat16 gives torch's bf16 accumulator (which saturates at 256)."""
    p_o = torch.zeros(4, dtype=torch.bfloat16, requires_grad=True)
    p_t = p_o.detach().clone().requires_grad_()
    opt_o = Adagrad([p_o], lr=1e-3, state_dtype=torch.bfloat16)
    opt_t = torch.optim.Adagrad([p_t], lr=1e-3)
    _ones_steps(opt_o, p_o, 3000)
    _ones_steps(opt_t, p_t, 3000)
    s_o, s_t = opt_o.state[p_o]["sum"], opt_t.state[p_t]["sum"]
    assert s_o.dtype == torch.bfloat16
    torch.testing.assert_close(s_o, s_t, rtol=0, atol=0)
    assert float(s_t[0]) < 3000  # torch's quirk, reproduced
    torch.testing.assert_close(p_o, p_t)


@pytest.mark.parametrize("state_dtype", [torch.float64, torch.float32], ids=str)
def test_explicit_state_dtype_is_used(state_dtype):
    p = torch.zeros(3, dtype=torch.bfloat16, requires_grad=True)
    opt = Adagrad([p], state_dtype=state_dtype)
    _ones_steps(opt, p, 3)
    assert opt.state[p]["sum"].dtype == state_dtype


@pytest.mark.parametrize("placement", ["outside", "inside"])
def test_float32_param_keeps_float32_sum(placement):
    p = torch.zeros(3, requires_grad=True)
    opt = Adagrad([p], eps_placement=placement)
    _ones_steps(opt, p, 2)
    assert opt.state[p]["sum"].dtype == torch.float32


def test_complex_param_initial_sum_is_complex_v_v():
    p = torch.zeros(3, dtype=torch.complex64, requires_grad=True)
    opt = Adagrad([p], initial_accumulator_value=0.25, lr=0.1)
    p.grad = torch.tensor([1 + 2j, 0j, -1j], dtype=torch.complex64)
    opt.step()
    s = opt.state[p]["sum"]
    assert s.dtype == torch.complex64
    expect = torch.complex(0.25 + p.grad.real**2, 0.25 + p.grad.imag**2)
    torch.testing.assert_close(s, expect)


def test_step_count_is_a_float32_cpu_scalar():
    p = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    opt = Adagrad([p], fused=True)
    _ones_steps(opt, p, 3)
    step = opt.state[p]["step"]
    assert torch.is_tensor(step) and step.dim() == 0
    assert step.dtype == torch.float32 and step.device.type == "cpu"
    assert float(step) == 3


def test_closure_is_called_and_loss_returned():
    p = torch.tensor([1.0, -1.0], requires_grad=True)
    opt = Adagrad([p], lr=0.1)
    calls = []

    def closure():
        calls.append(1)
        opt.zero_grad()
        loss = (p**2).sum()
        loss.backward()
        return loss

    loss = opt.step(closure)
    assert calls == [1]
    assert math.isclose(float(loss), 2.0)
    torch.testing.assert_close(p.detach(), torch.tensor([0.9, -0.9]))
