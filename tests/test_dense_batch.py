"""The batched dense kernels (`kernels.adagrad.cpu.dense_adagrad_batch_`), which step all of
a group's CPU tensors in one serial numba call for the small ones and one parallel call
for the large: against the float64 reference
(`adagrad.reference`) and, bit for bit, against the per-tensor kernel
(`kernels.adagrad.cpu.dense_adagrad_`), the two paths that claim the same arithmetic.

The default pass compiles one signature per kernel (float32 parameters, sums and
counters); the other dtypes are in the slow pass.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import to64

import adagrad
from adagrad import reference
from adagrad.kernels import StepRule
from adagrad.kernels.adagrad import cpu as dense_cpu

# serial kernel below 65,536 elements, parallel (cut into BATCH_CHUNK pieces) from there;
# and a 0-d tensor, added by `_tensors`
SIZES = [0, 1, 3, 17, 64, 1000, 4097, 1 << 16, 5 * dense_cpu.BATCH_CHUNK + 5]
OPTIONS = {  # name: (StepRule keywords, adagrad.Adagrad / reference keywords)
    "torch": ({}, {}),
    "eps inside": ({"eps_inside": True}, {"eps_placement": "inside"}),
    "decoupled": ({"weight_decay": 0.05, "decoupled": True},
                  {"weight_decay": 0.05, "decoupled_weight_decay": True}),
    "coupled, maximize": ({"weight_decay": 0.05, "maximize": True},
                          {"weight_decay": 0.05, "maximize": True}),
    "rho": ({"accumulator_decay": 0.9}, {"accumulator_decay": 0.9}),
}
SLOW_DTYPES = [(torch.float64, torch.float64), (torch.float32, torch.float64),
               (torch.float64, torch.float32), (torch.bfloat16, torch.float32)]
PATTERNS = {torch.float32: torch.int32, torch.float64: torch.int64, torch.bfloat16: torch.int16}


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.reshape(-1).view(PATTERNS[t.dtype])


def _real(t: torch.Tensor) -> torch.Tensor:
    t = t.detach()
    return torch.view_as_real(t) if t.is_complex() else t


def _tensors(dtype, sum_dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    shapes = [(n,) for n in SIZES] + [()]
    params = [torch.randn(s, generator=gen).to(dtype) for s in shapes]
    grads = [torch.randn(s, generator=gen).to(dtype) for s in shapes]
    sums = [torch.rand(s, generator=gen).to(sum_dtype) for s in shapes]
    for k in (3, 8):  # exact zeros: the ε-inside guard where G + ε == 0
        grads[k][::2] = 0
        sums[k][::4] = 0
    return params, grads, sums


def _check_batch_against_per_tensor(dtype, sum_dtype, step_dtype, option):
    rule = StepRule(lr=0.1, eps=1e-10 if option != "eps inside" else 1e-7,
                    **OPTIONS[option][0])
    params, grads, sums = _tensors(dtype, sum_dtype, seed=1)
    steps = [torch.tensor(float(k), dtype=step_dtype) for k in range(len(params))]
    theirs = [t.clone() for t in params], [t.clone() for t in sums]
    dense_cpu.dense_adagrad_batch_(params, grads, sums, steps, rule)
    for param, grad, state_sum in zip(*theirs[:1], grads, theirs[1]):
        dense_cpu.dense_adagrad_(param, grad, state_sum, rule)
    for ours, their in zip(params + sums, theirs[0] + theirs[1]):
        assert ours.dtype == their.dtype and ours.shape == their.shape
        assert torch.equal(_bits(ours), _bits(their))
    assert [float(s) for s in steps] == [k + 1.0 for k in range(len(params))]
    assert all(s.dtype == step_dtype for s in steps)


@pytest.mark.parametrize("option", OPTIONS)
def test_batch_is_the_per_tensor_kernel_bit_for_bit(option):
    _check_batch_against_per_tensor(torch.float32, torch.float32, torch.float32, option)


@pytest.mark.slow
@pytest.mark.parametrize("option", OPTIONS)
@pytest.mark.parametrize("dtypes", SLOW_DTYPES, ids=str)
@pytest.mark.parametrize("step_dtype", [torch.float32, torch.float64], ids=str)
def test_batch_is_the_per_tensor_kernel_bit_for_bit_every_dtype(dtypes, step_dtype, option):
    _check_batch_against_per_tensor(*dtypes, step_dtype, option)


@pytest.mark.parametrize("option", OPTIONS)
def test_batch_matches_the_float64_reference(option):
    """float32 tensors of every size against one exact step of `reference.adagrad`."""
    kwargs = {"lr": 0.1, "eps": 1e-10 if option != "eps inside" else 1e-7,
              **OPTIONS[option][1]}
    rule_kw = OPTIONS[option][0]
    params, grads, sums = _tensors(torch.float32, torch.float32, seed=2)
    before = [(to64(p), to64(g), to64(s)) for p, g, s in zip(params, grads, sums)]
    step = 3  # the counter before the step; the rule is step 4's, lr already decayed
    lr_t = reference.lr_at(0.1, 0.5, step + 1)
    rule = StepRule(lr=lr_t, eps=kwargs["eps"], **rule_kw)
    counters = [torch.tensor(float(step)) for _ in params]
    dense_cpu.dense_adagrad_batch_(params, grads, sums, counters, rule)
    for param, state_sum, (theta, g, G) in zip(params, sums, before):
        theta_star, state = reference.adagrad(theta, g, {"step": step, "sum": G},
                                              lr_decay=0.5, **kwargs)
        np.testing.assert_allclose(to64(state_sum), state["sum"], rtol=4e-7, atol=0)
        np.testing.assert_allclose(to64(param), theta_star, rtol=2e-6, atol=1e-7)
        assert state["step"] == step + 1
    assert all(float(c) == step + 1 for c in counters)


def _small_model(seed: int, dtype=torch.float32) -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(seed)
    shapes = [(0,), (), (1,), (5, 3), (64,), (2, 0, 4), (1000,), (4,), (300, 300)]
    return [torch.nn.Parameter(torch.randn(s, generator=gen).to(dtype)) for s in shapes]


def _grads(params, gen, skip=()):
    return [None if k in skip else torch.randn(p.shape, generator=gen).to(p.dtype)
            for k, p in enumerate(params)]


@pytest.mark.parametrize("option", OPTIONS)
def test_optimizer_batched_equals_per_tensor_with_mixed_steps(option, monkeypatch):
    """`adagrad.Adagrad` on small tensors of mixed sizes (empty, 0-d, complex) whose step
    counts differ (some skip steps): the batched path and the per-tensor path it replaced
    (batching refused) give the same parameters, sums and counters, bit for bit, and the
    batched path's run stays within float32 rounding of the float64 reference."""
    kwargs = {"lr": 0.1, "lr_decay": 0.1, **OPTIONS[option][1]}
    params = {name: _small_model(0) + [torch.nn.Parameter(torch.randn(3, 2,
                                                                      dtype=torch.complex64))]
              for name in ("batched", "per tensor")}
    for name in params:
        with torch.no_grad():
            for p, q in zip(params[name], params["batched"]):
                p.copy_(q)
    optimizers = {name: adagrad.Adagrad(ps, **kwargs) for name, ps in params.items()}
    exact = [to64(p) for p in params["batched"]]
    exact_state = [reference.adagrad_init(t, 0.0) for t in exact]
    calls = []
    batch_ = dense_cpu.dense_adagrad_batch_
    monkeypatch.setattr(dense_cpu, "dense_adagrad_batch_",
                        lambda *a: calls.append(len(a[0])) or batch_(*a))
    for t in range(5):
        gen = torch.Generator().manual_seed(100 + t)
        grads = _grads(params["batched"], gen, skip={1, 4} if t % 2 else ())
        for name in ("batched", "per tensor"):
            with monkeypatch.context() as patch:
                if name == "per tensor":
                    patch.setattr(dense_cpu, "batch_supports", lambda *a: False)
                for p, g in zip(params[name], grads):
                    p.grad = None if g is None else g.clone()
                optimizers[name].step()
        for k, g in enumerate(grads):
            if g is not None:
                exact[k], exact_state[k] = reference.adagrad(exact[k], to64(g), exact_state[k],
                                                             **kwargs)
    # the batched path ran, all at once, but for the (300, 300) tensor under torch's own
    # rule (ε outside, ρ = 1, no or coupled decay): torch's fused kernel takes that one
    handed_to_torch = option in ("torch", "coupled, maximize")
    assert calls and max(calls) == len(params["batched"]) - handed_to_torch
    assert 2 in calls  # and once per step count when the counters differ (the skipped two)
    for ours, theirs in zip(params["batched"], params["per tensor"]):
        state = optimizers["batched"].state[ours]
        their_state = optimizers["per tensor"].state[theirs]
        assert torch.equal(_bits(_real(ours)), _bits(_real(theirs)))
        assert torch.equal(state["sum"], their_state["sum"])
        assert torch.equal(state["step"], their_state["step"])
        assert state["step"].dtype == torch.float32 and state["step"].dim() == 0
    for param, theta, st in zip(params["batched"], exact, exact_state):
        np.testing.assert_allclose(to64(param), theta, rtol=1e-5, atol=1e-6)
        assert float(optimizers["batched"].state[param]["step"]) == st["step"]


