"""Dense Adagrad with dual averaging on CUDA in Triton (issue 13;
:ref:`algo-dual-averaging`, `DualAveragingRule`), with the semantics of its torch-ops
kernel (`torch_ops`).

One launch per tensor (the member's step path goes one tensor at a time), each element of
θ, g and the state read once and θ and the state written once, in float32, for float32,
bfloat16 and float16 parameters with float32 state (`adagrad.kernels.adagrad.triton.supports`).
"""

from __future__ import annotations

import triton
import triton.language as tl
from torch import Tensor

from adagrad.kernels.engine.rule import DualAveragingRule
from adagrad.kernels.engine.triton_launch import BLOCK, WARPS, grid


@triton.jit
def _dual_averaging(param, grad, grad_sum, state_sum, size, lr, l1_t, l2_t_lr,
                    MAXIMIZE: tl.constexpr, BLOCK: tl.constexpr):
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < size
    g = tl.load(grad + offsets, mask=mask).to(tl.float32)
    if MAXIMIZE:
        g = -g
    z = tl.load(grad_sum + offsets, mask=mask) + g
    state = tl.load(state_sum + offsets, mask=mask) + g * g
    shrunk = tl.maximum(tl.abs(z) - l1_t, 0.0)
    signed = tl.where(z < 0, -shrunk, shrunk)
    theta = -tl.div_rn(signed * lr, tl.sqrt_rn(state) + l2_t_lr)
    tl.store(param + offsets, theta.to(param.dtype.element_ty), mask=mask)
    tl.store(grad_sum + offsets, z, mask=mask)
    tl.store(state_sum + offsets, state, mask=mask)


def dense_dual_averaging_(param: Tensor, grad: Tensor, grad_sum: Tensor, state_sum: Tensor,
                          rule: DualAveragingRule) -> None:
    """One dense dual-averaging step (:ref:`algo-dual-averaging`), in place."""
    if param.numel():
        _dual_averaging[grid(param)](param, grad, grad_sum, state_sum, param.numel(), rule.lr,
                                     rule.l1 * rule.step, rule.l2 * rule.step * rule.lr,
                                     MAXIMIZE=rule.maximize, BLOCK=BLOCK, num_warps=WARPS)
