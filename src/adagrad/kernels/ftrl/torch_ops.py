"""FTRL-Proximal from torch ops: any device, any floating dtype, autograd-friendly.

:ref:`algo-ftrl` (see `FtrlRule`), dense and on the rows of a ``(rows, D)`` table.
Arithmetic runs in the accumulators' dtype (float32 for bf16/fp16 parameters by default);
the new θ is rounded once to the parameter's. The numba kernels of `ftrl_cpu` are held to
the same reference by the tests.
"""

from __future__ import annotations

import torch
from torch import Tensor

from adagrad.kernels.adagrad.torch_ops import summed_rows
from adagrad.kernels.engine.rule import FtrlRule


def _ftrl_values(param: Tensor, grad: Tensor, z: Tensor, n: Tensor,
                 rule: FtrlRule) -> tuple[Tensor, Tensor, Tensor]:
    """:ref:`algo-ftrl` on matching tensors, out of place: the new (θ, z, n), in ``n``'s dtype."""
    grad = grad.to(n.dtype)
    param = param.to(n.dtype)
    new_n = n + grad * grad
    root = new_n.sqrt()
    sigma = (root - n.sqrt()) / rule.lr
    new_z = z + grad - sigma * param
    denom = (rule.beta + root) / rule.lr + rule.l2
    shrunk = new_z - new_z.sign() * rule.l1
    theta = torch.where(new_z.abs() <= rule.l1, 0.0, -shrunk / denom)  # NaN z: NaN θ
    return theta, new_z, new_n


def dense_ftrl_(param: Tensor, grad: Tensor, z: Tensor, n: Tensor, rule: FtrlRule) -> None:
    """One dense FTRL step (:ref:`algo-ftrl`), in place on ``param``, ``z`` and ``n``."""
    theta, new_z, new_n = _ftrl_values(param, grad, z, n, rule)
    z.copy_(new_z)
    n.copy_(new_n)
    param.copy_(theta)


def sparse_ftrl_(param: Tensor, z: Tensor, n: Tensor, indices: Tensor, values: Tensor,
                 rule: FtrlRule, value_of: Tensor | None = None,
                 scale: Tensor | None = None) -> None:
    """One sparse FTRL step on a ``(rows, D)`` table: duplicates summed first
    (:ref:`algo-sparse`), then :ref:`algo-ftrl` on the touched rows; the others keep θ, z and n.

    Position ``k`` adds ``scale[k]·values[value_of[k]]`` to row ``indices[k]`` (as
    `adagrad.kernels.portable.sparse_adagrad_`). Indices must already lie in
    ``[0, rows)``.
    """
    rows, grad = summed_rows(indices, values, value_of, scale, n.dtype)
    theta, new_z, new_n = _ftrl_values(param.index_select(0, rows), grad,
                                       z.index_select(0, rows), n.index_select(0, rows), rule)
    z.index_copy_(0, rows, new_z)
    n.index_copy_(0, rows, new_n)
    param.index_copy_(0, rows, theta.to(param.dtype))
