"""Checkpoints: state keys, torch <-> ours, bad state_dicts (issue 2, item 2 and "Bad input")."""

from __future__ import annotations

import copy
import io
import re

import pytest
import torch

from adagrad import Adagrad


def _params(dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, dtype=dtype, generator=gen).requires_grad_() for s in [(3, 4), (5, 2), (4,)]]


def _clone(ps):
    return [p.detach().clone().requires_grad_() for p in ps]


def _grads(ps, steps, seed):
    gen = torch.Generator().manual_seed(seed)
    return [[torch.randn(p.shape, dtype=p.dtype, generator=gen) for p in ps] for _ in range(steps)]


def _train(opt, ps, grads):
    for gs in grads:
        for p, g in zip(ps, gs):
            p.grad = g.clone()
        opt.step()


def _assert_same(ps_a, opt_a, ps_b, opt_b, rtol=1e-6, atol=1e-6):
    for a, b in zip(ps_a, ps_b):
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol)
        torch.testing.assert_close(opt_a.state[a]["sum"], opt_b.state[b]["sum"], rtol=rtol, atol=atol)
        assert float(opt_a.state[a]["step"]) == float(opt_b.state[b]["step"])


OUR_OPTIONS = [
    {},
    {"eps_placement": "inside", "eps": 1e-7},
    {"decoupled_weight_decay": True, "weight_decay": 0.1},
    {"accumulator_decay": 0.9, "initial_accumulator_value": 0.1},
    {"convention": "keras", "weight_decay": 0.01},
]


@pytest.mark.parametrize("kwargs", OUR_OPTIONS, ids=str)
def test_state_keys_are_step_and_sum(kwargs):
    """Dense state is exactly {step: 0-d float32 CPU tensor, sum: like the param}."""
    ps = _params()
    opt = Adagrad(ps, **kwargs)
    _train(opt, ps, _grads(ps, 2, 1))
    sd = opt.state_dict()
    assert set(sd["state"]) == {0, 1, 2}
    for i, p in enumerate(ps):
        st = sd["state"][i]
        assert set(st) == {"step", "sum"}
        assert st["step"].shape == () and st["step"].dtype == torch.float32
        assert st["step"].device.type == "cpu" and float(st["step"]) == 2
        assert st["sum"].shape == p.shape and st["sum"].dtype == p.dtype


TORCH_CONFIGS = [
    {},
    {"weight_decay": 0.1, "initial_accumulator_value": 0.1},
    {"lr": 0.1, "lr_decay": 0.5},
    {"maximize": True, "fused": True},
    {"foreach": True, "eps": 1e-6},
]


@pytest.mark.parametrize("kwargs", TORCH_CONFIGS, ids=str)
def test_torch_checkpoint_loads_into_ours(kwargs):
    """torch trains 10 steps, ours loads its state_dict: both continue identically."""
    ps_t = _params()
    opt_t = torch.optim.Adagrad(ps_t, **kwargs)
    _train(opt_t, ps_t, _grads(ps_t, 10, 1))
    ps_o = _clone(ps_t)
    opt_o = Adagrad(ps_o, **kwargs)
    opt_o.load_state_dict(copy.deepcopy(opt_t.state_dict()))
    for k in ("eps_placement", "decoupled_weight_decay", "accumulator_decay"):
        assert k in opt_o.param_groups[0], f"{k} missing after loading a torch checkpoint"
    assert opt_o.param_groups[0]["eps_placement"] == "outside"
    assert opt_o.param_groups[0]["decoupled_weight_decay"] is False
    assert opt_o.param_groups[0]["accumulator_decay"] == 1.0
    more = _grads(ps_t, 10, 2)
    _train(opt_t, ps_t, more)
    _train(opt_o, ps_o, more)
    _assert_same(ps_o, opt_o, ps_t, opt_t)


