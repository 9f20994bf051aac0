"""The report's figures, drawn with matplotlib's object API (Agg canvas, PNG, no pyplot state)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from adagrad.experiments.claims import SUBJECT, early_index, spearman, steps_per_epoch, usable_range
from adagrad.experiments.data import TextData
from adagrad.experiments.experiment import DatasetResult
from adagrad.experiments.figure_style import Plot, color, save
from adagrad.experiments.optimizers import ADAGRAD, BASELINE


def _labelled(res) -> str:
    """The optimizer's label with its chosen learning rate (or "defaults")."""
    return f"{res.spec.label} (" + (f"lr={res.lr:g}" if res.lr is not None else "defaults") + ")"


def _style(spec) -> str:
    """Dashed for baselines, dotted for the Adagrad variants other than the textbook formula
    (they often coincide with it), solid otherwise."""
    if spec.role == BASELINE:
        return "--"
    if spec.role == ADAGRAD and spec.key != SUBJECT:
        return ":"
    return "-"


def _legend_below(fig: Figure, ax, ncol: int = 3) -> int:
    """A figure legend under the plots with ``ax``'s entries; returns its number of rows."""
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=8, frameon=False)
    return math.ceil(len(labels) / ncol)


def loss_curves(ds: DatasetResult, folder: Path) -> Plot:
    """Train and validation loss per epoch (mean over seeds), one line per optimizer."""
    fig = Figure(figsize=(11, 4.2))
    axes = fig.subplots(1, 2, sharey=True)
    for ax, which, title in ((axes[0], "train_loss", "training loss"),
                             (axes[1], "val_loss", "validation loss")):
        for res in ds.results:
            epochs, values = res.mean_curve(which)
            ax.plot(epochs, values, color=color(res.spec.key), lw=1.6,
                    ls=_style(res.spec),
                    label=_labelled(res))
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
    fig.set_size_inches(11, 4.2 + 0.25 * math.ceil(len(ds.results) / 3))
    loss = "cross-entropy" if isinstance(ds.data, TextData) else "MSE (standardised price)"
    axes[0].set_ylabel(loss)
    rows = _legend_below(fig, axes[0])
    fig.suptitle(f"{ds.data.title}: loss curves at each optimizer's chosen learning rate")
    name = save(fig, folder, f"loss_curves_{ds.name}.png", rows)
    return Plot(name, f"Loss curves — {ds.name}",
                f"Training and validation {loss} after each epoch, mean over seeds, each optimizer "
                f"at the learning rate it won on the validation split.", ds.name)


def _binned_median(x: np.ndarray, y: np.ndarray, bins: int = 14) -> tuple[np.ndarray, np.ndarray]:
    edges = np.unique(np.geomspace(x.min(), x.max() + 1, bins))
    centers, medians = [], []
    for lo, hi in zip(edges[:-1], edges[1:]):
        inside = (x >= lo) & (x < hi)
        if inside.any():
            centers.append(math.sqrt(lo * hi))
            medians.append(float(np.median(y[inside])))
    return np.asarray(centers), np.asarray(medians)


