"""Significance tests for the comparative claims, and the three verdicts.

A comparison is a *contrast* of independent group means, ``c = Σ_k a_k·mean(x_k) + shift``
(for example Adagrad − SGD, or (Adagrad − SGD on rare words) − (Adagrad − SGD on all words)).
It is decided by Welch's t-test: ``t = c / sqrt(Σ a_k² s_k²/n_k)`` with the Welch–Satterthwaite
degrees of freedom ``(Σ v_k)² / Σ v_k²/(n_k − 1)``, ``v_k = a_k² s_k²/n_k`` (Welch, Biometrika
1947; Satterthwaite, Biometrics 1946), one-sided at ``ALPHA``. Claims built on ranks use a
percentile bootstrap over seeds instead (`bootstrap_share`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

ALPHA = 0.05
BOOTSTRAP_RESAMPLES = 2000

HOLDS = "holds"
NOT_SUPPORTED = "not supported"
INCONCLUSIVE = "inconclusive"

WELCH = "Welch's t-test, one-sided, p < 0.05"
BOOTSTRAP = f"percentile bootstrap over seeds ({BOOTSTRAP_RESAMPLES} resamples), 95 %"


@dataclass(frozen=True)
class Contrast:
    """The result of `welch_contrast`: the estimate and both one-sided p-values."""

    estimate: float
    standard_error: float
    degrees_of_freedom: float
    p_greater: float  # H1: contrast > 0
    p_less: float     # H1: contrast < 0

    @property
    def verdict(self) -> str:
        """``holds`` when significantly > 0, ``not supported`` when significantly < 0."""
        if self.p_greater < ALPHA:
            return HOLDS
        if self.p_less < ALPHA:
            return NOT_SUPPORTED
        return INCONCLUSIVE

    def to_json(self) -> dict:
        """Rounded fields for metrics.json."""
        return {"estimate": _round(self.estimate), "standard_error": _round(self.standard_error),
                "df": _round(self.degrees_of_freedom), "p_greater": _round(self.p_greater),
                "p_less": _round(self.p_less), "verdict": self.verdict}


UNDECIDED = Contrast(math.nan, math.nan, math.nan, 1.0, 1.0)


def _round(x: float) -> float | None:
    return float(f"{x:.4g}") if math.isfinite(x) else None


def _finite(values: Iterable[float]) -> np.ndarray:
    v = np.asarray(list(values), dtype=np.float64)
    return v[np.isfinite(v)]


def welch_contrast(coefficients: Mapping[Hashable, float],
                   samples: Mapping[Hashable, Iterable[float]], shift: float = 0.0) -> Contrast:
    """Welch's test of ``Σ_k coefficients[k]·mean(samples[k]) + shift`` against 0.

    Args:
      coefficients: the contrast's coefficient per group (for example
        ``{("r8", "adagrad"): 1, ("r8", "sgd"): -1}``); the groups are independent.
      samples: each group's measurements (one per seed; non-finite values, from diverged
        runs, are left out).
      shift: a constant added to the contrast (a margin, as in "within 1 point").

    Returns `UNDECIDED` (both p-values 1) when a group has fewer than two finite values: one
    seed measures no noise, so nothing can be shown.
    """
    live = [(a, _finite(samples[k])) for k, a in coefficients.items() if a != 0.0]
    if any(len(v) < 2 for _, v in live):
        return UNDECIDED
    estimate = sum(a * v.mean() for a, v in live) + shift
    parts = [a * a * v.var(ddof=1) / len(v) for a, v in live]
    variance = sum(parts)
    if variance == 0.0:
        sign = (estimate > 0) - (estimate < 0)
        return Contrast(estimate, 0.0, math.inf, 0.0 if sign > 0 else 1.0, 0.0 if sign < 0 else 1.0)
    df = variance ** 2 / sum(p * p / (len(v) - 1) for p, (_, v) in zip(parts, live) if p > 0)
    t = estimate / math.sqrt(variance)
    from scipy.stats import t as student_t

    return Contrast(estimate, math.sqrt(variance), df, float(student_t.sf(t, df)),
                    float(student_t.cdf(t, df)))


def bootstrap_share(groups: Sequence[Iterable[float]],
                    statistic: Callable[[np.ndarray], np.ndarray], seed: int = 0) -> float:
    """The share of bootstrap resamples for which ``statistic`` is true.

    Each group (one optimizer on one dataset: its seeds' measurements) is resampled with
    replacement independently, `BOOTSTRAP_RESAMPLES` times; ``statistic`` receives the
    resampled group means, shape ``(resamples, groups)``, and returns one bool per resample.
    Returns NaN if a group has fewer than two finite values.
    """
    data = [_finite(g) for g in groups]
    if any(len(v) < 2 for v in data):
        return math.nan
    rng = np.random.default_rng(seed)
    means = np.stack([v[rng.integers(0, len(v), (BOOTSTRAP_RESAMPLES, len(v)))].mean(axis=1)
                      for v in data], axis=1)
    return float(np.mean(statistic(means)))


def bootstrap_verdict(share_true: float, share_false: float) -> str:
    """``holds`` when the statement is true in ≥ 95 % of resamples, ``not supported`` when its
    negation is, else ``inconclusive``."""
    if math.isfinite(share_true) and share_true >= 1 - ALPHA:
        return HOLDS
    if math.isfinite(share_false) and share_false >= 1 - ALPHA:
        return NOT_SUPPORTED
    return INCONCLUSIVE


def all_of(verdicts: Iterable[str]) -> str:
    """A claim required on every dataset (or pair): ``not supported`` if any part is, ``holds``
    if every part does (and there is at least one), else ``inconclusive``."""
    verdicts = list(verdicts)
    if NOT_SUPPORTED in verdicts:
        return NOT_SUPPORTED
    if verdicts and all(v == HOLDS for v in verdicts):
        return HOLDS
    return INCONCLUSIVE
