"""Synthetic measurements for the claim judges: results built from given numbers, no training."""

from __future__ import annotations

import math

import numpy as np

from adagrad.experiments.data import (
    CLASSIFICATION,
    REGRESSION,
    TABULAR_KIND,
    TEXT_KIND,
    DatasetInfo,
    TabularData,
    TextData,
    TextSplit,
)
from adagrad.experiments.experiment import DatasetResult, GridPoint, OptimizerResult, Trivial, metric_for
from adagrad.experiments.optimizers import BY_KEY
from adagrad.experiments.training import RunOutcome, StepTrace, TrainSettings

SETTINGS = TrainSettings(epochs=2, batch_size=10)
EMPTY = np.zeros(0, dtype=np.int64)


def text_data(name: str, doc_freq: np.ndarray | None = None, n_train: int = 100) -> TextData:
    """A text dataset of ``n_train`` empty training documents (the judges read only sizes)."""
    doc_freq = np.ones(4, dtype=np.int64) if doc_freq is None else doc_freq
    split = TextSplit(EMPTY, np.zeros(n_train + 1, dtype=np.int64), np.zeros(n_train, dtype=np.int64))
    return TextData(name, name, ["a", "b"], [f"w{i}" for i in range(len(doc_freq))], doc_freq,
                    split, split, split, source="synthetic")


def tabular_data(name: str, task: str = REGRESSION) -> TabularData:
    x, y = np.zeros((100, 2), np.float32), np.zeros(100, np.float32)
    return TabularData(name, name, ["x0", "x1"], "y", x, y, x, y, x, y, "synthetic", task=task,
                       classes=["a", "b"] if task == CLASSIFICATION else [], unit="usd")


def run(key: str, test: float, val: float = math.nan, lr: float | None = 0.1, seed: int = 0,
        trace: StepTrace | None = None, word_rate=None, coordinate_rate=None) -> RunOutcome:
    return RunOutcome(key, lr, seed, [0, 1, 2], [1.0, 0.5, 0.4], [1.0, 0.6, 0.5],
                      val if math.isfinite(val) else test, test, not math.isfinite(test), 1.0,
                      trace or StepTrace(), word_rate, coordinate_rate)


def result(data, key: str, tests: list[float], vals: list[float] | None = None,
           grid: list[tuple[float, float]] | None = None, lr: float | None = 0.1,
           trivial: Trivial | None = None, **first_run) -> OptimizerResult:
    """``key``'s result with these test (and validation) values per seed and, optionally, a
    grid of ``(lr, validation metric)`` points (NaN: diverged) and the trivial predictor's
    metrics (None: unknown, a failed seed stays unscored)."""
    vals = vals or tests
    spec = BY_KEY[key]
    lr = lr if spec.tuned else None
    runs = [run(key, t, v, lr, seed, **(first_run if seed == 0 else {}))
            for seed, (t, v) in enumerate(zip(tests, vals))]
    points = [GridPoint(g_lr, 0.5, v, not math.isfinite(v)) for g_lr, v in (grid or [])]
    if spec.tuned and not points:
        points = [GridPoint(lr, 0.5, vals[0], False)]
    return OptimizerResult(spec, lr, points, runs, metric_for(data), trivial=trivial)


def dataset(data, results: list[OptimizerResult], variant_of: str | None = None,
            heldout: bool = False) -> DatasetResult:
    kind = TEXT_KIND if isinstance(data, TextData) else TABULAR_KIND
    info = DatasetInfo(data.name, data.task, kind, data.name, "none", "none", True,
                       lambda: data, lambda: True, heldout=heldout)
    return DatasetResult(info, data, SETTINGS, results, 1.0, variant_of=variant_of)


def around(center: float, spread: float = 0.002, n: int = 5) -> list[float]:
    """``n`` values evenly spread around ``center`` (mean ``center``, std ≈ 0.8·spread)."""
    return list(center + spread * np.linspace(-1, 1, n))