def rate_vs_frequency(ds: DatasetResult, folder: Path) -> Plot | None:
    """Effective rate per word against the word's document frequency (log-log)."""
    if not isinstance(ds.data, TextData):
        return None
    subject = ds.result(SUBJECT)
    if subject is None or subject.traced.word_rate is None:
        return None
    seen = ds.data.doc_freq > 0  # a sampled training set does not hold every word
    df = ds.data.doc_freq[seen].astype(np.float64)
    rate = subject.traced.word_rate[seen]
    rng = np.random.default_rng(0)
    jitter = df * np.exp(rng.uniform(-0.12, 0.12, size=len(df)))
    fig = Figure(figsize=(8, 5.2))
    ax = fig.subplots()
    ax.scatter(jitter, rate, s=4, alpha=0.25, color=color(SUBJECT), lw=0,
               label=f"{subject.spec.label}: one dot per word")
    for res in ds.results:
        if res.traced.word_rate is None or not res.spec.key.startswith("adagrad"):
            continue
        cx, cy = _binned_median(df, res.traced.word_rate[seen])
        ax.plot(cx, cy, color=color(res.spec.key), lw=2.2 if res.spec.key == SUBJECT else 1.3,
                marker="o", ms=3, label=f"{_labelled(res)}: binned median")
    sgd = ds.result("sgd")
    if sgd is not None:
        ax.axhline(sgd.lr, color=color("sgd"), ls="--", lw=1.2,
                   label=f"{sgd.spec.label}: lr={sgd.lr:g} for every word")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("word frequency (training documents containing the word)")
    ax.set_ylabel("effective learning rate lr / sqrt(G)  (mean over classes)")
    rho = spearman(df, rate)
    ax.set_title(f"{ds.data.title}\nrare words keep larger steps (Spearman ρ = {rho:.2f})", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    rows = _legend_below(fig, ax, ncol=2)
    fig.set_size_inches(8, 5.2 + 0.25 * rows)
    name = save(fig, folder, f"effective_lr_vs_frequency_{ds.name}.png", rows)
    return Plot(name, f"Effective learning rate per word vs frequency — {ds.name}",
                "Each dot is a word of the vocabulary: its Adagrad step size after training "
                "(lr/sqrt(G) of its row, mean over classes) against how many training documents "
                "contain it. Lines: binned medians for each Adagrad variant (ρ < 1 and reset "
                "included) and SGD's single rate for comparison.", ds.name,
                ("per-parameter-rates", "rare-features-get-larger-steps"))


def median_step(ds: DatasetResult, folder: Path) -> Plot | None:
    """Median effective step over training, absolute and relative to after the first epoch."""
    traced = [r for r in ds.results if r.traced.trace.steps]
    if not traced:
        return None
    spe = steps_per_epoch(ds)
    fig = Figure(figsize=(11, 4.4))
    axes = fig.subplots(1, 2)
    for res in traced:
        trace = res.traced.trace
        steps = np.asarray(trace.steps) / spe
        med = np.asarray(trace.median)
        style = dict(color=color(res.spec.key), lw=1.6,
                     ls=_style(res.spec))
        axes[0].plot(steps, med, label=_labelled(res), **style)
        i = early_index(trace, spe)
        if i is not None and med[i] > 0:
            axes[1].plot(steps, med / med[i], **style)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("median effective step (active coordinates)")
    axes[0].set_title("absolute")
    axes[1].set_yscale("log")
    axes[1].axhline(1.0, color="k", lw=0.8)
    axes[1].set_ylabel("relative to its value after epoch 1")
    axes[1].set_title("relative: below 1 = the step shrank")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3, which="both")
    rows = _legend_below(fig, axes[0])
    fig.set_size_inches(11, 4.4 + 0.25 * rows)
    fig.suptitle(f"{ds.data.title}: median effective step over training (seed 0)")
    name = save(fig, folder, f"median_step_{ds.name}.png", rows)
    return Plot(name, f"Median effective step over time — {ds.name}",
                "Median over the coordinates that have had a gradient of each optimizer's "
                "per-coordinate step (Adagrad: lr/sqrt(G); RMSprop: lr/sqrt(v); Adam: "
                "lr/sqrt(v̂); Adadelta: lr·sqrt(Δ)/sqrt(v)), sampled several times per epoch.",
                ds.name, ("step-size-shrinks", "remedies-keep-step-size"))


def _metric_label(ds: DatasetResult, split: str) -> str:
    if ds.metric.higher_is_better:
        return f"{split} accuracy (%)"
    unit = getattr(ds.data, "unit", "")
    return f"{split} RMSE" + (f" ({'$' if unit == 'usd' else unit.upper()})" if unit else "")