def test_refused_gradient_changes_nothing():
    """A gradient that cannot be applied (a sparse one naming a row outside its table)
    raises before the batched kernel runs on the others: parameters, sums and counters
    stay as they were."""
    params = _small_model(1)
    opt = adagrad.Adagrad(params, lr=0.1, eps_placement="inside")
    gen = torch.Generator().manual_seed(7)
    for p, g in zip(params, _grads(params, gen)):
        p.grad = g
    opt.step()
    before = ([p.detach().clone() for p in params],
              [opt.state[p]["sum"].clone() for p in params],
              [opt.state[p]["step"].clone() for p in params])
    for p, g in zip(params, _grads(params, gen)):
        p.grad = g
    # the (5, 3) parameter's sparse gradient names row 7
    params[3].grad = torch.sparse_coo_tensor(torch.tensor([[1, 7]]), torch.ones(2, 3), (5, 3),
                                             check_invariants=False)
    with pytest.raises(IndexError, match="index 7 is out of range for a table of 5 rows"):
        opt.step()
    for p, theta, G, step in zip(params, *before):
        assert torch.equal(p.detach(), theta)
        assert torch.equal(opt.state[p]["sum"], G)
        assert torch.equal(opt.state[p]["step"], step)


def test_batch_supports_only_what_it_can_reach():
    """Non-contiguous, fp16, bf16 with a float64 sum, an integer or a several-element
    counter: refused (they keep the per-tensor paths); any size is taken."""
    p = torch.zeros(10)
    step = torch.tensor(0.0)
    assert dense_cpu.batch_supports(p, p, p, step)
    large = torch.zeros(1 << 16)
    assert dense_cpu.batch_supports(large, large, large, step.double())
    wide = torch.zeros(4, 4).t()
    assert not dense_cpu.batch_supports(wide, wide, wide, step)
    half = torch.zeros(10, dtype=torch.float16)
    assert not dense_cpu.batch_supports(half, half, p, step)
    bf16 = torch.zeros(10, dtype=torch.bfloat16)
    assert dense_cpu.batch_supports(bf16, bf16, p, step)
    assert not dense_cpu.batch_supports(bf16, bf16, p.double(), step)
    assert not dense_cpu.batch_supports(p, p, p, torch.tensor(0))
    assert not dense_cpu.batch_supports(p, p, p, torch.zeros(2))
