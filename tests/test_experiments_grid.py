"""The learning-rate search: the lattice, growing the grid until the best rate is interior,
and the runner giving the same results on one process or two."""

from __future__ import annotations

import math

import numpy as np
import pytest
from experiments_support import run

from adagrad.experiments import experiment, optimizers
from adagrad.experiments.experiment import ACCURACY, MAX_GRID, search_grid


def test_lattice_is_two_rates_per_decade():
    assert optimizers.rates(-2, 2) == (0.1, 0.316, 1.0, 3.16, 10.0)
    assert all(optimizers.lattice_index(optimizers.lattice(k)) == k for k in range(-12, 7))
    assert experiment.decades([0.0316, 1.0]) == 1.5


def _trainer(curve, calls):
    """A fake trainer: validation accuracy ``curve(lr)`` (NaN: diverged), loss 1 − accuracy."""
    def train_at(lr, seed, keep_rates):
        calls.append(lr)
        value = curve(lr)
        outcome = run("x", value, value, lr, seed)
        outcome.val_loss = [1.0, 1.0 - value if math.isfinite(value) else math.nan]
        return outcome
    return train_at


def _peak(at: float, width: float = 0.5):
    return lambda lr: 0.9 - 0.05 * abs(math.log10(lr) - math.log10(at)) / width


def test_grid_grows_until_the_best_rate_is_interior():
    calls: list[float] = []
    runs, limited = search_grid(_trainer(_peak(10.0), calls), (0.1, 0.316, 1.0), ACCURACY, extend=True)
    lrs = [r.lr for r in runs]
    assert lrs == [0.1, 0.316, 1.0, 3.16, 10.0, 31.6] and not limited
    best = min(runs, key=lambda r: experiment.selection_key(r, ACCURACY))
    assert best.lr == 10.0 and lrs[0] < best.lr < lrs[-1]


def test_grid_stops_at_a_diverged_rate():
    curve = lambda lr: math.nan if lr > 1.5 else _peak(10.0)(lr)  # noqa: E731
    runs, limited = search_grid(_trainer(curve, []), (0.1, 0.316, 1.0), ACCURACY, extend=True)
    assert [r.lr for r in runs] == [0.1, 0.316, 1.0, 3.16] and runs[-1].diverged and not limited


def test_grid_closes_the_usable_range_when_asked():
    flat = lambda lr: 0.9 if 0.01 <= lr <= 1.0 else 0.8  # noqa: E731  usable over 2 decades
    runs, _ = search_grid(_trainer(flat, []), (0.1, 0.316), ACCURACY, extend=True, close_usable=True)
    assert [r.lr for r in runs] == list(optimizers.rates(-5, 1))  # 0.00316 … 3.16: both edges out


def test_grid_reports_its_limit():
    rising = lambda lr: min(0.99, 0.5 + 0.05 * math.log10(lr * 1e6))  # noqa: E731
    calls: list[float] = []
    runs, limited = search_grid(_trainer(rising, calls), (0.1, 0.316), ACCURACY, extend=True)
    assert limited and len(runs) <= MAX_GRID and len(calls) == len(runs)


def test_quick_does_not_extend():
    runs, limited = search_grid(_trainer(_peak(10.0), []), (0.1, 0.316), ACCURACY, extend=False)
    assert [r.lr for r in runs] == [0.1, 0.316] and not limited


@pytest.mark.slow
def test_results_do_not_depend_on_the_number_of_processes():
    from adagrad.experiments.data import load_concrete
    from adagrad.experiments.runner import Job, run_jobs

    data = load_concrete()
    jobs = [Job("concrete", "tabular", key, 2, quick=True) for key in ("adagrad-founding", "sgd", "dog")]
    one = run_jobs(jobs, {"concrete": data}, processes=1)
    two = run_jobs(jobs, {"concrete": data}, processes=2)
    for job in jobs:
        assert np.array_equal([r.test_metric for r in one[job].runs], [r.test_metric for r in two[job].runs])
        assert one[job].lr == two[job].lr