@pytest.mark.parametrize("kwargs", TORCH_CONFIGS, ids=str)
def test_our_checkpoint_loads_into_torch(kwargs):
    """ours trains 10 steps, torch loads our state_dict: both continue identically."""
    ps_o = _params()
    opt_o = Adagrad(ps_o, **kwargs)
    _train(opt_o, ps_o, _grads(ps_o, 10, 1))
    ps_t = _clone(ps_o)
    opt_t = torch.optim.Adagrad(ps_t, **kwargs)
    opt_t.load_state_dict(copy.deepcopy(opt_o.state_dict()))
    more = _grads(ps_o, 10, 2)
    _train(opt_t, ps_t, more)
    _train(opt_o, ps_o, more)
    _assert_same(ps_o, opt_o, ps_t, opt_t)


@pytest.mark.parametrize("kwargs", OUR_OPTIONS, ids=str)
def test_round_trip_then_training_equals_uninterrupted(kwargs):
    """state_dict -> torch.save -> torch.load(weights_only=True) -> load: training goes on unchanged."""
    ps_a = _params(torch.float64)
    opt_a = Adagrad(ps_a, **kwargs)
    first, second = _grads(ps_a, 5, 1), _grads(ps_a, 5, 2)
    _train(opt_a, ps_a, first)
    buf = io.BytesIO()
    torch.save(opt_a.state_dict(), buf)
    buf.seek(0)
    sd = torch.load(buf, weights_only=True)
    ps_b = _clone(ps_a)
    opt_b = Adagrad(ps_b, lr=123.0)  # different hyperparameters: the checkpoint's win
    opt_b.load_state_dict(sd)
    for k, v in opt_a.param_groups[0].items():
        if k != "params":
            assert opt_b.param_groups[0][k] == v, k
    _train(opt_a, ps_a, second)
    _train(opt_b, ps_b, second)
    _assert_same(ps_b, opt_b, ps_a, opt_a, rtol=0, atol=0)


def test_bf16_checkpoint_keeps_float32_sum():
    """load_state_dict does not cast a float32 sum down to the bf16 parameter's dtype."""
    p = torch.zeros(4, dtype=torch.bfloat16, requires_grad=True)
    opt = Adagrad([p], lr=1e-3)
    for _ in range(300):
        p.grad = torch.ones_like(p)
        opt.step()
    q = p.detach().clone().requires_grad_()
    opt2 = Adagrad([q], lr=1e-3)
    opt2.load_state_dict(opt.state_dict())
    s = opt2.state[q]["sum"]
    assert s.dtype == torch.float32
    torch.testing.assert_close(s, torch.full((4,), 300.0), rtol=0, atol=0)


def test_torch_bf16_checkpoint_gets_float32_sum():
    """A torch bf16 checkpoint (sum saturated at 256) loads as a float32 sum and then counts on."""
    p = torch.zeros(4, dtype=torch.bfloat16, requires_grad=True)
    opt_t = torch.optim.Adagrad([p], lr=1e-3)
    for _ in range(300):
        p.grad = torch.ones_like(p)
        opt_t.step()
    saved = opt_t.state[p]["sum"].float()
    q = p.detach().clone().requires_grad_()
    opt = Adagrad([q], lr=1e-3)
    opt.load_state_dict(opt_t.state_dict())
    assert opt.state[q]["sum"].dtype == torch.float32
    torch.testing.assert_close(opt.state[q]["sum"], saved, rtol=0, atol=0)
    for _ in range(100):
        q.grad = torch.ones_like(q)
        opt.step()
    torch.testing.assert_close(opt.state[q]["sum"], saved + 100, rtol=0, atol=0)


def test_nontensor_step_loads():
    """An old checkpoint with a Python float step loads (as torch's) and steps on."""
    ps = _params()
    opt = Adagrad(ps)
    _train(opt, ps, _grads(ps, 3, 1))
    sd = copy.deepcopy(opt.state_dict())
    for st in sd["state"].values():
        st["step"] = float(st["step"])
    ps2 = _clone(ps)
    opt2 = Adagrad(ps2)
    opt2.load_state_dict(sd)
    more = _grads(ps, 2, 2)
    _train(opt, ps, more)
    _train(opt2, ps2, more)
    _assert_same(ps2, opt2, ps, opt, rtol=0, atol=0)
    assert torch.is_tensor(opt2.state[ps2[0]]["step"])


