"""Dense steps of the element-wise family members on CUDA in Triton (issue 13): proximal
Adagrad (:ref:`algo-proximal`, `ProximalRule`), Adagrad with dual averaging
(:ref:`algo-dual-averaging`, `DualAveragingRule`) and FTRL-Proximal (:ref:`algo-ftrl`,
`FtrlRule`), with the semantics of their torch-ops kernels
(`portable_proximal`, `portable_dual_averaging`, `ftrl_portable`).

One launch per tensor (the members' step paths go one tensor at a time), each element of
θ, g and the state read once and θ and the state written once, in float32, for float32,
bfloat16 and float16 parameters with float32 state (`triton_dense.supports`).
"""

from __future__ import annotations

import triton
import triton.language as tl
from torch import Tensor

from adagrad.kernels.engine.rule import DualAveragingRule, FtrlRule, ProximalRule
from adagrad.kernels.adagrad.triton import WARPS

BLOCK = 2048


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


def _grid(param: Tensor) -> tuple[int]:
    return (triton.cdiv(param.numel(), BLOCK),)


def dense_proximal_(param: Tensor, grad: Tensor, state_sum: Tensor, rule: ProximalRule) -> None:
    """One dense proximal Adagrad step (:ref:`algo-proximal`), in place."""
    if param.numel():
        _proximal[_grid(param)](param, grad, state_sum, param.numel(), rule.lr, rule.l1,
                                rule.l2, rule.eps, MAXIMIZE=rule.maximize, BLOCK=BLOCK,
                                num_warps=WARPS)


def dense_dual_averaging_(param: Tensor, grad: Tensor, grad_sum: Tensor, state_sum: Tensor,
                          rule: DualAveragingRule) -> None:
    """One dense dual-averaging step (:ref:`algo-dual-averaging`), in place."""
    if param.numel():
        _dual_averaging[_grid(param)](param, grad, grad_sum, state_sum, param.numel(), rule.lr,
                                      rule.l1 * rule.step, rule.l2 * rule.step * rule.lr,
                                      MAXIMIZE=rule.maximize, BLOCK=BLOCK, num_warps=WARPS)


def dense_ftrl_(param: Tensor, grad: Tensor, z: Tensor, n: Tensor, rule: FtrlRule) -> None:
    """One dense FTRL-Proximal step (:ref:`algo-ftrl`), in place."""
    if param.numel():
        _ftrl[_grid(param)](param, grad, z, n, param.numel(), rule.lr, rule.beta, rule.l1,
                            rule.l2, BLOCK=BLOCK, num_warps=WARPS)
