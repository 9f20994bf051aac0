"""An OptimizerInfo for adagrad.Adagrad built from torch's machinery, and the generic checks of
torch's test_optim.py that apply on CPU, written out here (torch does not ship test_optim.py)."""

from __future__ import annotations

import copy
import io
import re

import pytest
import torch
from torch.nn import Parameter
from torch.optim.lr_scheduler import ReduceLROnPlateau
from torch.testing._internal.common_optimizers import (
    ErrorOptimizerInput,
    OptimizerErrorEnum,
    OptimizerInfo,
    OptimizerInput,
    optim_db,
    optim_error_inputs_func_adagrad,
    optim_inputs_func_adagrad,
)

from adagrad import Adagrad, reference

TORCH_INFO = next(i for i in optim_db if i.optim_cls is torch.optim.Adagrad)


def optim_inputs_func_ours(device, dtype=None):
    """torch's Adagrad inputs plus ours: ε placement, decoupled decay, ρ, conventions."""
    extra = [
        OptimizerInput(None, {"eps_placement": "inside"}, "eps inside"),
        OptimizerInput(None, {"eps_placement": "inside", "eps": 0.0,
                              "initial_accumulator_value": 0.1}, "eps inside, zero eps"),
        OptimizerInput(None, {"decoupled_weight_decay": True, "weight_decay": 0.1}, "decoupled wd"),
        OptimizerInput(None, {"accumulator_decay": 0.9}, "accumulator decay"),
        OptimizerInput(None, {"accumulator_decay": 0.5, "lr": 0.1, "lr_decay": 0.1,
                              "weight_decay": 0.1}, "accumulator decay + lr_decay + wd"),
        OptimizerInput(None, {"decoupled_weight_decay": True, "weight_decay": 0.1,
                              "maximize": True, "eps_placement": "inside"}, "decoupled + maximize"),
    ]
    extra += [OptimizerInput(None, {"convention": c}, f"convention={c}")
              for c in ("torch", "optax", "keras", "tensorflow", "fbgemm")]
    extra.append(OptimizerInput(None, {"convention": "keras", "weight_decay": 0.01,
                                       "lr": 0.1}, "keras + wd"))
    return optim_inputs_func_adagrad(device, dtype) + extra


def optim_error_inputs_func_ours(device, dtype):
    """torch's Adagrad error inputs plus ours (ValueErrors naming argument and value)."""
    sample = Parameter(torch.randn(1, 1, device=device, dtype=dtype))

    def bad(kwargs, regex, error_type=ValueError, params=None):
        return ErrorOptimizerInput(OptimizerInput(params, kwargs, f"bad {kwargs}"),
                                   error_type=error_type, error_regex=regex)

    return optim_error_inputs_func_adagrad(device, dtype) + [
        bad({"lr": -0.1}, r"Invalid learning rate.*-0\.1"),
        bad({"eps": -1e-3}, r"Invalid epsilon value.*-0\.001"),
        bad({"weight_decay": -0.2}, r"Invalid weight_decay value.*-0\.2"),
        bad({"initial_accumulator_value": -0.3}, r"Invalid initial_accumulator_value value.*-0\.3"),
        bad({"eps_placement": "sideways"}, r"eps_placement.*sideways"),
        bad({"convention": "jax"}, r"convention.*jax"),
        bad({"accumulator_decay": 0.0}, r"accumulator_decay.*0\.0"),
        bad({"accumulator_decay": 1.01}, r"accumulator_decay.*1\.01"),
        bad({"foreach": True, "fused": True}, "`fused` and `foreach` cannot be `True` together",
            RuntimeError, [sample]),
    ]


ADAGRAD_INFO = OptimizerInfo(
    Adagrad,
    optim_inputs_func=optim_inputs_func_ours,
    optim_error_inputs_func=optim_error_inputs_func_ours,
    supported_impls=("foreach", "differentiable", "fused"),
    not_og_supported_flags=TORCH_INFO.not_og_supported_flags,
    supports_fused_on=("cpu", "cuda"),
    supports_sparse=True,
    metadata_for_sparse=TORCH_INFO.metadata_for_sparse,
    decorators=TORCH_INFO.decorators,
)

