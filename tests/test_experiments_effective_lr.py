"""Effective step sizes read from optimizer state, against hand-computed closed forms and
against the update the optimizer actually applied."""

from __future__ import annotations

import math

import pytest
import torch

import adagrad
from adagrad.experiments.effective_lr import (
    active_median,
    adadelta_rate,
    adagrad_rate,
    adam_rate,
    effective_lr,
    rmsprop_rate,
)


def test_adagrad_rate_closed_form():
    g = torch.tensor([4.0, 0.25, 1.0])
    assert adagrad_rate(g, 1, lr=0.1, eps=0.0).tolist() == pytest.approx([0.05, 0.2, 0.1])
    # ε inside the root: lr / sqrt(G + ε)
    assert adagrad_rate(g, 1, lr=0.1, eps=5.0, eps_inside=True).tolist() == pytest.approx(
        [0.1 / 3.0, 0.1 / math.sqrt(5.25), 0.1 / math.sqrt(6.0)])
    # ε outside: lr / (sqrt(G) + ε)
    assert adagrad_rate(g, 1, lr=0.1, eps=1.0).tolist() == pytest.approx([0.1 / 3, 0.1 / 1.5, 0.05])
    # inverse-time decay on the step count: lr_t = lr / (1 + (t-1)·decay) = 0.1 / 2 at t = 3
    assert adagrad_rate(g, 3, lr=0.1, lr_decay=0.5, eps=0.0).tolist() == pytest.approx(
        [0.025, 0.1, 0.05])
    # G + ε == 0 with ε inside: the update is zero, and so is the rate
    assert adagrad_rate(torch.zeros(1), 1, lr=0.1, eps=0.0, eps_inside=True).item() == 0.0


def test_other_rates_closed_form():
    v = torch.tensor([4.0, 0.01])
    assert rmsprop_rate(v, lr=0.01, eps=0.0).tolist() == pytest.approx([0.005, 0.1])
    assert rmsprop_rate(v, lr=0.01, eps=0.0, grad_avg=torch.tensor([0.0, 0.06])).tolist() == \
        pytest.approx([0.005, 0.125])
    # Adam at t = 1: v̂ = v / (1 - β2)
    assert adam_rate(torch.tensor([0.001 * 9.0]), 1, lr=0.3, beta2=0.999, eps=0.0).item() == \
        pytest.approx(0.1)
    assert adadelta_rate(torch.tensor([4.0]), torch.tensor([1.0]), lr=2.0, eps=0.0).item() == \
        pytest.approx(1.0)


def _step(opt: torch.optim.Optimizer, p: torch.Tensor, grad: list[float]) -> torch.Tensor:
    """Apply one step with gradient ``grad``; return the update Δθ."""
    before = p.detach().clone()
    p.grad = torch.tensor(grad)
    opt.step()
    return p.detach() - before


CASES = [
    ("ours, torch convention", adagrad.Adagrad, {}, 0.0),
    ("ours, eps inside", adagrad.Adagrad, {"eps_placement": "inside"}, 0.0),
    ("ours, optax preset", adagrad.Adagrad, {"convention": "optax"}, 0.1),
    ("ours, lr decay", adagrad.Adagrad, {"lr_decay": 0.3}, 0.0),
    ("torch.optim", torch.optim.Adagrad, {}, 0.0),
    ("torch.optim, lr decay", torch.optim.Adagrad, {"lr_decay": 0.3}, 0.0),
]


@pytest.mark.parametrize("name,make,kwargs,g0", CASES, ids=[c[0] for c in CASES])
def test_adagrad_rate_from_state_matches_closed_form_and_update(name, make, kwargs, g0):
    p = torch.nn.Parameter(torch.zeros(3))
    opt = make([p], lr=0.5, **kwargs)
    _step(opt, p, [1.0, 2.0, 0.0])
    delta = _step(opt, p, [3.0, 0.5, 0.0])
    eff = effective_lr(opt, p)
    assert eff is not None
    group = opt.param_groups[0]
    lr_t = 0.5 / (1 + 1 * kwargs.get("lr_decay", 0.0))
    G = torch.tensor([g0 + 1.0 + 9.0, g0 + 4.0 + 0.25], dtype=torch.float64)
    inside = kwargs.get("eps_placement") == "inside" or kwargs.get("convention") == "optax"
    eps = group["eps"]
    expected = lr_t / (G + eps).sqrt() if inside else lr_t / (G.sqrt() + eps)
    assert eff.rate[:2].tolist() == pytest.approx(expected.tolist(), rel=1e-6)
    assert eff.active.tolist() == [True, True, False]
    # the rate is what the step multiplied the gradient by: Δθ = -rate·g
    assert (-delta[:2] / torch.tensor([3.0, 0.5])).tolist() == pytest.approx(
        eff.rate[:2].tolist(), rel=1e-5)


def test_rmsprop_adam_adadelta_rates_match_their_updates():
    g = [0.5, -2.0]
    for make, rel in ((lambda q: torch.optim.RMSprop(q, lr=0.01), 1e-5),
                      (lambda q: torch.optim.Adam(q, lr=0.01), 1e-4)):
        p = torch.nn.Parameter(torch.zeros(2))
        opt = make([p])
        delta = _step(opt, p, g)
        eff = effective_lr(opt, p)
        # RMSprop: Δθ = -rate·g; Adam at t = 1: m̂ = g, so Δθ = -rate·g as well
        assert (-delta / torch.tensor(g)).tolist() == pytest.approx(eff.rate.tolist(), rel=rel)
    p = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.Adadelta([p], lr=1.0, rho=0.9, eps=1e-6)
    _step(opt, p, g)
    st = opt.state[p]
    eff = effective_lr(opt, p)
    expected = ((st["acc_delta"].double() + 1e-6).sqrt() / (st["square_avg"].double() + 1e-6).sqrt())
    assert eff.rate.tolist() == pytest.approx(expected.tolist())


def test_sgd_rate_is_lr_everywhere():
    p = torch.nn.Parameter(torch.zeros(2, 3))
    opt = torch.optim.SGD([p], lr=0.25)
    eff = effective_lr(opt, p)
    assert eff.rate.shape == (2, 3) and bool((eff.rate == 0.25).all()) and bool(eff.active.all())


def test_sparse_embedding_rows_untouched_are_inactive():
    bag = torch.nn.EmbeddingBag(5, 2, mode="sum", sparse=True)
    opt = adagrad.Adagrad(bag.parameters(), lr=0.1)
    assert effective_lr(opt, bag.weight) is None  # no state before the first step
    out = bag(torch.tensor([1, 3, 3]), torch.tensor([0]))
    out.sum().backward()
    opt.step()
    eff = effective_lr(opt, bag.weight)
    assert eff.active[:, 0].tolist() == [False, True, False, True, False]
    # row 1 got gradient 1 per column, row 3 (twice in the bag) got 2: rate = 0.1/|g|
    assert eff.rate[1].tolist() == pytest.approx([0.1, 0.1])
    assert eff.rate[3].tolist() == pytest.approx([0.05, 0.05])
    assert active_median([eff]) == pytest.approx(0.075)


def test_active_median_without_active_coordinates_is_nan():
    from adagrad.experiments.effective_lr import EffectiveLR

    eff = EffectiveLR(torch.ones(3, dtype=torch.float64), torch.zeros(3, dtype=torch.bool))
    assert math.isnan(active_median([eff]))
