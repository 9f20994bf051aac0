"""The founding document's claims, judged from the measurements.

Each claim states its test up front; ``holds`` is computed from the numbers, never assumed.
A claim measured on several datasets holds only if it holds on every one of them; a claim
that this run had no data for (for example no text dataset) does not hold, and its evidence
says it was not measured.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from adagrad.experiments.data import CLASSIFICATION, TextData
from adagrad.experiments.experiment import DatasetResult, OptimizerResult
from adagrad.experiments.optimizers import ADAGRAD, REMEDY
from adagrad.experiments.training import StepTrace

#: The Adagrad run the claims are judged on: the founding formula (ε inside the root).
SUBJECT = "adagrad-founding"

SPREAD_MIN = 2.0          # p95/p5 of the per-coordinate rates
RANK_CORRELATION_MAX = -0.5
RARE_RATIO_MIN = 2.0      # median rate of words seen in 1 document / of the top 1% words
KEEP_RATIO_MIN = 0.5      # median step at the end / after the first epoch


@dataclass
class Claim:
    """One claim and its verdict: ``{"id", "claim", "holds", "evidence"}`` in metrics.json."""

    id: str
    claim: str
    holds: bool
    evidence: dict
    summary: str = ""

    def to_json(self) -> dict:
        """The claim as a JSON object (``summary`` is the one-line gist of the evidence)."""
        return {"id": self.id, "claim": self.claim, "holds": bool(self.holds),
                "evidence": self.evidence, "summary": self.summary}


def _r(x: float, digits: int = 4) -> float | None:
    if x is None or not math.isfinite(x):
        return None
    return float(f"{x:.{digits}g}")


def _fmt(x: float) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.3g}"


def _pct(mean: float, std: float) -> str:
    return "n/a" if not math.isfinite(mean) else f"{100 * mean:.1f}±{100 * std:.1f}%"


def _subject(ds: DatasetResult) -> OptimizerResult | None:
    return ds.result(SUBJECT) or next((r for r in ds.results if r.spec.role == ADAGRAD), None)


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


def _verdict(claim_id: str, claim: str, ok: list[bool], evidence: dict, notes: list[str],
             missing: str) -> Claim:
    """The claim holds when it was measured at least once and every measurement passed;
    unmeasured, it is reported as not holding, with ``missing`` as the reason."""
    if not ok:
        evidence = {"measured": False, "reason": missing} | evidence
    return Claim(claim_id, claim, bool(ok) and all(ok), evidence, "; ".join(notes) or "not measured")


def per_parameter_rates(datasets: list[DatasetResult]) -> Claim:
    """Adagrad gives each parameter its own rate: the rates spread over a wide range."""
    evidence: dict = {}
    ok: list[bool] = []
    notes: list[str] = []
    for ds in datasets:
        entry = {}
        for res in ds.results:
            rates = res.runs[0].coordinate_rate
            if res.spec.role != ADAGRAD and res.spec.key != "sgd" or rates is None or len(rates) == 0:
                continue
            p5, p50, p95 = np.percentile(rates, [5, 50, 95])
            entry[res.spec.key] = {"coordinates": int(len(rates)), "p5": _r(p5), "median": _r(p50),
                                   "p95": _r(p95), "p95_over_p5": _r(p95 / p5 if p5 > 0 else math.inf)}
            if res.spec.key == SUBJECT:
                ok.append(p5 > 0 and p95 / p5 >= SPREAD_MIN)
                notes.append(f"{ds.info.name}: p95/p5 = {_fmt(p95 / p5 if p5 > 0 else math.inf)}")
        evidence[ds.info.name] = entry
    return _verdict("per-parameter-rates",
                    f"Adagrad gives each parameter its own learning rate: after training, the 95th "
                    f"percentile of the per-coordinate rates lr/sqrt(G) is at least {SPREAD_MIN:g}× "
                    f"the 5th (founding formula, every dataset; SGD's ratio is 1 for contrast).",
                    ok, evidence, notes, missing=f"{SUBJECT} did not run")


def rare_features(datasets: list[DatasetResult]) -> Claim:
    """Rare words get larger steps: rate falls with document frequency."""
    evidence: dict = {}
    ok: list[bool] = []
    notes: list[str] = []
    for ds in datasets:
        if ds.info.task != CLASSIFICATION or not isinstance(ds.data, TextData):
            continue
        res = _subject(ds)
        rates = res.runs[0].word_rate if res else None
        if rates is None:
            continue
        df = ds.data.doc_freq
        rho = spearman(df, rates)
        rare = rates[df == 1]
        top = rates[df >= np.quantile(df, 0.99)]
        ratio = float(np.median(rare) / np.median(top)) if len(rare) and len(top) else math.nan
        ok.append(math.isfinite(rho) and rho <= RANK_CORRELATION_MAX
                  and math.isfinite(ratio) and ratio >= RARE_RATIO_MIN)
        evidence[ds.info.name] = {
            "optimizer": res.spec.key, "words": int(len(df)), "spearman_rate_vs_doc_freq": _r(rho),
            "median_rate_words_in_1_doc": _r(float(np.median(rare)) if len(rare) else math.nan),
            "median_rate_top_1pct_words": _r(float(np.median(top)) if len(top) else math.nan),
            "rare_over_frequent": _r(ratio), "words_in_1_doc": int(len(rare)),
            "top_1pct_words": int(len(top))}
        notes.append(f"{ds.info.name}: ρ = {_fmt(rho)}, rare/frequent = {_fmt(ratio)}×")
    return _verdict("rare-features-get-larger-steps",
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
    for ds in datasets:
        spe = steps_per_epoch(ds)
        entry = {}
        for res in ds.results:
            if res.spec.role != ADAGRAD:
                continue
            trace = res.runs[0].trace
            if not trace.steps or trace.compared == 0:
                continue
            first = early_index(trace, spe) or 0
            entry[res.spec.key] = {
                "coordinate_snapshots_compared": trace.compared,
                "increases": trace.increases,
                "max_relative_increase": _r(trace.max_relative_increase),
                "median_step_after_epoch_1": _r(trace.median[first]),
                "median_step_at_end": _r(trace.median[-1]),
            }
            ok.append(trace.increases == 0)
            notes.append(f"{ds.info.name}/{res.spec.key}: {trace.increases} increases in "
                         f"{trace.compared:,} comparisons")
        evidence[ds.info.name] = entry
    return _verdict("step-size-shrinks",
                    "Adagrad's step only ever shrinks: between any two snapshots of a run, no "
                    "coordinate's effective rate lr/sqrt(G) grew (relative tolerance 1e-6), for "
                    "every plain Adagrad variant on every dataset.",
                    ok, evidence, notes, missing="no plain Adagrad run was traced")


def remedies(datasets: list[DatasetResult]) -> Claim:
    """RMSprop, Adadelta, Adam and decaying/resetting the sum keep the step from collapsing."""
    evidence: dict = {}
    ok: list[bool] = []
    notes: list[str] = []
    for ds in datasets:
        spe = steps_per_epoch(ds)
        subject = _subject(ds)
        if subject is None:
            continue
        base = keep_ratio(subject.runs[0].trace, spe)
        entry: dict = {subject.spec.key: {"ratio": _r(base), "role": "plain Adagrad"}}
        for res in ds.results:
            if res.spec.role != REMEDY:
                continue
            ratio = keep_ratio(res.runs[0].trace, spe)
            keeps = (math.isfinite(ratio) and ratio >= KEEP_RATIO_MIN
                     and (not math.isfinite(base) or ratio > base))
            entry[res.spec.key] = {"ratio": _r(ratio), "keeps": keeps}
            ok.append(keeps)
        evidence[ds.info.name] = {"median_step_end_over_after_epoch_1": entry,
                                  "steps_per_epoch": spe}
        notes.append(f"{ds.info.name}: end/epoch-1 " + ", ".join(
            f"{k} {_fmt(v['ratio'] if v['ratio'] is not None else math.nan)}"
            for k, v in entry.items()))
    return _verdict("remedies-keep-step-size",
                    f"The remedies keep the step size: for RMSprop, Adadelta, Adam and Adagrad with "
                    f"a decaying (or reset) sum, the median effective step at the end of training is "
                    f"at least {KEEP_RATIO_MIN:g}× its value after the first epoch and above plain "
                    f"Adagrad's ratio, on every dataset.",
                    ok, evidence, notes, missing="no remedy and plain Adagrad ran together")


def sparse_text_vs_sgd(datasets: list[DatasetResult]) -> Claim:
    """On sparse text, Adagrad beats SGD by more than the seed-to-seed noise."""
    evidence: dict = {}
    ok: list[bool] = []
    notes: list[str] = []
    for ds in datasets:
        if ds.info.task != CLASSIFICATION:
            continue
        sgd, subject = ds.result("sgd"), _subject(ds)
        if sgd is None or subject is None:
            continue
        margin = subject.mean - sgd.mean
        noise = max(subject.std, sgd.std)
        ok.append(math.isfinite(margin) and margin > noise)
        entry = {"metric": "test accuracy", "seeds": len(subject.runs),
                 "margin": _r(margin), "noise (larger std)": _r(noise)}
        for res in ds.results:
            entry[res.spec.key] = {"mean": _r(res.mean), "std": _r(res.std), "lr": res.lr}
        evidence[ds.info.name] = entry
        notes.append(f"{ds.info.name}: Adagrad {_pct(subject.mean, subject.std)} vs SGD "
                     f"{_pct(sgd.mean, sgd.std)} ({len(subject.runs)} seeds)")
    return _verdict("sparse-text-vs-sgd",
                    "On sparse text Adagrad does well: with each optimizer's learning rate tuned on "
                    "the validation split, Adagrad's (founding formula, sparse gradients) mean test "
                    "accuracy beats SGD's by more than the larger of their standard deviations over "
                    "seeds, on every text dataset.",
                    ok, evidence, notes, missing="no text dataset with both SGD and Adagrad")


CLAIMS: tuple[Callable[[list[DatasetResult]], Claim], ...] = (
    per_parameter_rates, rare_features, step_shrinks, remedies, sparse_text_vs_sgd)


def judge(datasets: list[DatasetResult]) -> list[Claim]:
    """Every claim, judged on ``datasets``."""
    return [claim(datasets) for claim in CLAIMS]