INPUTS = ADAGRAD_INFO.optim_inputs_func("cpu")
ERROR_INPUTS = ADAGRAD_INFO.optim_error_inputs_func("cpu", torch.float32)
SCHEDULERS = [[]] + [list(s) for s in ADAGRAD_INFO.scheduler_inputs]


def _kw(inp, **extra):
    return dict(copy.deepcopy(inp.kwargs), **extra)


def test_info_covers_torch_inputs():
    """Every input torch's own Adagrad info lists is in ours."""
    ours = [i.desc for i in INPUTS]
    for inp in TORCH_INFO.optim_inputs_func("cpu"):
        assert inp.desc in ours
    assert ADAGRAD_INFO.name == "Adagrad"


# ------------------------------------------------------------------- error inputs


@pytest.mark.parametrize("err", ERROR_INPUTS, ids=lambda e: e.optimizer_error_input.desc)
def test_error_inputs(err):
    inp = err.optimizer_error_input
    params = inp.params if inp.params is not None else [Parameter(torch.randn(1, 1))]
    if issubclass(err.error_type, Warning):
        with pytest.warns(err.error_type, match=err.error_regex):
            Adagrad(params, **inp.kwargs)
        return
    if err.error_on == OptimizerErrorEnum.CONSTRUCTION_ERROR:
        with pytest.raises(err.error_type, match=err.error_regex):
            Adagrad(params, **inp.kwargs)
    else:
        opt = Adagrad(params, **inp.kwargs)
        with pytest.raises(err.error_type, match=err.error_regex):
            opt.step()


# ------------------------------------------------------------------- training goes the right way


@pytest.mark.parametrize("sched_i", range(len(SCHEDULERS)), ids=lambda i: f"sched{i}")
@pytest.mark.parametrize("inp", INPUTS, ids=lambda i: i.desc)
@pytest.mark.parametrize("dtype", [torch.float32, torch.complex64], ids=str)
def test_forloop_goes_right_direction(inp, sched_i, dtype):
    """torch's check: 20 steps on (W x + b)² lower the loss (raise it with maximize)."""
    torch.manual_seed(0)
    weight = Parameter(torch.randn(10, 5, dtype=dtype))
    bias = Parameter(torch.randn(10, dtype=dtype))
    x = torch.randn(5, dtype=dtype)
    opt = Adagrad([weight, bias], **_kw(inp))
    scheds = [s(opt) for s in SCHEDULERS[sched_i]]

    def closure():
        opt.zero_grad()
        loss = (weight.mv(x) + bias).abs().pow(2).sum()
        loss.backward()
        return loss

    initial = closure().item()
    for _ in range(20):
        loss = opt.step(closure)
        for s in scheds:
            s.step(loss) if isinstance(s, ReduceLROnPlateau) else s.step()
    final = closure().item()
    if inp.kwargs.get("maximize", False):
        assert final > initial
    else:
        assert final < initial


@pytest.mark.parametrize("inp", INPUTS, ids=lambda i: i.desc)
def test_param_groups_with_different_lr(inp):
    """Two groups (bias with its own lr and weight decay): the loss still goes the right way."""
    torch.manual_seed(0)
    weight, bias = Parameter(torch.randn(10, 5)), Parameter(torch.randn(10))
    x = torch.randn(5)
    kw = _kw(inp)
    opt = Adagrad([{"params": [weight]}, {"params": [bias], "lr": 0.05, "weight_decay": 0.0}], **kw)

    def closure():
        opt.zero_grad()
        loss = (weight.mv(x) + bias).pow(2).sum()
        loss.backward()
        return loss

    initial = closure().item()
    for _ in range(20):
        opt.step(closure)
    final = closure().item()
    assert final > initial if kw.get("maximize", False) else final < initial
    assert opt.param_groups[1]["lr"] == 0.05


