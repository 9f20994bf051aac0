"""Effective step sizes read from an optimizer's state.

The effective learning rate of a coordinate is the factor that multiplies its gradient (or,
for Adam, its bias-corrected first moment) in the update, computed from the state the last
`step()` left behind:

==============  ===========================================================================
Adagrad         ``lr_t / (sqrt(G) + eps)`` (ε outside) or ``lr_t / sqrt(G + eps)`` (ε inside),
                ``lr_t = lr / (1 + (t-1)·lr_decay)`` — exactly the rate of the last step
                (:ref:`algo-adagrad`). Row-wise state (one G per row) is broadcast over the row.
RMSprop         ``lr / (sqrt(v) + eps)`` (centred: ``sqrt(v - m²)``)
Adam(W)         ``lr / (sqrt(v / (1 - β2^t)) + eps)``, per unit of the bias-corrected first
                moment; momentum is left out
Adadelta        ``lr · sqrt(Δ + eps) / sqrt(v + eps)`` (Δ is the running average of squared
                updates after the last step, so this is the rate the next step starts from)
FTRL-Proximal   ``lr / (beta + sqrt(n))`` (McMahan et al. 2013, the per-coordinate rate)
SGD             ``lr`` everywhere
==============  ===========================================================================

A coordinate is *active* once its second-moment state has moved from its initial value, i.e.
it has received a non-zero gradient; medians are taken over active coordinates only, because
an untouched word's "rate" (for example ``lr/ε`` with G = 0) is never used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from adagrad import DoGAdagrad, FullMatrixAdagrad

#: Optimizers whose state this module does not read: a matrix, or a scale kept per group.
NOT_READ = (FullMatrixAdagrad, DoGAdagrad)


@dataclass
class EffectiveLR:
    """Per-coordinate effective learning rates of one parameter and which ones are active."""

    rate: torch.Tensor
    active: torch.Tensor


def adagrad_rate(sum_: torch.Tensor, step: float, lr: float, lr_decay: float = 0.0,
                 eps: float = 1e-10, eps_inside: bool = False) -> torch.Tensor:
    """Adagrad's per-coordinate step size after ``step`` steps with accumulator ``sum_``.

    ``lr_t / (sqrt(G) + eps)`` or, with ``eps_inside``, ``lr_t / sqrt(G + eps)`` where
    ``lr_t = lr / (1 + (step - 1)·lr_decay)``. Where ``G + eps == 0`` with ε inside, the
    update is zero, and so is the rate (:ref:`algo-adagrad`).
    """
    lr_t = lr / (1.0 + max(step - 1.0, 0.0) * lr_decay)
    g = sum_.detach().to(torch.float64)
    if eps_inside:
        den = (g + eps).sqrt()
        return torch.where(den > 0, lr_t / den, torch.zeros_like(den))
    return lr_t / (g.sqrt() + eps)


def rmsprop_rate(square_avg: torch.Tensor, lr: float, eps: float,
                 grad_avg: torch.Tensor | None = None) -> torch.Tensor:
    """RMSprop's step size ``lr / (sqrt(v) + eps)`` (centred when ``grad_avg`` is given)."""
    v = square_avg.detach().to(torch.float64)
    if grad_avg is not None:
        v = v - grad_avg.detach().to(torch.float64) ** 2
    return lr / (v.clamp_min(0).sqrt() + eps)


def adam_rate(exp_avg_sq: torch.Tensor, step: float, lr: float, beta2: float,
              eps: float) -> torch.Tensor:
    """Adam's step size per unit of bias-corrected momentum: ``lr / (sqrt(v/(1-β2^t)) + eps)``."""
    v = exp_avg_sq.detach().to(torch.float64)
    correction = 1.0 - beta2 ** max(step, 1.0)
    return lr / ((v / correction).sqrt() + eps)


def adadelta_rate(square_avg: torch.Tensor, acc_delta: torch.Tensor, lr: float,
                  eps: float) -> torch.Tensor:
    """Adadelta's step size ``lr · sqrt(Δ + eps) / sqrt(v + eps)``."""
    v = square_avg.detach().to(torch.float64)
    d = acc_delta.detach().to(torch.float64)
    return lr * (d + eps).sqrt() / (v + eps).sqrt()


