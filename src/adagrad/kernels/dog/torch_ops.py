"""The learning-rate-free Adagrad's update (:ref:`algo-dog`) from torch ops, any device.

Per coordinate, with the scale ``c = lr·r̄`` of this step (a Python float)::

    g' = ±g + wd·x ;  G ← G + g'² ;  x ← x - c·g' / (sqrt(G) + ε)

Each update also returns what the tensor now adds to the distance of `adagrad.DoGAdagrad`:
``moved = Σ_i sqrt(G_i)·(x_i - x0_i)²`` and ``weight = Σ_i sqrt(G_i)``, accumulated in
float64. A dense step recomputes both over the tensor; a row step returns their change over
the touched rows only (untouched rows did not move, and their G did not change), so that a
sparse step costs the touched rows, not the table. Arithmetic is in the accumulator's dtype
(float32 for bf16/fp16 parameters), rounded once to the parameter's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class DogStep:
    """One step's coefficients: the scale ``lr·r̄``, ε, L2 weight decay, maximize."""

    scale: float
    eps: float
    weight_decay: float = 0.0
    maximize: bool = False


def metric_terms(param: Tensor, state_sum: Tensor, initial: Tensor) -> tuple[float, float]:
    """``(Σ sqrt(G)·(x - x0)², Σ sqrt(G))`` of these coordinates, summed in float64."""
    if param.numel() == 0:
        return 0.0, 0.0
    root = state_sum.sqrt()
    moved = (param.to(state_sum.dtype) - initial).square_().mul_(root)
    return float(moved.sum(dtype=torch.float64)), float(root.sum(dtype=torch.float64))


def _new_values(param: Tensor, grad: Tensor, state_sum: Tensor, rule: DogStep) -> Tensor:
    """G updated in place; returns the new x in the accumulator's dtype. Where
    ``sqrt(G) + ε`` is 0 (then g' = 0 and ε = 0) the update is 0, not 0/0."""
    x = param.to(state_sum.dtype)
    g = grad.to(state_sum.dtype)
    if rule.maximize:
        g = -g
    if rule.weight_decay != 0:
        g = g + rule.weight_decay * x
    state_sum.addcmul_(g, g)
    denom = state_sum.sqrt().add_(rule.eps)
    step = torch.where(denom > 0, g / denom, torch.zeros_like(g))
    return x - rule.scale * step


def dense_dog_adagrad_(param: Tensor, grad: Tensor, state_sum: Tensor, initial: Tensor,
                       rule: DogStep) -> tuple[float, float]:
    """One dense step in place (``param`` real, or a complex one's real view); returns the
    tensor's new ``(moved, weight)`` (`metric_terms`)."""
    param.copy_(_new_values(param, grad, state_sum, rule))
    return metric_terms(param, state_sum, initial)  # of the stored (rounded) x


def sparse_dog_adagrad_(table: Tensor, state_sum: Tensor, initial: Tensor, rows: Tensor,
                        grads: Tensor, rule: DogStep) -> tuple[float, float]:
    """One step of the unique ``rows`` of a ``(rows, D)`` table whose summed gradients are
    ``grads`` (`adagrad.kernels.norm.summed_rows`), in place; ``state_sum`` and ``initial``
    are tables of the same shape. Returns the change of ``(moved, weight)``: the touched
    rows' terms after the step minus before."""
    if rows.numel() == 0:
        return 0.0, 0.0
    x = table.index_select(0, rows)
    G = state_sum.index_select(0, rows)
    x0 = initial.index_select(0, rows)
    moved_before, weight_before = metric_terms(x, G, x0)
    new = _new_values(x, grads, G, rule)
    table.index_copy_(0, rows, new.to(table.dtype))
    state_sum.index_copy_(0, rows, G)
    moved, weight = metric_terms(table.index_select(0, rows), G, x0)
    return moved - moved_before, weight - weight_before
