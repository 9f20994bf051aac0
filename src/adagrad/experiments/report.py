"""The report: metrics.json, index.html (every plot by relative path, tables, the claims) and
the terminal summary table."""

from __future__ import annotations

import datetime as _dt
import html
import json
import math
import platform
from pathlib import Path

import numpy as np
import torch

from adagrad import __version__
from adagrad.experiments.claims import Claim
from adagrad.experiments.experiment import DatasetResult, OptimizerResult
from adagrad.experiments.optimizers import unavailable
from adagrad.experiments.figure_style import Plot
from adagrad.experiments.statistics import HOLDS, INCONCLUSIVE, NOT_SUPPORTED

GENERATOR = "adagrad compare"
MARKER = ".adagrad-report"

DENSE_NOTE = ("torch.optim's RMSprop, Adadelta and Adam refuse sparse gradients, so they train "
              "the same linear text model with a dense embedding gradient "
              "(nn.EmbeddingBag(sparse=False)); every Adagrad variant and SGD get sparse "
              "gradients (nn.EmbeddingBag(sparse=True)). The models and data are identical.")
DECAY_NOTE = ("Adagrad with accumulator_decay ρ and RMSprop with α = ρ take the same steps when "
              "RMSprop's learning rate is Adagrad's times sqrt(1-ρ) (G ← ρG + g² is v/(1-ρ) for "
              "v ← ρv + (1-ρ)g²), up to ε; adagrad.Adagrad applies the decay lazily to sparse rows, "
              "so this holds for its sparse gradients too. Identical rows for the two in the "
              "tables (for example ρ = 0.99 at lr 0.1 and RMSprop at lr 0.01) are this identity.")
FAIRNESS_NOTE = ("Fair comparison: each optimizer's learning rate is chosen on a validation split "
                 "(20% of the training data, never the test set) with seed 0, as the rate with "
                 "the lowest final validation loss, from a grid of two rates per decade that is "
                 "the same lattice for every optimizer and grows until the best rate is interior "
                 "(or the next rate diverges); only Adagrad's (textbook formula) and SGD's grids "
                 "also grow until their usable range is closed on both sides. The chosen rate is "
                 "then trained with fresh seeds 1 … N (the grid's own run is not one of them) "
                 "and evaluated once on the test set. Every other choice (the best optimizer of "
                 "a dataset, the better of an anchor's two variants) is made on the validation "
                 "split too. Learning-rate-free optimizers run with their defaults and no grid; "
                 "DoG and L-DoG also with their authors' iterate averaging, the better of the two "
                 "chosen on validation.")
STATISTICS_NOTE = ("Verdicts: a comparison between optimizers holds only when it is significant "
                   "over the seeds (Welch's t-test, one-sided, p < 0.05, on the contrast of "
                   "group means the claim names, shown with its 90 % confidence interval; Adam's "
                   "ranks: a percentile bootstrap over seeds, 95 %). A claim made on every "
                   "dataset holds only if every part is significant (intersection–union test, "
                   "level 0.05), and is not supported only if some part's opposite survives "
                   "Holm–Bonferroni at family-wise level 0.05; otherwise inconclusive. "
                   "no-manual-tuning is judged by a rule (usable ranges robust to ±2 seed "
                   "standard deviations), not a p-value; its error rates are simulated in the "
                   "tests. A seed that diverged or ended worse than the trivial predictor "
                   "(training majority class or mean) is failed and scored as the worse of its "
                   "metric and the trivial predictor's; nothing is dropped. --quick (one seed, "
                   "short training) declares no comparison in either direction.")