def lr_selection(ds: DatasetResult, folder: Path) -> Plot:
    """Validation metric against learning rate: the grid each optimizer was tuned on, the
    usable ranges of Adagrad and SGD, and the learning-rate-free optimizers as lines."""
    fig = Figure(figsize=(8, 4.6))
    ax = fig.subplots()
    scale = 100.0 if ds.metric.higher_is_better else 1.0
    for res in ds.results:
        if not res.grid:
            ax.axhline(float(np.nanmean(res.val_values)) * scale, color=color(res.spec.key),
                       ls="-.", lw=1.2, label=f"{res.spec.label} (no grid)")
            continue
        lrs = [g.lr for g in res.grid]
        vals = [g.val_metric * scale for g in res.grid]
        ax.plot(lrs, vals, marker="o", color=color(res.spec.key), label=res.spec.label,
                ls=_style(res.spec))
        chosen = next(g for g in res.grid if g.lr == res.lr)
        ax.plot([chosen.lr], [chosen.val_metric * scale], marker="*", ms=13,
                color=color(res.spec.key))
    for key in (SUBJECT, "sgd"):
        res = ds.result(key)
        usable = usable_range(res) if res is not None and res.grid else None
        if usable is not None:
            ax.axvspan(usable.lo / 1.15, usable.hi * 1.15, color=color(key), alpha=0.08)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel(_metric_label(ds, "validation"))
    ax.set_title(f"{ds.data.title}: learning-rate grid (seed 0), ★ = chosen; shaded: usable "
                 f"range of Adagrad and SGD", fontsize=9)
    ax.grid(alpha=0.3, which="both")
    rows = _legend_below(fig, ax)
    fig.set_size_inches(9, 4.6 + 0.25 * rows)
    name = save(fig, folder, f"lr_selection_{ds.name}.png", rows)
    return Plot(name, f"Learning-rate selection — {ds.name}",
                "Each optimizer's validation metric over its learning-rate grid (seed 0, two "
                "rates per decade, grown until the best rate is interior); the star is the rate "
                "used for the test runs, the one with the lowest final validation loss. Shaded: "
                "the usable range (within 1 point / 2 % of the best) of textbook Adagrad and of "
                "SGD. Dash-dotted lines: learning-rate-free optimizers (mean over seeds).",
                ds.name, ("no-manual-tuning",))


def test_metrics(datasets: list[DatasetResult], folder: Path) -> Plot:
    """Final test metric per optimizer, mean ± std over seeds, one panel per dataset."""
    fig = Figure(figsize=(11, 0.5 + 3.6 * math.ceil(len(datasets) / 2)))
    cols = min(2, len(datasets))
    rows = math.ceil(len(datasets) / cols)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).reshape(-1)
    for ax, ds in zip(axes, datasets):
        scale = 100.0 if ds.metric.higher_is_better else 1.0
        labels = [r.spec.label for r in ds.results]
        means = np.asarray([r.mean * scale for r in ds.results])
        stds = np.asarray([r.std * scale for r in ds.results])
        y = np.arange(len(labels))
        ax.barh(y, np.nan_to_num(means), xerr=stds, capsize=3,
                color=[color(r.spec.key) for r in ds.results], alpha=0.85)
        ax.set_yticks(y, labels, fontsize=7)
        ax.invert_yaxis()
        finite = means[np.isfinite(means)]
        if len(finite):
            lo, hi = float(finite.min() - 3 * max(stds.max(), 1e-9)), float(finite.max() + 3 * max(stds.max(), 1e-9))
            pad = 0.15 * (hi - lo) + 1e-9
            ax.set_xlim(max(lo - pad, 0), hi + pad)
        for yi, m, s in zip(y, means, stds):
            if math.isfinite(m):
                ax.text(m + s, yi, f" {m:,.1f}±{s:,.1f}" if scale == 100.0 else f" {m:,.0f}±{s:,.0f}",
                        va="center", fontsize=7)
        best = "higher" if ds.metric.higher_is_better else "lower"
        ax.set_xlabel(_metric_label(ds, "test") + f", {best} is better")
        ax.set_title(ds.data.title, fontsize=9)
        ax.grid(alpha=0.3, axis="x")
    for ax in axes[len(datasets):]:
        ax.set_visible(False)
    fig.suptitle("Test metric at the chosen learning rate: mean ± std over seeds")
    name = save(fig, folder, "test_metrics.png")
    return Plot(name, "Final test metrics",
                "Mean ± sample standard deviation over seeds at each optimizer's chosen learning "
                "rate (learning-rate-free optimizers: their defaults).", None,
                ("sparse-text-vs-sgd", "adam-versatile"))