@pytest.mark.parametrize("inp", INPUTS, ids=lambda i: i.desc)
def test_complex_equals_real_view(inp):
    """A complex parameter is optimized as its view_as_real (torch's test_complex_2d)."""
    torch.manual_seed(0)
    c = Parameter(torch.randn(4, 3, dtype=torch.complex64))
    r = Parameter(torch.view_as_real(c.detach()).clone())
    opt_c, opt_r = Adagrad([c], **_kw(inp)), Adagrad([r], **_kw(inp))
    for _ in range(10):
        g = torch.randn(4, 3, dtype=torch.complex64)
        c.grad, r.grad = g.clone(), torch.view_as_real(g).clone()
        opt_c.step()
        opt_r.step()
    torch.testing.assert_close(torch.view_as_real(c.detach()), r.detach(), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(torch.view_as_real(opt_c.state[c]["sum"]), opt_r.state[r]["sum"],
                               rtol=1e-6, atol=1e-7)


# ------------------------------------------------------------------- no-op steps


@pytest.mark.parametrize("inp", INPUTS, ids=lambda i: i.desc)
def test_step_is_noop_when_params_have_no_grad(inp):
    params = [torch.randn(2, 3, requires_grad=True) for _ in range(2)]
    old = [p.detach().clone() for p in params]
    opt = Adagrad(params, **_kw(inp))
    opt.step(lambda: torch.tensor(1.0))
    for p, q in zip(params, old):
        torch.testing.assert_close(p.detach(), q, rtol=0, atol=0)


@pytest.mark.parametrize("inp", INPUTS, ids=lambda i: i.desc)
def test_step_is_noop_for_zero_grads(inp):
    """Zero gradients leave parameters alone unless weight decay is on, like torch."""
    if inp.kwargs.get("weight_decay", 0) != 0:
        pytest.skip("weight decay moves parameters even with zero gradients")
    params = [torch.randn(2, 3, requires_grad=True) for _ in range(2)]
    old = [p.detach().clone() for p in params]
    opt = Adagrad(params, **_kw(inp))

    def closure():
        opt.zero_grad()
        for p in params:
            p.grad = torch.zeros_like(p)
        return torch.tensor(1.0)

    opt.step(closure)
    for p, q in zip(params, old):
        torch.testing.assert_close(p.detach(), q, rtol=0, atol=0)
    assert all(not torch.isnan(opt.state[p]["sum"]).any() for p in params)


def test_zero_grad_sets_grads_to_none_like_torch():
    p = torch.randn(3, requires_grad=True)
    opt = Adagrad([p])
    p.grad = torch.ones(3)
    opt.zero_grad()
    assert p.grad is None
    p.grad = torch.ones(3)
    opt.zero_grad(set_to_none=False)
    torch.testing.assert_close(p.grad, torch.zeros(3))


@pytest.mark.parametrize("inp", INPUTS, ids=lambda i: i.desc)
def test_non_empty_state_after_step(inp):
    params = [torch.randn(2, 3, requires_grad=True), torch.randn(0, requires_grad=True)]
    opt = Adagrad(params, **_kw(inp))
    for p in params:
        p.grad = torch.rand_like(p)
    opt.step()
    for p in params:
        assert {"step", "sum"} <= set(opt.state[p])
        assert opt.state[p]["sum"].shape == p.shape


# ------------------------------------------------------------------- state_dict machinery


def _train(opt, params, steps, seed):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, dtype=p.dtype, generator=gen)
        opt.step()


@pytest.mark.parametrize("inp", INPUTS, ids=lambda i: i.desc)
def test_state_dict_round_trip_then_training_equals_uninterrupted(inp):
    torch.manual_seed(0)
    params = [torch.randn(3, 2, requires_grad=True), torch.randn(4, requires_grad=True)]
    opt = Adagrad(params, **_kw(inp))
    _train(opt, params, 3, 1)
    sd = copy.deepcopy(opt.state_dict())
    params2 = [p.detach().clone().requires_grad_() for p in params]
    opt2 = Adagrad(params2, **_kw(inp))
    opt2.load_state_dict(sd)
    _train(opt, params, 3, 2)
    _train(opt2, params2, 3, 2)
    for a, b in zip(params, params2):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        torch.testing.assert_close(opt.state[a]["sum"], opt2.state[b]["sum"], rtol=0, atol=0)


