"""AdaGrad-Norm's update (:ref:`algo-norm`): a reduction, then a scaled copy of g::

    b² ← b² + ||g||² ;  θ ← θ - c·g,   c = lr / (sqrt(b²) + ε)

``||g||²`` is accumulated in float64 on every path: on the CPU by the numba kernel of
`norm_cpu` (float32/float64/bfloat16 gradients; float16 ones through a float32 copy),
elsewhere by ``linalg.vector_norm(g, dtype=float64)`` (`squared_norm_torch`). The update
is one ``addcmul_`` with a 0-d factor on every device (vectorised and multithreaded on the
CPU; a numba pass measured no faster), so a CUDA step never waits on the host. The update
is computed in the accumulator's dtype (float32 for bf16/fp16 parameters) and rounded
once to the parameter's.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from adagrad.kernels.norm import cpu as norm_cpu


def squared_norm_torch(grad: Tensor) -> Tensor:
    """``||grad||²`` as a 0-d float64 tensor on ``grad``'s device, from torch ops."""
    if grad.numel() == 0:
        return torch.zeros((), dtype=torch.float64, device=grad.device)
    return torch.linalg.vector_norm(grad, dtype=torch.float64).square()


def add_squared_norm_(b2: Tensor, grad: Tensor) -> None:
    """``b² ← b² + ||grad||²`` in place (``b2`` 0-d, any device), with ``||grad||²`` in
    float64 on the fastest path that fits."""
    if grad.device.type == "cpu" and grad.dtype == torch.float16:
        grad = grad.float()
    if norm_cpu.supports(grad):
        squared = norm_cpu.squared_norm(grad)
        if b2.device.type == "cpu":  # one rounding of the float64 sum
            b2.fill_(b2.item() + squared)
        else:
            b2.add_(squared)
        return
    b2.add_(squared_norm_torch(grad).to(device=b2.device, dtype=b2.dtype))


def coefficient(b2: Tensor, lr: float, eps: float) -> Tensor:
    """``-lr / (sqrt(b²) + ε)``, the factor of ``g`` in the update, as a 0-d tensor; 0
    where ``sqrt(b²) + ε == 0`` (ε = 0 and every gradient so far 0: the update is 0, not
    0/0)."""
    if b2.device.type == "cpu":  # in float64 from the stored b², one tensor op
        denom = math.sqrt(b2.item()) + eps
        return torch.tensor(-lr / denom if denom > 0 else 0.0, dtype=b2.dtype)
    denom = b2.sqrt() + eps  # on the accumulator's device: no host sync
    return torch.where(denom > 0, -lr / denom, torch.zeros_like(denom))


def descend_(param: Tensor, grad: Tensor, factor: Tensor) -> None:
    """``θ ← θ + factor·g`` in place, computed in ``factor``'s dtype and rounded once to
    ``param``'s (``factor`` is a 0-d tensor, e.g. from `coefficient`)."""
    if param.dtype == factor.dtype:
        param.addcmul_(grad, factor.to(param.device))
    else:  # a half-precision θ: float32 arithmetic, then one rounding
        wide = param.to(factor.dtype).addcmul_(grad, factor.to(param.device))
        param.copy_(wide)


def summed_rows(indices: Tensor, values: Tensor, value_of: Tensor | None, scale: Tensor | None,
                dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """The touched rows of a row gradient and their gradients, duplicates summed in
    ``dtype`` (:ref:`algo-sparse`): ``(rows, grads)``, ``rows`` unique and sorted.

    Position ``k`` adds ``scale[k]·values[value_of[k]]`` to row ``indices[k]`` (the
    layout of `adagrad.optim.base.SparseGrad`; None means the identity, 1).
    """
    if value_of is not None:
        values = values.index_select(0, value_of.long())
    values = values.to(dtype)
    if scale is not None:
        factors = scale.to(dtype).expand(values.shape[0])
        values = values * factors.view((-1,) + (1,) * (values.dim() - 1))
    rows, inverse = torch.unique(indices.long(), return_inverse=True)
    grads = torch.zeros((rows.numel(),) + values.shape[1:], dtype=dtype, device=values.device)
    grads.index_add_(0, inverse, values)
    return rows, grads


def descend_rows_(table: Tensor, rows: Tensor, grads: Tensor, factor: Tensor) -> None:
    """``θ_r ← θ_r + factor·g_r`` for the (unique) ``rows`` of a ``(rows, D)`` table, in
    ``factor``'s dtype, rounded once to the table's."""
    if rows.numel() == 0:
        return
    updated = table.index_select(0, rows).to(factor.dtype)
    updated.addcmul_(grads, factor.to(table.device))
    table.index_copy_(0, rows, updated.to(table.dtype))
