"""`FullMatrixAdagrad`: Adagrad with the full (or block-diagonal) matrix of outer products
(:ref:`algo-full-matrix`)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from torch.optim.optimizer import ParamsT

from adagrad.kernels.full_matrix import torch_ops as blocks_ops
from adagrad.kernels.full_matrix.torch_ops import BlockLayout
from adagrad.optim import checkpoint
from adagrad.optim.base import AdagradFamily, SparseGrad
from adagrad.optim.validation import check_non_negative, check_positive, check_positive_int

MAX_UNBLOCKED = 4096
"""The most real coordinates a parameter may have without ``block_size`` (its ``S`` is
d×d float64: 128 MiB at 4096)."""


def _check_hyperparameters(group: dict[str, Any]) -> None:
    check_non_negative("lr", group["lr"])
    check_positive("eps", group["eps"])
    check_positive_int("block_size", group["block_size"], allow_none=True)
    check_positive_int("precondition_every", group["precondition_every"])
    if group["block_size"] is not None:
        return
    for param in group.get("params", ()):
        numel = _real_numel(param)
        if numel > MAX_UNBLOCKED:
            gib = numel * numel * 8 / 2 ** 30
            raise ValueError(
                f"FullMatrixAdagrad: a parameter of shape {tuple(param.shape)} has {numel} "
                f"real coordinates (more than {MAX_UNBLOCKED}): its full matrix would be "
                f"{numel}×{numel} float64 ({gib:.1f} GiB). Set block_size (argument "
                f"`block_size`, e.g. block_size=1024) to precondition blocks of that many "
                f"consecutive coordinates")


class FullMatrixAdagrad(AdagradFamily):
    r"""Full-matrix Adagrad (Duchi, Hazan, Singer, JMLR 2011, the update with the full
    matrix ``G_t = Σ g·gᵀ``), optionally block-diagonal over consecutive coordinates.

    Each parameter is flattened to its d real coordinates (a complex one to 2·numel), or
    cut into blocks of ``block_size`` consecutive coordinates, and each block
    ``g_i`` of the gradient is preconditioned by its own matrix (:ref:`algo-full-matrix`)::

        S ← S + g·gᵀ
        H = δ·I + S^{1/2}            S^{1/2} by symmetric eigendecomposition, float64
        θ ← θ - lr · H⁻¹·g

    With ``precondition_every=k``, ``H⁻¹`` is computed at steps 1, k+1, 2k+1, … (from
    ``S`` after that step's ``g·gᵀ``) and reused in between; ``S`` takes every gradient.

    Blocks never span two parameters. When ``block_size`` does not divide d, the last
    block holds the ``d mod block_size`` coordinates left over and is preconditioned as
    that smaller block (stored zero-padded to ``block_size``², which is exact; see
    `adagrad.kernels.full_matrix`). A ``block_size`` above d means one block of d.

    For small, ill-conditioned problems: the cost is an eigendecomposition of every
    block (O(d·block_size²) a step) and ``S`` takes ``8·block_size`` bytes per
    coordinate (``8·d`` without blocks), twice that with ``precondition_every`` > 1.
    Sparse gradients are refused (the update of one row moves every coordinate of its
    block): a RuntimeError at the first step.

    Args:
      params: parameters or parameter groups; every keyword below may be set per group.
      lr: the learning rate η (float or 1-element tensor). Default 1e-2.
      eps: δ, added to the diagonal of ``S^{1/2}`` so that ``H`` is invertible; > 0.
        Default 1e-6.
      block_size: coordinates per block (an int ≥ 1), or None for one block per
        parameter; a parameter of more than 4096 real coordinates needs one. Default None.
      precondition_every: recompute ``H⁻¹`` every this many steps (an int ≥ 1).
        Default 1.

    State per parameter: ``step``; ``sum``, the stacked ``S`` of its blocks,
    ``(blocks, size, size)`` float64 whatever the parameter's dtype (the small
    eigenvalues of ``S`` are what the method is for, and float32 loses them); with
    ``precondition_every`` > 1 also ``h_inverse``, the ``H⁻¹`` in use, same shape, so a
    run resumed mid-interval is exact (a checkpoint without it recomputes ``H⁻¹`` at its
    next step).

    Example:
        >>> import torch, adagrad
        >>> w = torch.nn.Parameter(torch.zeros(3))
        >>> optimizer = adagrad.FullMatrixAdagrad([w], lr=0.1)
        >>> w.grad = torch.tensor([1.0, 0.0, -1.0])
        >>> optimizer.step()
        >>> w.shape, bool(w[0] < 0 < w[2])
        (torch.Size([3]), True)
    """

    _accumulators = ()
    _float64_state = ("sum", "h_inverse")
    _checkpoint_group_keys = ("lr", "eps", "block_size", "precondition_every")
    _shardable = False  # a block spans rows of several shards

    def __init__(self, params: ParamsT, lr: float | Tensor = 1e-2, eps: float = 1e-6,
                 block_size: int | None = None, precondition_every: int = 1) -> None:
        # `differentiable` is no argument: torch.optim's step decorator reads it.
        defaults = dict(lr=lr, eps=eps, block_size=block_size,
                        precondition_every=precondition_every, differentiable=False)
        _check_hyperparameters(defaults)
        super().__init__(params, defaults)

    # -- state ----------------------------------------------------------------------

    def _init_state(self, param: Tensor, group: dict[str, Any]) -> dict[str, Tensor]:
        shape = _layout(param, group["block_size"]).shape
        return {"step": self._new_step(),
                "sum": torch.zeros(shape, dtype=torch.float64, device=param.device)}

    def _state_shapes(self, param: Tensor) -> dict[str, tuple[int, ...]]:
        # ``sum``'s shape depends on the group's block size and its entries may be
        # negative: it is checked by `_check_saved_state`, not as an accumulator.
        return {}

    # -- stepping -------------------------------------------------------------------

    def _check_grad(self, param: Tensor, group: dict[str, Any]) -> None:
        if param.grad.is_sparse:
            self._refuse_sparse()
        super()._check_grad(param, group)

    def _check_sparse(self, sparse: SparseGrad, group: dict[str, Any]) -> None:
        self._refuse_sparse()

    @staticmethod
    def _refuse_sparse() -> None:
        raise RuntimeError("FullMatrixAdagrad does not support sparse gradients: the update "
                           "of one row moves every coordinate of its block (use "
                           "adagrad.Adagrad or AdagradNorm for embedding tables)")

    def _step_dense_one(self, param: Tensor, grad: Tensor, state: dict[str, Tensor],
                        group: dict[str, Any]) -> None:
        blocks = _layout(param, group["block_size"])
        outer_sum = state["sum"]
        if tuple(outer_sum.shape) != blocks.shape:
            raise RuntimeError(f"FullMatrixAdagrad: the state 'sum' of the parameter of shape "
                               f"{tuple(param.shape)} has shape {tuple(outer_sum.shape)}, its "
                               f"group's block_size={group['block_size']} needs "
                               f"{blocks.shape}")
        state["step"] += 1
        if blocks.numel == 0:
            return
        theta = _real_view(param.detach())
        grads = blocks_ops.as_blocks(_real_view(param.grad).reshape(-1), blocks)
        blocks_ops.accumulate_(outer_sum, grads)
        direction = self._direction(state, group, grads)
        new_theta = theta.reshape(-1).to(torch.float64) - float(group["lr"]) * \
            direction.reshape(-1)[:blocks.numel]
        theta.copy_(new_theta.view(theta.shape))

    @staticmethod
    def _direction(state: dict[str, Tensor], group: dict[str, Any], grads: Tensor) -> Tensor:
        """``H⁻¹·g`` per block, ``H⁻¹`` fresh or the stored one (``precondition_every``)."""
        every, eps = group["precondition_every"], group["eps"]
        if every == 1:
            state.pop("h_inverse", None)
            return blocks_ops.preconditioned(state["sum"], eps, grads)
        step = int(state["step"].item())
        if (step - 1) % every == 0 or "h_inverse" not in state:
            state["h_inverse"] = blocks_ops.inverse_preconditioner(state["sum"], eps)
        return blocks_ops.apply_(state["h_inverse"], grads)

    # -- checkpoints ----------------------------------------------------------------

    _validate = staticmethod(_check_hyperparameters)

    def _check_saved_state(self, label: str, param: Tensor, saved: dict[str, Any]) -> None:
        """``sum`` (required) and ``h_inverse`` (optional): finite float tensors of a block
        layout of the parameter, the same for both; ``sum``'s diagonal ≥ 0 (sums of
        squares). The layout's match with the group's ``block_size`` is checked at the
        next step (the loaded group's block size is not known here)."""
        if "sum" not in saved:
            raise ValueError(f"state_dict does not fit {label}: its state lacks 'sum'")
        numel = _real_numel(param)
        for key in ("sum", "h_inverse"):
            if key not in saved:
                continue
            value = saved[key]
            ok = (isinstance(value, Tensor) and value.dim() == 3
                  and value.shape[1] == value.shape[2] and _is_layout(numel, value.shape))
            checkpoint.check_clock(label, key, value, ok)
            if key == "h_inverse" and value.shape != saved["sum"].shape:
                raise ValueError(f"state_dict does not fit {label}: its state 'h_inverse' has "
                                 f"shape {tuple(value.shape)}, 'sum' {tuple(saved['sum'].shape)}")
        if (saved["sum"].diagonal(dim1=1, dim2=2) < 0).any():
            raise ValueError(f"state_dict does not fit {label}: its state 'sum' has negative "
                             f"diagonal entries (sums of squares are >= 0)")


def _real_view(tensor: Tensor) -> Tensor:
    return torch.view_as_real(tensor) if tensor.is_complex() else tensor


def _real_numel(param: Tensor) -> int:
    return param.numel() * (2 if param.is_complex() else 1)


def _layout(param: Tensor, block_size: int | None) -> BlockLayout:
    return blocks_ops.layout(_real_numel(param), block_size)


def _is_layout(numel: int, shape: torch.Size) -> bool:
    """Whether ``(count, size, size)`` is the block layout of ``numel`` coordinates for
    some block size."""
    count, size = shape[0], shape[1]
    if numel == 0:
        return count == 0
    return 1 <= size <= numel and count == math.ceil(numel / size)
