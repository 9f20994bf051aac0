"""Full-matrix Adagrad from torch ops, batched over blocks, in float64 (:ref:`algo-full-matrix`).

A parameter's d real coordinates, flattened, are cut into blocks of ``size`` consecutive
coordinates (one block of d without a block size); each block ``i`` keeps its own
``S_i = Σ g_i·g_iᵀ``. The last block holds the ``d - (count-1)·size`` coordinates left
over: it is stored zero-padded to ``size × size`` so that all blocks go through one batched
``torch.linalg.eigh``. The padding is exact: the padded rows and columns of ``S`` stay 0,
so ``H = δI + S^{1/2}`` is block-diagonal there (δ on the padded diagonal) and acts on the
padded gradient coordinates, which are 0, alone.

``H⁻¹`` shares ``S``'s eigenvectors: with ``S = V·diag(λ)·Vᵀ``,
``H⁻¹ = V·diag(1 / (δ + sqrt(λ)))·Vᵀ`` (λ clamped at 0 against rounding), so no
matrix square root or inverse is formed beyond the one eigendecomposition.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class BlockLayout:
    """``numel`` real coordinates in blocks of ``size`` (the last may hold fewer)."""

    numel: int
    size: int

    @property
    def count(self) -> int:
        return -(-self.numel // self.size) if self.size else 0

    @property
    def shape(self) -> tuple[int, int, int]:
        """The shape of the stacked ``S`` (and ``H⁻¹``): ``(count, size, size)``."""
        return (self.count, self.size, self.size)


def layout(numel: int, block_size: int | None) -> BlockLayout:
    """The blocks of ``numel`` coordinates: one block without ``block_size``, else blocks
    of ``min(block_size, numel)``."""
    return BlockLayout(numel, numel if block_size is None else min(block_size, numel))


def as_blocks(flat: Tensor, blocks: BlockLayout) -> Tensor:
    """A 1-D tensor of ``blocks.numel`` coordinates as ``(count, size)`` in float64,
    zero-padded at the end."""
    padded = flat.new_zeros(blocks.count * blocks.size, dtype=torch.float64)
    padded[:blocks.numel] = flat
    return padded.view(blocks.count, blocks.size)


def accumulate_(outer_sum: Tensor, grads: Tensor) -> None:
    """``S_i ← S_i + g_i·g_iᵀ`` for every block, in place (``grads`` is ``(count, size)``)."""
    outer_sum.baddbmm_(grads.unsqueeze(2), grads.unsqueeze(1))


def _eigen(outer_sum: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """``S``'s eigenvectors ``V`` and ``1 / (δ + sqrt(λ))``, the eigenvalues of ``H⁻¹``."""
    eigenvalues, eigenvectors = torch.linalg.eigh(outer_sum)
    return eigenvectors, (eigenvalues.clamp(min=0).sqrt() + eps).reciprocal()


def inverse_preconditioner(outer_sum: Tensor, eps: float) -> Tensor:
    """``H⁻¹ = (δI + S^{1/2})⁻¹`` for every block: ``(count, size, size)`` float64."""
    eigenvectors, inverse_roots = _eigen(outer_sum, eps)
    return (eigenvectors * inverse_roots.unsqueeze(1)) @ eigenvectors.mT


def preconditioned(outer_sum: Tensor, eps: float, grads: Tensor) -> Tensor:
    """``H⁻¹·g`` for every block, from a fresh eigendecomposition of ``S`` without
    forming ``H⁻¹`` (two matrix-vector products a block instead of a matrix product)."""
    eigenvectors, inverse_roots = _eigen(outer_sum, eps)
    in_basis = (eigenvectors.mT @ grads.unsqueeze(2)).squeeze(2)
    return (eigenvectors @ (inverse_roots * in_basis).unsqueeze(2)).squeeze(2)


def apply_(h_inverse: Tensor, grads: Tensor) -> Tensor:
    """``H⁻¹·g`` for every block with a stored ``H⁻¹``."""
    return (h_inverse @ grads.unsqueeze(2)).squeeze(2)
