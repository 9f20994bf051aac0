"""The figures behind the comparative claims: dense-versus-sparse gaps, the rare-word
advantage, mean ranks, and the learning-rate-free optimizers against tuned Adagrad."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from adagrad.experiments.claims.base import SUBJECT, held_out, primary
from adagrad.experiments.claims.comparisons import ANCHOR_VARIANTS, LR_FREE, SGD
from adagrad.experiments.experiment import DatasetResult, OptimizerResult
from adagrad.experiments.figure_style import Plot, color, save

DENSE_COLOR, SPARSE_COLOR = "#d62728", "#1f77b4"


def _relative(ds: DatasetResult, res: OptimizerResult, reference: float) -> tuple[float, float]:
    """``res``'s mean and std relative to ``reference`` (positive = better), in percent."""
    sign = 1.0 if ds.metric.higher_is_better else -1.0
    return (100 * sign * (res.mean - reference) / abs(reference), 100 * res.std / abs(reference))


def dense_sparse_gaps(datasets: list[DatasetResult], folder: Path) -> Plot | None:
    """Adagrad's relative shortfall from the best optimizer on each dataset."""
    rows = []
    for ds in primary(datasets):
        ada, best = ds.result(SUBJECT), ds.best()
        if ada is None or best is None or not math.isfinite(ada.mean):
            continue
        gap, spread = _relative(ds, ada, best.mean)
        rows.append((ds.name, -gap, spread, ds.sparse, best.spec.label))
    if not rows:
        return None
    fig = Figure(figsize=(8, 0.8 + 0.45 * len(rows)))
    ax = fig.subplots()
    y = np.arange(len(rows))
    ax.barh(y, [r[1] for r in rows], xerr=[r[2] for r in rows], capsize=3,
            color=[SPARSE_COLOR if r[3] else DENSE_COLOR for r in rows], alpha=0.85)
    ax.set_yticks(y, [f"{r[0]} ({'sparse' if r[3] else 'dense'}; best: {r[4]})" for r in rows],
                  fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("Adagrad's gap to the best optimizer (% of the best's test metric; ± Adagrad's std)")
    ax.set_title("Does Adagrad struggle on dense data? red: dense, blue: sparse", fontsize=10)
    ax.grid(alpha=0.3, axis="x")
    name = save(fig, folder, "claim_dense_vs_sparse_gap.png")
    return Plot(name, "Adagrad's gap to the best optimizer, dense vs sparse data",
                "Relative shortfall of textbook Adagrad's (ε inside the root) mean test metric from the best "
                "optimizer's on each dataset (0 = Adagrad is the best).", None,
                ("struggles-on-dense-data",))


def rare_word_advantage(datasets: list[DatasetResult], folder: Path) -> Plot | None:
    """Adagrad − SGD test accuracy with all words and with rare words only."""
    full = {ds.name: ds for ds in primary(datasets)}
    pairs = [(full[ds.variant_of], ds) for ds in datasets if ds.variant_of in full]
    pairs = [(w, r) for w, r in pairs
             if all(d.result(k) is not None for d in (w, r) for k in (SUBJECT, SGD))]
    if not pairs:
        return None
    fig = Figure(figsize=(8, 4.2))
    ax = fig.subplots()
    x = np.arange(len(pairs))
    for offset, index, label, color in ((-0.2, 0, "all words", "#7f7f7f"),
                                        (0.2, 1, "rare words only (≤ 5 documents)", "#1f77b4")):
        diffs, errs = [], []
        for pair in pairs:
            ds = pair[index]
            a, s = ds.result(SUBJECT), ds.result(SGD)
            diffs.append(100 * (a.mean - s.mean))
            errs.append(100 * math.hypot(a.std, s.std))
        ax.bar(x + offset, diffs, width=0.38, yerr=errs, capsize=3, color=color, label=label)
    ax.set_xticks(x, [w.name for w, _ in pairs])
    ax.axhline(0, color="k", lw=0.8)
    ax.set_ylabel("Adagrad − SGD test accuracy (points)")
    ax.set_title("Does Adagrad learn more from rare words than SGD?", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    name = save(fig, folder, "claim_rare_words.png")
    return Plot(name, "Adagrad's advantage over SGD: all words vs rare words only",
                "Difference of mean test accuracy (error bars: the two standard deviations "
                "combined), each optimizer tuned separately on each vocabulary.", None,
                ("learns-from-rare-words",))


def lr_free_vs_tuned(datasets: list[DatasetResult], folder: Path) -> Plot | None:
    """The learning-rate-free optimizers relative to grid-tuned Adagrad on each dataset (the
    held-out sets, which judge the claim, first)."""
    measured = [ds for ds in held_out(datasets) + primary(datasets)
                if ds.result(SUBJECT) is not None and math.isfinite(ds.result(SUBJECT).mean)]
    candidates = (LR_FREE, *(v for variants in ANCHOR_VARIANTS.values() for v in variants))
    keys = [k for k in candidates if any(ds.result(k) is not None for ds in measured)]
    if not measured or not keys:
        return None
    fig = Figure(figsize=(9, 4.4))
    ax = fig.subplots()
    x = np.arange(len(measured))
    width = 0.8 / len(keys)
    for i, key in enumerate(keys):
        points = [(_relative(ds, ds.result(key), ds.result(SUBJECT).mean) if ds.result(key) else
                   (math.nan, 0.0)) for ds in measured]
        label = next(ds.result(key).spec.label for ds in measured if ds.result(key) is not None)
        ax.bar(x - 0.4 + width * (i + 0.5), [p[0] for p in points], width=width,
               yerr=[p[1] for p in points], capsize=2, color=color(key), label=label)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(x, [ds.name + (" (held out)" if ds.info.heldout else "") for ds in measured],
                  fontsize=7, rotation=20)
    ax.set_ylabel("test metric relative to tuned Adagrad (%; > 0 = better)")
    ax.set_ylim(max(ax.get_ylim()[0], -25), ax.get_ylim()[1])
    ax.set_title("Learning-rate-free optimizers (defaults, no grid) vs grid-tuned Adagrad",
                 fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    name = save(fig, folder, "claim_lr_free.png")
    return Plot(name, "Learning-rate-free optimizers against tuned Adagrad",
                "Mean test metric of each learning-rate-free optimizer relative to textbook "
                "Adagrad tuned on its grid (accuracy: relative difference; RMSE: relative "
                "reduction), with the seeds' standard deviation; clipped at −25 %.", None,
                ("lr-free-matches-tuned", "no-manual-tuning"))


CLAIM_PLOTS = (dense_sparse_gaps, rare_word_advantage, lr_free_vs_tuned)