@pytest.mark.parametrize("inp", INPUTS, ids=lambda i: i.desc)
def test_save_load_with_weights_only(inp):
    """The state_dict survives torch.save / torch.load(weights_only=True)."""
    params = [torch.randn(3, 2, requires_grad=True)]
    opt = Adagrad(params, **_kw(inp))
    _train(opt, params, 2, 1)
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    sd = torch.load(buf, weights_only=True)
    opt2 = Adagrad([params[0].detach().clone().requires_grad_()], **_kw(inp))
    opt2.load_state_dict(sd)
    torch.testing.assert_close(opt2.state_dict()["state"][0]["sum"], opt.state_dict()["state"][0]["sum"])


@pytest.mark.parametrize("inp", INPUTS, ids=lambda i: i.desc)
def test_can_load_older_state_dict(inp):
    """A checkpoint from before the newer flags existed (foreach, fused, maximize, ...) loads."""
    params = [torch.randn(3, 2, requires_grad=True)]
    kw = _kw(inp)
    kw.pop("maximize", None)
    opt = Adagrad(params, **kw)
    _train(opt, params, 2, 1)
    sd = copy.deepcopy(opt.state_dict())
    for group in sd["param_groups"]:
        for flag in ADAGRAD_INFO.not_og_supported_flags:
            group.pop(flag, None)
    params2 = [params[0].detach().clone().requires_grad_()]
    opt2 = Adagrad(params2, **kw)
    opt2.load_state_dict(sd)
    _train(opt, params, 2, 2)
    _train(opt2, params2, 2, 2)
    torch.testing.assert_close(params2[0], params[0], rtol=0, atol=0)


DEEPCOPY_CASES = [
    pytest.param(dict(lr=0.1, eps_placement="inside"), None, id="eps-inside"),
    pytest.param(dict(lr=0.1, lr_decay=0.1, weight_decay=0.05, initial_accumulator_value=0.2),
                 dict(lr=0.1, lr_decay=0.1, weight_decay=0.05, initial_accumulator_value=0.2),
                 id="torch-options"),
]