def _snapshot(opt):
    groups = [{k: (copy.deepcopy(v) if k != "params" else [id(p) for p in v]) for k, v in g.items()}
              for g in opt.param_groups]
    state = {id(p): {k: v.clone() if torch.is_tensor(v) else copy.deepcopy(v) for k, v in s.items()}
             for p, s in opt.state.items()}
    return groups, state


def _assert_unchanged(opt, snap):
    groups, state = _snapshot(opt)
    assert groups == snap[0]
    assert state.keys() == snap[1].keys()
    for pid, s in state.items():
        assert s.keys() == snap[1][pid].keys()
        for k, v in s.items():
            if torch.is_tensor(v):
                torch.testing.assert_close(v, snap[1][pid][k], rtol=0, atol=0)
            else:
                assert v == snap[1][pid][k]


def _bad_state_dict(opt, ps):
    """A copy of opt's state_dict with another lr, param 0's sum changed, param 1's sum misshaped."""
    sd = copy.deepcopy(opt.state_dict())
    sd["param_groups"][0]["lr"] = 0.5
    sd["state"][0]["sum"] = sd["state"][0]["sum"] + 7.0
    sd["state"][1]["sum"] = torch.zeros(2, 5)  # param 1 is (5, 2)
    return sd


def test_misshaped_state_dict_raises_and_changes_nothing():
    """ValueError naming the parameter and both shapes; state and groups stay as they were."""
    ps = _params()
    opt = Adagrad(ps, lr=0.01)
    _train(opt, ps, _grads(ps, 2, 1))
    sd = _bad_state_dict(opt, ps)
    snap = _snapshot(opt)
    with pytest.raises(ValueError) as exc:
        opt.load_state_dict(sd)
    msg = str(exc.value)
    assert re.search(r"5,\s*2", msg) and re.search(r"2,\s*5", msg), msg
    assert re.search(r"\b1\b", msg), f"parameter index not named in {msg!r}"
    _assert_unchanged(opt, snap)
    # and it still trains
    _train(opt, ps, _grads(ps, 1, 3))


def test_misshaped_state_dict_names_named_parameter():
    """With named parameters the message carries the parameter's name."""
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    opt = Adagrad(model.named_parameters(), lr=0.01)
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    sd = copy.deepcopy(opt.state_dict())
    sd["state"][2]["sum"] = torch.zeros(3, 3)  # "1.weight" is (2, 3)
    snap = _snapshot(opt)
    with pytest.raises(ValueError) as exc:
        opt.load_state_dict(sd)
    msg = str(exc.value)
    assert "1.weight" in msg, msg
    assert re.search(r"2,\s*3", msg) and re.search(r"3,\s*3", msg), msg
    _assert_unchanged(opt, snap)


def test_misshaped_state_dict_before_any_step_leaves_state_empty():
    """Loading fails on a fresh optimizer: no half-loaded state appears."""
    ps = _params()
    src = Adagrad(_clone(ps))
    _train(src, src.param_groups[0]["params"], _grads(ps, 1, 1))
    sd = _bad_state_dict(src, ps)
    opt = Adagrad(ps, lr=0.01)
    snap = _snapshot(opt)
    with pytest.raises(ValueError):
        opt.load_state_dict(sd)
    _assert_unchanged(opt, snap)


def test_complex_sum_for_real_param_is_rejected():
    """A complex sum for a real parameter does not fit: ValueError, nothing changed."""
    ps = _params()
    opt = Adagrad(ps)
    _train(opt, ps, _grads(ps, 1, 1))
    sd = copy.deepcopy(opt.state_dict())
    sd["state"][0]["sum"] = torch.zeros(3, 4, dtype=torch.complex64)
    snap = _snapshot(opt)
    with pytest.raises(ValueError):
        opt.load_state_dict(sd)
    _assert_unchanged(opt, snap)
