"""Dense proximal Adagrad on CUDA in Triton (issue 13; :ref:`algo-proximal`,
`ProximalRule`), with the semantics of its torch-ops kernel (`torch_ops`).

One launch per tensor (the member's step path goes one tensor at a time), each element of
θ, g and the state read once and θ and the state written once, in float32, for float32,
bfloat16 and float16 parameters with float32 state (`adagrad.kernels.adagrad.triton.supports`).
"""

from __future__ import annotations

import triton
import triton.language as tl
from torch import Tensor

from adagrad.kernels.engine.rule import ProximalRule
from adagrad.kernels.engine.triton_launch import BLOCK, WARPS, grid


@triton.jit
def _proximal(param, grad, state_sum, size, lr, l1, l2, eps, MAXIMIZE: tl.constexpr,
              BLOCK: tl.constexpr):
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < size
    theta = tl.load(param + offsets, mask=mask).to(tl.float32)
    g = tl.load(grad + offsets, mask=mask).to(tl.float32)
    if MAXIMIZE:
        g = -g
    state = tl.load(state_sum + offsets, mask=mask) + g * g
    eta = tl.div_rn(lr, tl.sqrt_rn(state) + eps)
    v = theta - eta * g
    shrunk = tl.maximum(tl.abs(v) - eta * l1, 0.0)
    signed = tl.where(v < 0, -shrunk, shrunk)
    tl.store(param + offsets, tl.div_rn(signed, eta * l2 + 1).to(param.dtype.element_ty),
             mask=mask)
    tl.store(state_sum + offsets, state, mask=mask)


def dense_proximal_(param: Tensor, grad: Tensor, state_sum: Tensor, rule: ProximalRule) -> None:
    """One dense proximal Adagrad step (:ref:`algo-proximal`), in place."""
    if param.numel():
        _proximal[grid(param)](param, grad, state_sum, param.numel(), rule.lr, rule.l1,
                               rule.l2, rule.eps, MAXIMIZE=rule.maximize, BLOCK=BLOCK,
                               num_warps=WARPS)