@pytest.mark.parametrize("kwargs,torch_kwargs", DEEPCOPY_CASES)
def test_deepcopy_copies_all_public_attrs(kwargs, torch_kwargs):
    """A deepcopy is an independent optimizer: same defaults and groups, its own parameters
    and state (no storage shared); stepping it leaves the original untouched, and both
    then continue exactly as an optimizer that never was copied, which equals the float64
    reference (and torch.optim.Adagrad where it has the options)."""
    gen = torch.Generator().manual_seed(3)
    p0 = torch.randn(3, 2, dtype=torch.float64, generator=gen)
    grads = [torch.randn(3, 2, dtype=torch.float64, generator=gen) for _ in range(5)]

    def feed(opt, param, gs):
        for g in gs:
            param.grad = g.clone()
            opt.step()

    param = p0.clone().requires_grad_(True)
    opt = Adagrad([param], **kwargs)
    feed(opt, param, grads[:2])
    opt2 = copy.deepcopy(opt)
    assert type(opt2.defaults) is type(opt.defaults) and opt2.defaults == opt.defaults
    assert type(opt2.param_groups) is type(opt.param_groups)
    (param2,) = opt2.param_groups[0]["params"]
    assert param2 is not param and param2.data_ptr() != param.data_ptr()
    assert torch.equal(param2, param)
    assert {k: v for k, v in opt2.param_groups[0].items() if k != "params"} == \
        {k: v for k, v in opt.param_groups[0].items() if k != "params"}
    state, state2 = opt.state[param], opt2.state[param2]
    assert set(state2) == set(state)
    for key, value in state.items():
        assert state2[key].data_ptr() != value.data_ptr(), f"state {key!r} is shared"
        assert torch.equal(state2[key], value), key

    # Stepping the copy does not touch the original.
    before = param.detach().clone(), {k: v.clone() for k, v in state.items()}
    feed(opt2, param2, grads[2:])
    assert torch.equal(param.detach(), before[0])
    for key, value in state.items():
        assert torch.equal(value, before[1][key]), key
    assert not torch.equal(param2.detach(), param.detach())

    # Both continue as an uncopied run; that run is the reference's (and torch's).
    feed(opt, param, grads[2:])
    fresh = p0.clone().requires_grad_(True)
    fresh_opt = Adagrad([fresh], **kwargs)
    feed(fresh_opt, fresh, grads)
    for ours, ours_opt in ((param, opt), (param2, opt2)):
        assert torch.equal(ours.detach(), fresh.detach())
        assert torch.equal(ours_opt.state[ours]["sum"], fresh_opt.state[fresh]["sum"])
        assert float(ours_opt.state[ours]["step"]) == 5
    hp = {k: v for k, v in kwargs.items() if k != "initial_accumulator_value"}
    theta = p0.numpy().copy()
    ref_state = reference.adagrad_init(theta, kwargs.get("initial_accumulator_value", 0.0))
    for g in grads:
        theta, ref_state = reference.adagrad(theta, g.numpy(), ref_state, **hp)
    torch.testing.assert_close(param.detach(), torch.from_numpy(theta), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(opt.state[param]["sum"], torch.from_numpy(ref_state["sum"]),
                               rtol=1e-12, atol=1e-14)
    if torch_kwargs is not None:
        theirs = p0.clone().requires_grad_(True)
        their_opt = torch.optim.Adagrad([theirs], **torch_kwargs)
        feed(their_opt, theirs, grads)
        torch.testing.assert_close(param.detach(), theirs.detach(), rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(opt.state[param]["sum"], their_opt.state[theirs]["sum"],
                                   rtol=1e-12, atol=1e-14)


def test_optimizer_can_be_printed():
    opt = Adagrad([torch.randn(2, requires_grad=True)], eps_placement="inside")
    text = repr(opt)
    assert text.startswith("Adagrad (")
    for key in ("lr", "eps", "eps_placement", "initial_accumulator_value"):
        assert re.search(rf"\b{key}\b", text)


def test_add_param_group_gets_resolved_defaults():
    a, b = torch.randn(2, requires_grad=True), torch.randn(3, requires_grad=True)
    opt = Adagrad([a], convention="optax")
    opt.add_param_group({"params": [b], "initial_accumulator_value": 0.3})
    g = opt.param_groups[1]
    assert g["eps_placement"] == "inside" and g["eps"] == 1e-7
    assert g["initial_accumulator_value"] == 0.3
    b.grad = torch.ones(3)
    opt.step()
    torch.testing.assert_close(opt.state[b]["sum"], torch.full((3,), 1.3))


# ------------------------------------------------------------------- hooks (Optimizer machinery)


def test_step_pre_and_post_hooks_are_called():
    p = torch.randn(2, requires_grad=True)
    opt = Adagrad([p])
    calls = []
    h1 = opt.register_step_pre_hook(lambda o, a, k: calls.append(("pre", o)))
    h2 = opt.register_step_post_hook(lambda o, a, k: calls.append(("post", o)))
    p.grad = torch.ones(2)
    opt.step()
    assert calls == [("pre", opt), ("post", opt)]
    h1.remove()
    h2.remove()
    opt.step()
    assert len(calls) == 2


def test_state_dict_and_load_hooks_are_called():
    p = torch.randn(2, requires_grad=True)
    opt = Adagrad([p])
    p.grad = torch.ones(2)
    opt.step()
    seen = []
    opt.register_state_dict_post_hook(lambda o, sd: seen.append("sd_post") or sd)
    opt.register_load_state_dict_pre_hook(lambda o, sd: seen.append("load_pre") or sd)
    opt.register_load_state_dict_post_hook(lambda o: seen.append("load_post"))
    opt.load_state_dict(opt.state_dict())
    assert seen == ["sd_post", "load_pre", "load_post"]
