"""Which kernel an Adagrad step takes off the CPU, and those steps (issue 13).

Dense tensors on an accelerator (not under ``differentiable``) are batched per device,
dtypes and step count, and each batch takes the first path that fits:

1. `TORCH_FUSED`: torch's own fused kernel (``torch._fused_adagrad_``), where the device
   has one (detected in torch's dispatcher) and the group asks for exactly torch's rule
   (`is_torch_rule`);
2. `TRITON`: the multi-tensor Triton kernel of `triton_dense`, every option, on CUDA
   where Triton is installed and the tensors fit (`triton_takes`);
3. `FOREACH`: torch's foreach ops (`foreach_dense`), everything else.

Sparse row updates on CUDA take `triton_sparse` where Triton is installed and the table
fits, else the torch-ops kernel (`portable`). The family members' dense steps, one tensor
at a time, take `triton_members` (proximal, dual averaging, FTRL) or `triton_dense`
(row-wise Adagrad's 1-D tensors) in the same cases (`member_kernel`).

No path reads a device tensor on the host: step counts are host tensors (as in
torch.optim), and a learning rate given as a device tensor stays on the device.

Everything device-dependent goes through `device_type`, `triton_available` and
`has_torch_fused`, so that the tests can run every path on the CPU (Triton's
interpreter, torch's fused CPU kernel) by patching them.
"""

from __future__ import annotations

import functools
import importlib.util
from typing import Any

import torch
from torch import Tensor

from adagrad.kernels.engine.rule import AdagradGroupRule

TORCH_FUSED, TRITON, FOREACH = "torch_fused", "triton", "foreach"
_TORCH_FUSED_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
_DISPATCH_KEYS = {"cuda": "CUDA", "cpu": "CPU", "xpu": "XPU", "mps": "MPS"}


def device_type(tensor: Tensor) -> str:
    """The device type the dispatch sees for ``tensor`` (the tests patch this)."""
    return tensor.device.type


@functools.cache
def triton_available() -> bool:
    """Whether Triton can be imported."""
    if importlib.util.find_spec("triton") is None:
        return False
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


@functools.cache
def has_torch_fused(kind: str) -> bool:
    """Whether torch has a fused Adagrad kernel for devices of type ``kind``."""
    key = _DISPATCH_KEYS.get(kind)
    return key is not None and torch._C._dispatch_has_kernel_for_dispatch_key(
        "aten::_fused_adagrad_", key)


def is_torch_rule(param: Tensor, state_sum: Tensor, rule: AdagradGroupRule) -> bool:
    """Whether ``rule`` asks for exactly what torch's fused kernel computes for this
    tensor: ε outside, no ρ, L2 (coupled) weight decay, the accumulator in θ's dtype."""
    return (state_sum.dtype == param.dtype and param.dtype in _TORCH_FUSED_DTYPES
            and not rule.eps_inside and rule.accumulator_decay == 1.0
            and (rule.weight_decay == 0 or not rule.decoupled)
            and not rule.differentiable)


def takes_dense(param: Tensor, rule: AdagradGroupRule) -> bool:
    """Whether this module steps ``param``'s dense gradient: off the CPU, no autograd."""
    return device_type(param) != "cpu" and not rule.differentiable


def dense_path(param: Tensor, grad: Tensor, state_sum: Tensor, rule: AdagradGroupRule) -> str:
    """The path (module docstring) a dense tensor taken by `takes_dense` follows."""
    kind = device_type(param)
    if has_torch_fused(kind) and is_torch_rule(param, state_sum, rule):
        return TORCH_FUSED
    return TRITON if triton_takes(param, grad, state_sum) else FOREACH


def triton_takes(param: Tensor, grad: Tensor, *states: Tensor) -> bool:
    """Whether a dense step of this tensor (with its state tensors) goes to Triton: on
    CUDA, with Triton installed, tensors the kernels take (`triton_dense.supports`)."""
    if device_type(param) != "cuda" or not triton_available():
        return False
    from adagrad.kernels.adagrad import triton as triton_dense
    return triton_dense.supports(param, grad, *states)


def member_kernel(param: Tensor, grad: Tensor, *states: Tensor) -> Any:
    """`triton_members` where a family member's dense step of this tensor goes to Triton,
    else None (the member's own choice of kernel)."""
    if not triton_takes(param, grad, *states):
        return None
    from adagrad.kernels.engine import triton_members
    return triton_members


def sparse_kernel(param: Tensor, state_sum: Tensor, values: Tensor) -> Any:
    """The kernel module for a sparse Adagrad step of a table off the CPU (None on the
    CPU, whose kernels `adagrad.kernels` chooses)."""
    kind = device_type(param)
    if kind == "cpu":
        return None
    if kind == "cuda" and triton_available():
        from adagrad.kernels.adagrad import triton_sparse
        if triton_sparse.supports(param, state_sum, values):
            return triton_sparse
    from adagrad.kernels.adagrad import torch_ops as portable
    return portable


def _learning_rate(lr: float | Tensor, device: torch.device) -> tuple[float, Tensor | None]:
    """``lr`` as the kernels take it: a host float, or a 0-d tensor on ``device`` when it
    is a tensor on an accelerator (it is then never read on the host)."""
    if isinstance(lr, Tensor) and device_type(lr) != "cpu":
        return 1.0, lr.reshape(()).to(device, non_blocking=True)
    return float(lr), None


def dense_adagrad_(entries: list[tuple[Tensor, Tensor, Tensor, Tensor]],
                   rule: AdagradGroupRule) -> None:
    """One dense Adagrad step of ``(param, grad, sum, step)`` entries (steps already
    advanced, host tensors) of a group with ``rule``, batched per path, device, dtypes
    and step count."""
    batches: dict[tuple[Any, ...], list[list[Tensor]]] = {}
    for param, grad, state_sum, step in entries:
        key = (dense_path(param, grad, state_sum, rule), param.device, param.dtype,
               state_sum.dtype, int(step.item()))
        batch = batches.setdefault(key, [[], [], []])
        for tensors, tensor in zip(batch, (param, grad, state_sum)):
            tensors.append(tensor)
    for (path, device, _, _, step), (params, grads, sums) in batches.items():
        lr, lr_tensor = _learning_rate(rule.lr, device)
        if path == TORCH_FUSED:
            _torch_fused(params, grads, sums, rule, step, lr if lr_tensor is None else lr_tensor)
            continue
        if path == TRITON:
            from adagrad.kernels.adagrad import triton as kernel
        else:
            from adagrad.kernels.adagrad import foreach as kernel
        # with a device lr, the rule's lr is the decay factor multiplying it
        kernel.dense_adagrad_(params, grads, sums, rule.at(lr, step), lr_tensor)


def _torch_fused(params: list[Tensor], grads: list[Tensor], sums: list[Tensor],
                 rule: AdagradGroupRule, step: int, lr: float | Tensor) -> None:
    """torch's fused kernel, which reads the step count from the device: one 0-d tensor
    holding it (a fill on the device, no copy) serves the whole batch."""
    on_device = torch.full((), float(step), dtype=torch.float32, device=params[0].device)
    torch._fused_adagrad_(params, grads, sums, [on_device] * len(params), lr=lr,
                          lr_decay=rule.lr_decay, weight_decay=rule.weight_decay,
                          eps=rule.eps, maximize=rule.maximize)
