"""The claims about Adagrad's mechanism, measured directly from the optimizers' state:
per-parameter rates, larger steps for rare features, a step that only shrinks, and remedies
that keep it. No comparison between optimizers' scores is involved, so the verdict is
``holds`` or ``not supported`` (``inconclusive`` when nothing was measured)."""

from __future__ import annotations

import math

import numpy as np

from adagrad.experiments.claims.base import (
    SUBJECT,
    Claim,
    claim,
    fmt,
    measured_verdict,
    primary,
    rounded,
    subject,
)
from adagrad.experiments.data import TextData
from adagrad.experiments.experiment import DatasetResult
from adagrad.experiments.optimizers import ADAGRAD, REMEDY
from adagrad.experiments.training import StepTrace

SPREAD_MIN = 2.0          # p95/p5 of the per-coordinate rates
RANK_CORRELATION_MAX = -0.5
RARE_RATIO_MIN = 2.0      # median rate of words seen in 1 document / of the top 1% words
KEEP_RATIO_MIN = 0.5      # median step at the end / after the first epoch


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation (average ranks for ties)."""
    import pandas as pd

    rx = pd.Series(x).rank().to_numpy()
    ry = pd.Series(y).rank().to_numpy()
    if rx.std() == 0 or ry.std() == 0:
        return math.nan
    return float(np.corrcoef(rx, ry)[0, 1])


def early_index(trace: StepTrace, steps_per_epoch: int) -> int | None:
    """Index of the first snapshot at or after the end of the first epoch."""
    for i, step in enumerate(trace.steps):
        if step >= steps_per_epoch:
            return i
    return None


def keep_ratio(trace: StepTrace, steps_per_epoch: int) -> float:
    """Median effective step at the last snapshot divided by that after the first epoch."""
    i = early_index(trace, steps_per_epoch)
    if i is None or not trace.median:
        return math.nan
    early, late = trace.median[i], trace.median[-1]
    if not (math.isfinite(early) and math.isfinite(late)) or early <= 0:
        return math.nan
    return late / early


def steps_per_epoch(ds: DatasetResult) -> int:
    """Optimizer steps in one epoch of this dataset."""
    n = len(ds.data.train) if isinstance(ds.data, TextData) else len(ds.data.y_train)
    return math.ceil(n / ds.settings.batch_size)


def per_parameter_rates(datasets: list[DatasetResult]) -> Claim:
    """Adagrad gives each parameter its own rate: the rates spread over a wide range."""
    evidence: dict = {}
    ok: list[bool] = []
    notes: list[str] = []
    for ds in primary(datasets):
        entry = {}
        for res in ds.results:
            rates = res.traced.coordinate_rate
            if res.spec.role != ADAGRAD and res.spec.key != "sgd" or rates is None or len(rates) == 0:
                continue
            p5, p50, p95 = np.percentile(rates, [5, 50, 95])
            entry[res.spec.key] = {"coordinates": int(len(rates)), "p5": rounded(p5), "median": rounded(p50),
                                   "p95": rounded(p95), "p95_over_p5": rounded(p95 / p5 if p5 > 0 else math.inf)}
            if res.spec.key == SUBJECT:
                ok.append(p5 > 0 and p95 / p5 >= SPREAD_MIN)
                notes.append(f"{ds.name}: p95/p5 = {fmt(p95 / p5 if p5 > 0 else math.inf)}")
        evidence[ds.name] = entry
    return _measured("per-parameter-rates",
                    f"Adagrad gives each parameter its own learning rate: after training, the 95th "
                    f"percentile of the per-coordinate rates lr/sqrt(G) is at least {SPREAD_MIN:g}× "
                    f"the 5th (textbook formula, every dataset; SGD's ratio is 1 for contrast).",
                    ok, evidence, notes, missing=f"{SUBJECT} did not run")


def rare_features(datasets: list[DatasetResult]) -> Claim:
    """Rare words get larger steps: rate falls with document frequency."""
    evidence: dict = {}
    ok: list[bool] = []
    notes: list[str] = []
    for ds in primary(datasets):
        if not isinstance(ds.data, TextData):
            continue
        res = subject(ds)
        rates = res.traced.word_rate if res else None
        if rates is None:
            continue
        seen = ds.data.doc_freq > 0  # a sampled training set does not hold every word
        df, rates = ds.data.doc_freq[seen], rates[seen]
        rho = spearman(df, rates)
        rare = rates[df == 1]
        top = rates[df >= np.quantile(df, 0.99)]
        ratio = float(np.median(rare) / np.median(top)) if len(rare) and len(top) else math.nan
        ok.append(math.isfinite(rho) and rho <= RANK_CORRELATION_MAX
                  and math.isfinite(ratio) and ratio >= RARE_RATIO_MIN)
        evidence[ds.name] = {
            "optimizer": res.spec.key, "words": int(len(df)), "spearman_rate_vs_doc_freq": rounded(rho),
            "median_rate_words_in_1_doc": rounded(float(np.median(rare)) if len(rare) else math.nan),
            "median_rate_top_1pct_words": rounded(float(np.median(top)) if len(top) else math.nan),
            "rare_over_frequent": rounded(ratio), "words_in_1_doc": int(len(rare)),
            "top_1pct_words": int(len(top))}
        notes.append(f"{ds.name}: ρ = {fmt(rho)}, rare/frequent = {fmt(ratio)}×")
    return _measured("rare-features-get-larger-steps",
                    f"Rare features get larger steps: per word, Adagrad's effective rate falls with "
                    f"the word's document frequency (Spearman ρ ≤ {RANK_CORRELATION_MAX:g}) and words "
                    f"seen in one training document get at least {RARE_RATIO_MIN:g}× the median rate "
                    f"of the 1% most frequent words.",
                    ok, evidence, notes, missing="no text dataset with an Adagrad run")


def step_shrinks(datasets: list[DatasetResult]) -> Claim:
    """Adagrad's per-coordinate step never grows (lr_decay = 0)."""
    evidence: dict = {}
    ok: list[bool] = []
    notes: list[str] = []
    for ds in primary(datasets):
        spe = steps_per_epoch(ds)
        entry = {}
        for res in ds.results:
            if res.spec.role != ADAGRAD:
                continue
            trace = res.traced.trace
            if not trace.steps or trace.compared == 0:
                continue
            first = early_index(trace, spe) or 0
            entry[res.spec.key] = {
                "coordinate_snapshots_compared": trace.compared,
                "increases": trace.increases,
                "max_relative_increase": rounded(trace.max_relative_increase),
                "median_step_after_epoch_1": rounded(trace.median[first]),
                "median_step_at_end": rounded(trace.median[-1]),
            }
            ok.append(trace.increases == 0)
            notes.append(f"{ds.name}/{res.spec.key}: {trace.increases} increases in "
                         f"{trace.compared:,} comparisons")
        evidence[ds.name] = entry
    return _measured("step-size-shrinks",
                    "Adagrad's step only ever shrinks: between any two snapshots of a run, no "
                    "coordinate's effective rate lr/sqrt(G) grew (relative tolerance 1e-6), for "
                    "every plain Adagrad variant on every dataset.",
                    ok, evidence, notes, missing="no plain Adagrad run was traced")