def ftrl_rate(n: torch.Tensor, lr: float, beta: float) -> torch.Tensor:
    """FTRL-Proximal's per-coordinate rate ``lr / (beta + sqrt(n))``."""
    return lr / (beta + n.detach().to(torch.float64).sqrt())


def _scalar(value: object) -> float:
    if isinstance(value, torch.Tensor):
        return float(value.item())
    return float(value)  # type: ignore[arg-type]


def _eps_inside(group: dict) -> bool:
    placement = group.get("eps_placement")
    if placement is None:
        placement = "inside" if group.get("convention") in ("optax", "keras", "founding") else "outside"
    return placement == "inside"


def _broadcast(rate: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if rate.shape == like.shape:
        return rate
    if rate.dim() == 1 and like.dim() >= 1 and rate.shape[0] == like.shape[0]:
        return rate.view(-1, *([1] * (like.dim() - 1))).expand(like.shape)
    if rate.dim() == 0:
        return rate.expand(like.shape)
    raise ValueError(f"state of shape {tuple(rate.shape)} does not match a parameter of "
                     f"shape {tuple(like.shape)}")


def effective_lr(optimizer: torch.optim.Optimizer, param: torch.Tensor) -> EffectiveLR | None:
    """The effective learning rates of ``param`` under ``optimizer`` (float64, ``param``'s shape).

    Returns None when the optimizer kind is not known here (or is one of `NOT_READ`) or
    ``param`` has no state yet
    (SGD has no state and always returns ``lr``).
    """
    group = next((g for g in optimizer.param_groups if any(p is param for p in g["params"])), None)
    if group is None or isinstance(optimizer, NOT_READ):
        return None
    state = optimizer.state.get(param, {})
    lr = _scalar(group["lr"])
    shape_like = param.detach()
    if isinstance(optimizer, torch.optim.SGD):
        rate = torch.full(param.shape, lr, dtype=torch.float64)
        return EffectiveLR(rate, torch.ones(param.shape, dtype=torch.bool))
    if not state:
        return None
    if "sum" in state and "step" in state:
        g = state["sum"]
        initial = group.get("initial_accumulator_value") or 0.0
        rate = adagrad_rate(g, _scalar(state["step"]), lr, _scalar(group.get("lr_decay", 0.0)),
                            _scalar(group.get("eps") if group.get("eps") is not None else 1e-10),
                            _eps_inside(group))
        active = g.detach() != initial
        return EffectiveLR(_broadcast(rate, shape_like), _broadcast(active, shape_like))
    if "exp_avg_sq" in state:
        v = state.get("max_exp_avg_sq", state["exp_avg_sq"]) if group.get("amsgrad") else state["exp_avg_sq"]
        rate = adam_rate(v, _scalar(state["step"]), lr, float(group["betas"][1]), float(group["eps"]))
        return EffectiveLR(rate, state["exp_avg_sq"].detach() > 0)
    if "acc_delta" in state:
        rate = adadelta_rate(state["square_avg"], state["acc_delta"], lr, float(group["eps"]))
        return EffectiveLR(rate, state["square_avg"].detach() > 0)
    if "square_avg" in state:
        grad_avg = state.get("grad_avg") if group.get("centered") else None
        rate = rmsprop_rate(state["square_avg"], lr, float(group["eps"]), grad_avg)
        return EffectiveLR(rate, state["square_avg"].detach() > 0)
    if "n" in state and "z" in state:
        rate = ftrl_rate(state["n"], lr, _scalar(group.get("beta", 1.0)))
        return EffectiveLR(_broadcast(rate, shape_like), _broadcast(state["n"].detach() > 0, shape_like))
    return None


def active_median(eff: list[EffectiveLR]) -> float:
    """The median effective rate over the active coordinates of several parameters (NaN if none)."""
    values = [e.rate[e.active].reshape(-1) for e in eff if bool(e.active.any())]
    if not values:
        return math.nan
    return float(np.median(torch.cat(values).numpy()))