def _finite(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None


def _gradients(ds: DatasetResult, res: OptimizerResult) -> str:
    return "sparse" if res.spec.sparse and ds.sparse else "dense"


def run_json(ds: DatasetResult, res: OptimizerResult) -> dict:
    """One entry of metrics.json's ``runs``."""
    trace = res.traced.trace
    epochs, train_loss = res.mean_curve("train_loss")
    _, val_loss = res.mean_curve("val_loss")
    return {
        "dataset": ds.name,
        "task": ds.info.task,
        "kind": ds.info.kind,
        "variant_of": ds.variant_of,
        "optimizer": res.spec.key,
        "label": res.spec.label,
        "role": res.spec.role,
        "gradients": _gradients(ds, res),
        "lr": res.lr,
        "lr_at_grid_edge": res.lr_at_grid_edge,
        "grid_limited": res.grid_limited,
        "lr_grid": [{"lr": g.lr, "val_loss": _finite(g.val_loss), "val_metric": _finite(g.val_metric),
                     "diverged": g.diverged} for g in res.grid],
        "test_metric": {"name": res.metric.name, "mean": _finite(res.mean), "std": _finite(res.std),
                        "values": [_finite(v) for v in res.test_values]},
        "validation_metric": {"name": res.metric.name,
                              "values": [_finite(v) for v in res.val_values]},
        "seeds": len(res.runs),
        "seed_ids": [r.seed for r in res.runs],
        "raw_test_values": [_finite(r.test_metric) for r in res.runs],
        "diverged_seeds": res.diverged_seeds,
        "failed_seeds": res.failed_seeds,
        "trivial_predictor": ({"val": _finite(res.trivial.val), "test": _finite(res.trivial.test)}
                              if res.trivial else None),
        "seconds": round(sum(r.seconds for r in res.runs), 2),
        "curves": {
            "epoch": epochs,
            "train_loss": [_finite(v) for v in train_loss],
            "val_loss": [_finite(v) for v in val_loss],
            "median_effective_step": {"step": trace.steps,
                                      "median": [_finite(v) for v in trace.median]},
        },
    }


def metrics_json(datasets: list[DatasetResult], claims: list[Claim], plots: list[Plot],
                 settings: dict) -> dict:
    """The whole metrics.json document."""
    return {
        "generator": GENERATOR,
        "adagrad_version": __version__,
        "torch_version": torch.__version__,
        "python": platform.python_version(),
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "settings": settings,
        "datasets": [{"name": ds.name, "task": ds.info.task, "kind": ds.info.kind,
                      "variant_of": ds.variant_of, "held_out": ds.info.heldout,
                      "title": ds.data.title,
                      "source": ds.data.source, "description": ds.data.describe(),
                      "epochs": ds.settings.epochs, "batch_size": ds.settings.batch_size,
                      "seconds": round(ds.seconds, 1)} for ds in datasets],
        "runs": [run_json(ds, res) for ds in datasets for res in ds.results],
        "claims": [c.to_json() for c in claims],
        "plots": [{"file": p.file, "title": p.title, "caption": p.caption} for p in plots],
        "unavailable_optimizers": [{"optimizer": s.key, "why": s.missing} for s in unavailable()],
        "notes": [FAIRNESS_NOTE, STATISTICS_NOTE, DENSE_NOTE, DECAY_NOTE],
    }


def _metric_text(res: OptimizerResult) -> str:
    if not math.isfinite(res.mean):
        return "diverged"
    if res.metric.higher_is_better:
        return f"{100 * res.mean:.2f} ± {100 * res.std:.2f} %"
    return f"{res.mean:,.4g} ± {res.std:,.3g}"


def _val_text(res: OptimizerResult) -> str:
    if not res.grid:
        values = res.val_values[np.isfinite(res.val_values)]
        return ("no grid; mean " + (f"{100 * values.mean():.2f} %" if res.metric.higher_is_better
                                    else f"{values.mean():,.4g}")) if len(values) else "diverged"
    point = next(g for g in res.grid if g.lr == res.lr)
    if point.diverged or not math.isfinite(point.val_metric):
        return "diverged"
    metric = (f"{100 * point.val_metric:.2f} %" if res.metric.higher_is_better
              else f"{point.val_metric:,.4g}")
    return f"{point.val_loss:.4g} / {metric}"


def _lr_text(res: OptimizerResult) -> str:
    if res.lr is None:
        return "none (defaults)"
    return f"{res.lr:g}" + (" (edge)" if res.lr_at_grid_edge else "")


VERDICT_WORDS = {HOLDS: "holds", NOT_SUPPORTED: "NOT SUPPORTED", INCONCLUSIVE: "inconclusive"}


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for i, row in enumerate(rows):
        lines.append("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
        if i == 0:
            lines.append("  " + "  ".join("-" * w for w in widths))
    return lines


def terminal_table(datasets: list[DatasetResult], claims: list[Claim], report_path: str,
                   seconds: float) -> str:
    """The plain-text summary printed after a run: the verdicts first, then each dataset."""
    lines = ["Claims (judged from the measurements):"]
    width = max(len(c.id) for c in claims)
    for c in claims:
        lines.append(f"  {c.id.ljust(width)}  {VERDICT_WORDS[c.verdict].ljust(13)}  "
                     f"{c.headline or c.summary}")
    for ds in datasets:
        metric = "test accuracy" if ds.metric.higher_is_better else "test RMSE"
        lines.append(f"\n{ds.data.title}  ({ds.data.describe()})")
        rows = [("optimizer", "grads", "lr", f"{metric} (mean ± std)")]
        rows += [(r.spec.label, _gradients(ds, r), _lr_text(r), _metric_text(r)) for r in ds.results]
        lines += _table(rows)
    lines.append(f"\nReport: {report_path}/index.html  ({seconds:.0f} s)")
    return "\n".join(lines)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1180px;
color:#222;padding:0 1em;line-height:1.45}
h1{font-size:1.6em} h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:1em 0;font-size:.9em} th,td{border:1px solid #ddd;padding:.35em .6em;
text-align:left;vertical-align:top} th{background:#f4f4f4}
td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.holds{background:#e6f4ea;color:#135c2a;font-weight:600} .fails{background:#fde8e8;color:#8a1c1c;font-weight:600}
.unclear{background:#f1f1f1;color:#555;font-weight:600}
figure{margin:1.5em 0} figure img{max-width:100%;border:1px solid #eee} figcaption{font-size:.9em;color:#555}
pre{background:#f8f8f8;padding:.6em;overflow-x:auto;font-size:.8em;max-width:100%}
.note{background:#fff8e1;border-left:4px solid #f0c040;padding:.5em 1em}
.small{font-size:.85em;color:#666}
"""


def _e(x: object) -> str:
    return html.escape(str(x))


def _plot_anchor(p: Plot) -> str:
    return "plot-" + p.file.removesuffix(".png")


def verdicts_html(claims: list[Claim], plots: list[Plot]) -> str:
    """The report's opening: one line per claim (its deciding figures), its verdict, the test,
    the multiplicity rule and the failed seeds, linked to its plot and evidence."""
    rows = []
    for c in claims:
        shown = [p for p in plots if c.id in p.claims]
        links = " · ".join(f"<a href='#{_plot_anchor(p)}'>{_e(p.title)}</a>" for p in shown[:2])
        rows.append(f"<tr><td><a href='#claim-{_e(c.id)}'><code>{_e(c.id)}</code></a></td>"
                    f"<td class='{_CLASS[c.verdict]}'>{_e(c.verdict)}</td>"
                    f"<td>{_e(c.headline or c.summary)}</td><td class='small'>{_e(c.test)}</td>"
                    f"<td class='small'>{_e(c.multiplicity)}</td><td class='num'>{c.failed_seeds}</td>"
                    f"<td class='small'>{links or '—'}</td></tr>")
    return ("<table><tr><th>claim</th><th>verdict</th><th>in one line</th><th>test</th>"
            "<th>multiplicity</th><th>failed seeds</th><th>plot</th></tr>"
            + "".join(rows) + "</table>")


_CLASS = {HOLDS: "holds", NOT_SUPPORTED: "fails", INCONCLUSIVE: "unclear"}


def _claims_html(claims: list[Claim]) -> str:
    rows = []
    for c in claims:
        test = c.evidence.get("test", "measured directly")
        rows.append(
            f"<tr id='claim-{_e(c.id)}'><td><code>{_e(c.id)}</code></td><td>{_e(c.claim)}"
            f"<br><span class='small'>test: {_e(test)}</span></td>"
            f"<td class='{_CLASS[c.verdict]}'>{_e(c.verdict)}</td><td>{_e(c.summary)}"
            f"<details><summary>evidence</summary><pre>{_e(json.dumps(c.evidence, indent=2, ensure_ascii=False))}"
            f"</pre></details></td></tr>")
    return ("<table><tr><th>id</th><th>claim (and the test applied)</th><th>verdict</th>"
            "<th>evidence</th></tr>" + "".join(rows) + "</table>")


def _results_html(ds: DatasetResult) -> str:
    metric = "test accuracy" if ds.metric.higher_is_better else "test RMSE"
    rows = []
    for res in ds.results:
        grid = ", ".join(f"{g.lr:g}" for g in res.grid) or "—"
        limited = " <span class='small'>(grid limit reached)</span>" if res.grid_limited else ""
        div = (f" <span class='small'>({res.failed_seeds} seed(s) failed, scored as the trivial "
               f"predictor or worse)</span>" if res.failed_seeds else "")
        rows.append(f"<tr><td>{_e(res.spec.label)}<br><span class='small'>{_e(res.spec.note)}</span></td>"
                    f"<td>{_gradients(ds, res)}</td><td class='num'>{_e(_lr_text(res))}</td>"
                    f"<td class='small'>{grid}{limited}</td>"
                    f"<td class='num'>{_e(_val_text(res))}</td><td class='num'>{_e(_metric_text(res))}{div}</td></tr>")
    return (f"<p>{_e(ds.data.describe())}. Source: <code>{_e(ds.data.source)}</code>. "
            f"{ds.settings.epochs} epochs, batch {ds.settings.batch_size}, {ds.seconds:.0f} s of "
            f"training for the reported runs.</p>"
            f"<table><tr><th>optimizer</th><th>gradients</th><th>chosen lr</th><th>grid</th>"
            f"<th>validation loss / {'accuracy' if ds.metric.higher_is_better else 'RMSE'} (seed 0)</th>"
            f"<th>{metric}, mean ± std over {len(ds.results[0].runs)} seed(s)</th></tr>"
            + "".join(rows) + "</table>")


def _figure(p: Plot) -> str:
    return (f"<figure id='{_plot_anchor(p)}'><img src='{_e(p.file)}' alt='{_e(p.title)}'>"
            f"<figcaption><b>{_e(p.title)}.</b> "
            f"{_e(p.caption)}</figcaption></figure>")


def index_html(datasets: list[DatasetResult], claims: list[Claim], plots: list[Plot],
               settings: dict) -> str:
    """The report page: claims, result tables, every plot (relative paths), notes."""
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
             f"<title>adagrad compare report</title><style>{_CSS}</style></head><body>",
             "<h1>Adagrad's claims, measured on real data</h1>",
             f"<p class='small'>adagrad {_e(__version__)}, torch {_e(torch.__version__)}; "
             f"command <code>{_e(settings.get('command', 'adagrad compare'))}</code>; "
             f"{settings.get('seeds')} seed(s){', quick mode' if settings.get('quick') else ''}; "
             f"wall time {settings.get('wall_seconds', 0):.0f} s.</p>",
             "<h2>Verdicts</h2>", verdicts_html(claims, plots),
             "<h2>Claims and their evidence</h2>", _claims_html(claims)]
    general = [p for p in plots if p.dataset is None]
    for p in general:
        parts.append(_figure(p))
    for ds in datasets:
        kind = "sparse text" if ds.sparse else f"dense {ds.info.task}"
        parts.append(f"<h2>{_e(ds.data.title)} <span class='small'>({_e(kind)})</span></h2>")
        parts.append(_results_html(ds))
        for p in plots:
            if p.dataset == ds.name:
                parts.append(_figure(p))
    missing = unavailable()
    parts.append("<h2>Notes</h2><ul>")
    parts.append(f"<li>{_e(FAIRNESS_NOTE)}</li><li>{_e(STATISTICS_NOTE)}</li><li>{_e(DENSE_NOTE)}</li>")
    parts.append(f"<li>{_e(DECAY_NOTE)}</li>")
    parts.append("<li>Effective learning rate: the factor that multiplies a coordinate's gradient "
                 "in the update, read from the optimizer state (Adagrad lr/sqrt(G), with ε as "
                 "configured; RMSprop lr/sqrt(v); Adam lr/sqrt(v̂) per unit of bias-corrected "
                 "momentum; Adadelta lr·sqrt(Δ+ε)/sqrt(v+ε)). Medians are over coordinates that "
                 "have received a gradient.</li>")
    if missing:
        parts.append(f"<li>Not installed here (skipped): "
                     f"{', '.join(f'{_e(s.label)} ({_e(s.missing)})' for s in missing)}.</li>")
    parts.append("<li>Full numbers: <a href='metrics.json'>metrics.json</a>.</li></ul>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(folder: Path, datasets: list[DatasetResult], claims: list[Claim],
                 plots: list[Plot], settings: dict) -> dict:
    """Write metrics.json, index.html and the marker file into ``folder``; return the metrics."""
    metrics = metrics_json(datasets, claims, plots, settings)
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2, ensure_ascii=False) + "\n",
                                         encoding="utf-8")
    (folder / "index.html").write_text(index_html(datasets, claims, plots, settings), encoding="utf-8")
    (folder / MARKER).write_text(f"{GENERATOR}\n", encoding="utf-8")
    return metrics
