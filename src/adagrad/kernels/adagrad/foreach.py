"""Dense Adagrad for many tensors from torch's foreach ops: the fallback on accelerators
where neither torch's fused kernel nor Triton applies (issue 13).

Implements `StepRule` (:ref:`algo-adagrad`, every option), arithmetic in the accumulator's
dtype (float32 for bf16/fp16 parameters by default), as `portable.dense_adagrad_` does per
tensor. A learning rate given as a 0-d device tensor is used on the device, never read on
the host.
"""

from __future__ import annotations

import torch
from torch import Tensor

from adagrad.kernels.engine.rule import StepRule


def _in_dtype(tensors: list[Tensor], dtype: torch.dtype) -> list[Tensor]:
    return tensors if tensors[0].dtype == dtype else [t.to(dtype) for t in tensors]


def _denominators(sums: list[Tensor], rule: StepRule) -> list[Tensor]:
    """``sqrt(G) + ε``, or ``sqrt(G + ε)`` with exact zeros raised to the dtype's smallest
    normal: they occur only where g = 0 (G ≥ g²), and the square root of any positive G
    is larger, so only 0/0 is changed (to 0, the reference's rule)."""
    if not rule.eps_inside:
        denominators = torch._foreach_sqrt(sums)
        torch._foreach_add_(denominators, rule.eps)
        return denominators
    denominators = torch._foreach_sqrt(torch._foreach_add(sums, rule.eps))
    torch._foreach_clamp_min_(denominators, torch.finfo(sums[0].dtype).tiny)
    return denominators


def dense_adagrad_(params: list[Tensor], grads: list[Tensor], sums: list[Tensor],
                   rule: StepRule, lr: Tensor | None = None) -> None:
    """One dense Adagrad step of every tensor, in place. The tensors share one device and
    dtypes; the learning rate is ``rule.lr``, or ``lr·rule.lr`` for a 0-d tensor ``lr``
    on their device."""
    if not params:
        return
    lr_t = rule.lr if lr is None else lr * rule.lr
    compute = sums[0].dtype
    theta, g = _in_dtype(params, compute), _in_dtype(grads, compute)
    if rule.maximize:
        g = torch._foreach_neg(g)
    if rule.weight_decay != 0 and rule.decoupled:
        torch._foreach_mul_(theta, 1 - lr_t * rule.weight_decay)
    elif rule.weight_decay != 0:
        g = torch._foreach_add(g, theta, alpha=rule.weight_decay)
    if rule.accumulator_decay != 1.0:
        torch._foreach_mul_(sums, rule.accumulator_decay)
    torch._foreach_addcmul_(sums, g, g)
    steps = torch._foreach_div(g, _denominators(sums, rule))
    torch._foreach_mul_(steps, lr_t)
    torch._foreach_sub_(theta, steps)
    if theta is not params:
        torch._foreach_copy_(params, theta)