def remedies(datasets: list[DatasetResult]) -> Claim:
    """RMSprop, Adadelta, Adam, a decaying or reset sum and a warm-up keep the step size."""
    evidence: dict = {}
    ok: list[bool] = []
    notes: list[str] = []
    variants: dict[str, bool] = {}
    for ds in primary(datasets):
        spe = steps_per_epoch(ds)
        plain = subject(ds)
        if plain is None:
            continue
        base = keep_ratio(plain.traced.trace, spe)
        entry: dict = {plain.spec.key: {"ratio": rounded(base), "role": "plain Adagrad"}}
        for res in ds.results:
            if res.spec.role != REMEDY:
                continue
            ratio = keep_ratio(res.traced.trace, spe)
            keeps = (math.isfinite(ratio) and ratio >= KEEP_RATIO_MIN
                     and (not math.isfinite(base) or ratio > base))
            entry[res.spec.key] = {"ratio": rounded(ratio), "keeps": keeps}
            variants[res.spec.key] = variants.get(res.spec.key, True) and keeps
            ok.append(keeps)
        evidence[ds.name] = {"median_step_end_over_after_epoch_1": entry, "steps_per_epoch": spe}
        notes.append(f"{ds.name}: end/epoch-1 " + ", ".join(
            f"{k} {fmt(v['ratio'] if v['ratio'] is not None else math.nan)}"
            for k, v in entry.items()))
    if variants:
        evidence = {"keeps_on_every_dataset": variants} | evidence
        failing = [k for k, v in variants.items() if not v]
        notes.insert(0, "every remedy keeps it" if not failing else f"not kept by {', '.join(failing)}")
    return _measured("remedies-keep-step-size",
                    f"The remedies keep the step size: for RMSprop, Adadelta, Adam, Adagrad with "
                    f"a decaying (or reset) sum and Adagrad with a smaller learning rate at the "
                    f"start (a warm-up over the first epoch, judged as its own variant), the "
                    f"median effective step at the end of training is "
                    f"at least {KEEP_RATIO_MIN:g}× its value after the first epoch and above plain "
                    f"Adagrad's ratio, on every dataset.",
                    ok, evidence, notes, missing="no remedy and plain Adagrad ran together")


def _measured(claim_id: str, text: str, ok: list[bool], evidence: dict, notes: list[str],
              missing: str) -> Claim:
    headline = f"{sum(ok)} of {len(ok)} measurements pass; {notes[0]}" if notes else ""
    return claim(claim_id, text, measured_verdict(ok), evidence, notes, missing,
                 headline=headline)
