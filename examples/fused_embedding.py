"""
A fused embedding model
=======================

A small click-prediction model: an embedding table of 100,000 rows looked up by bags of ids
(few hot ids, a long tail of rare ones), then a linear head. It is trained twice on the same
batches: once with torch's ``nn.EmbeddingBag(sparse=True)`` and ``optimizer.step()``, once
with the fused `adagrad.nn.EmbeddingBag`, whose backward applies the optimizer's update to
the touched rows directly (FBGEMM's data flow). The two runs compute the same update, so the
losses agree; the fused one never builds the table's gradient. Run::

    .venv/bin/python examples/fused_embedding.py
"""

from __future__ import annotations

import time

import matplotlib.pyplot as plt
import torch
from torch import nn

import adagrad
import adagrad.nn

ROWS, DIM, BAGS, IDS_PER_BAG, STEPS = 100_000, 32, 2048, 8, 60


class ClickModel(nn.Module):
    """Score of a bag of ids: the sum of their embeddings, then a linear head."""

    def __init__(self, table: nn.EmbeddingBag):
        super().__init__()
        self.table = table
        self.head = nn.Linear(DIM, 1)

    def forward(self, ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        return self.head(self.table(ids, offsets)).squeeze(1)


def batches(seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Bags of Zipf-like ids and a click label that depends on a few hot ids."""
    generator = torch.Generator().manual_seed(seed)
    ranks = torch.arange(1, ROWS + 1, dtype=torch.float64)
    popularity = ranks ** -1.05
    out = []
    for _ in range(STEPS):
        ids = torch.multinomial(popularity, BAGS * IDS_PER_BAG, replacement=True, generator=generator)
        offsets = torch.arange(0, ids.numel(), IDS_PER_BAG)
        clicks = (ids.view(BAGS, IDS_PER_BAG) % 7 == 0).any(1).float()
        out.append((ids, offsets, clicks))
    return out


def train(fused: bool, data) -> tuple[list[float], float, ClickModel]:
    """Train from the same initial weights; return the losses and the seconds per step."""
    torch.manual_seed(0)
    if fused:
        table = adagrad.nn.EmbeddingBag(ROWS, DIM, mode="sum")
    else:
        table = nn.EmbeddingBag(ROWS, DIM, mode="sum", sparse=True)
    model = ClickModel(table)
    optimizer = adagrad.Adagrad(model.parameters(), lr=0.05)
    if fused:
        table.update_in_backward(optimizer)  # the table's rows are updated during backward
    losses, start = [], time.perf_counter()
    for ids, offsets, clicks in data:
        optimizer.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(model(ids, offsets), clicks)
        loss.backward()
        optimizer.step()  # the head (and, unfused, the table)
        losses.append(loss.item())
    return losses, (time.perf_counter() - start) / len(data), model


def main() -> None:
    torch.set_num_threads(1)
    data = batches()
    sparse_losses, sparse_time, sparse_model = train(False, data)
    fused_losses, fused_time, fused_model = train(True, data)
    difference = (sparse_model.table.weight - fused_model.table.weight).abs().max().item()
    print(f"final loss: optimizer on torch's layer {sparse_losses[-1]:.4f}, "
          f"fused layer {fused_losses[-1]:.4f}")
    print(f"largest difference between the two tables: {difference:.2e}")
    print(f"time per step (first steps include compiling the kernels): "
          f"{1e3 * sparse_time:.1f} ms and {1e3 * fused_time:.1f} ms")

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(sparse_losses, label="nn.EmbeddingBag(sparse=True) + step()")
    ax.plot(fused_losses, "--", label="adagrad.nn.EmbeddingBag (fused)")
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title("The same updates, with and without the fused layer")
    ax.legend()
    fig.tight_layout()
    plt.show()


if __name__ == "__main__":
    main()
