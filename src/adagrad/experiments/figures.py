"""Every figure of the report: the general ones (`plots`), the claims' (`claim_plots`) and
the per-dataset ones, in the report's order."""

from __future__ import annotations

from pathlib import Path

from adagrad.experiments.claim_plots import CLAIM_PLOTS
from adagrad.experiments.experiment import DatasetResult
from adagrad.experiments.figure_style import Plot
from adagrad.experiments.plots import loss_curves, lr_selection, median_step, rate_vs_frequency, test_metrics


def draw_all(datasets: list[DatasetResult], folder: Path) -> list[Plot]:
    """Every figure of the report, written into ``folder``."""
    plots: list[Plot] = [test_metrics(datasets, folder)]
    for make_claim_plot in CLAIM_PLOTS:
        plot = make_claim_plot(datasets, folder)
        if plot is not None:
            plots.append(plot)
    for ds in datasets:
        for make in (loss_curves, rate_vs_frequency, median_step, lr_selection):
            plot = make(ds, folder)
            if plot is not None:
                plots.append(plot)
    return plots
