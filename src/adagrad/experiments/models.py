"""The two models the comparison trains: a sparse linear text classifier and the small
house-price network of the getting-started example (also used, with one output per class,
for dense classification)."""

from __future__ import annotations

import torch
from torch import nn


class SparseLinearText(nn.Module):
    """Linear classifier over a bag of words: ``logits = Σ_w x_w·W[w] + b``.

    ``W`` is an ``nn.EmbeddingBag`` (one row of class scores per word) with sum pooling and
    per-word weights ``x_w = 1/sqrt(#unique words)`` (an L2-normalised binary bag of words).
    With ``sparse=True`` its gradient is a sparse COO tensor touching only the words of the
    batch, which exercises Adagrad's sparse path; optimizers that refuse sparse gradients
    (RMSprop, Adadelta, Adam) get the same model with ``sparse=False``.
    """

    def __init__(self, vocab_size: int, n_classes: int, sparse: bool, init_std: float = 0.01):
        super().__init__()
        self.words = nn.EmbeddingBag(vocab_size, n_classes, mode="sum", sparse=sparse)
        self.bias = nn.Parameter(torch.zeros(n_classes))
        nn.init.normal_(self.words.weight, std=init_std)

    def forward(self, ids: torch.Tensor, offsets: torch.Tensor,
                weights: torch.Tensor) -> torch.Tensor:
        """Class scores for the bags ``ids[offsets[i]:offsets[i+1]]`` weighted by ``weights``."""
        return self.words(ids, offsets, per_sample_weights=weights) + self.bias


class TabularNet(nn.Module):
    """The house-price model of the getting-started example, ``Linear(n, 10) → ReLU → Linear(10, outputs)``:
    one output for a regression (the standardised target), one score per class otherwise."""

    def __init__(self, n_features: int = 5, outputs: int = 1, hidden: int = 10):
        super().__init__()
        self.outputs = outputs
        self.net = nn.Sequential(nn.Linear(n_features, hidden), nn.ReLU(), nn.Linear(hidden, outputs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Shape ``(batch,)`` for one output, else ``(batch, outputs)``."""
        out = self.net(x)
        return out.squeeze(-1) if self.outputs == 1 else out
