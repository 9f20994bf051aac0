"""Dense FTRL-Proximal on CUDA in Triton (issue 13; :ref:`algo-ftrl`, `FtrlRule`), with
the semantics of its torch-ops kernel (`torch_ops`).

One launch per tensor (the member's step path goes one tensor at a time), each element of
θ, g and the state read once and θ and the state written once, in float32, for float32,
bfloat16 and float16 parameters with float32 state (`adagrad.kernels.adagrad.triton.supports`).
"""

from __future__ import annotations

import triton
import triton.language as tl
from torch import Tensor

from adagrad.kernels.engine.rule import FtrlRule
from adagrad.kernels.engine.triton_launch import BLOCK, WARPS, grid


@triton.jit
def _ftrl(param, grad, z_sum, n_sum, size, lr, beta, l1, l2, BLOCK: tl.constexpr):
    offsets = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < size
    theta = tl.load(param + offsets, mask=mask).to(tl.float32)
    g = tl.load(grad + offsets, mask=mask).to(tl.float32)
    n = tl.load(n_sum + offsets, mask=mask)
    new_n = n + g * g
    root = tl.sqrt_rn(new_n)
    sigma = tl.div_rn(root - tl.sqrt_rn(n), lr)
    z = tl.load(z_sum + offsets, mask=mask) + g - sigma * theta
    denom = tl.div_rn(beta + root, lr) + l2
    sign = tl.where(z > 0, 1.0, tl.where(z < 0, -1.0, 0.0))
    # |z| <= l1 gives exact zeros; a NaN z fails the test and stays NaN, as in torch ops
    theta = tl.where(tl.abs(z) <= l1, 0.0, -tl.div_rn(z - sign * l1, denom))
    tl.store(param + offsets, theta.to(param.dtype.element_ty), mask=mask)
    tl.store(z_sum + offsets, z, mask=mask)
    tl.store(n_sum + offsets, new_n, mask=mask)


def dense_ftrl_(param: Tensor, grad: Tensor, z: Tensor, n: Tensor, rule: FtrlRule) -> None:
    """One dense FTRL-Proximal step (:ref:`algo-ftrl`), in place."""
    if param.numel():
        _ftrl[grid(param)](param, grad, z, n, param.numel(), rule.lr, rule.beta, rule.l1,
                           rule.l2, BLOCK=BLOCK, num_warps=WARPS)
