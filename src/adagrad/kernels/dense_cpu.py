"""Dense Adagrad on the CPU: one parallel numba pass over θ, g and G, no temporaries.

Implements `StepRule` (ALGORITHMS.md §1) for contiguous float32/float64/bfloat16
parameters with a float32 or float64 accumulator. Each element is read once and written
once.
"""

from __future__ import annotations

import numba
import torch
from torch import Tensor

from adagrad.kernels.elementwise import (KERNEL_PARAM_DTYPES, KERNEL_STATE_DTYPES,
                                         adagrad_coordinate, as_numpy, loader_pair,
                                         scalar_type)
from adagrad.kernels.rule import StepRule


@numba.njit(parallel=True, cache=True)
def _dense(param, grad, state_sum, lr, eps, eps_inside, maximize, wd, decoupled, rho, shrink,
           load, store):
    for i in numba.prange(param.size):
        p, s = adagrad_coordinate(load(param[i]), load(grad[i]), state_sum[i], lr, eps,
                                  eps_inside, maximize, wd, decoupled, rho, shrink)
        param[i] = store(p)
        state_sum[i] = s


def supports(param: Tensor, grad: Tensor, state_sum: Tensor) -> bool:
    """Whether this kernel can run the step (CPU, contiguous, a supported dtype pair)."""
    return (param.device.type == "cpu" and grad.device == param.device
            and state_sum.device == param.device
            and param.dtype in KERNEL_PARAM_DTYPES and grad.dtype == param.dtype
            and state_sum.dtype in KERNEL_STATE_DTYPES
            and (param.dtype != torch.bfloat16 or state_sum.dtype == torch.float32)
            and param.is_contiguous() and grad.is_contiguous() and state_sum.is_contiguous())


def dense_adagrad_(param: Tensor, grad: Tensor, state_sum: Tensor, rule: StepRule) -> None:
    """One dense Adagrad step (ALGORITHMS.md §1), in place; see `supports` for the inputs."""
    scalar = scalar_type(state_sum)
    load, store = loader_pair(param.dtype)
    _dense(as_numpy(param).reshape(-1), as_numpy(grad).reshape(-1),
           as_numpy(state_sum).reshape(-1), scalar(rule.lr), scalar(rule.eps),
           rule.eps_inside, rule.maximize, scalar(rule.weight_decay), rule.decoupled,
           scalar(rule.accumulator_decay), scalar(1 - rule.lr * rule.weight_decay),
           load, store)
