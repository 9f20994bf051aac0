"""Significance tests for the comparative claims, their family-wise error control, and the
three verdicts.

A comparison is a *contrast* of independent group means, ``c = Σ_k a_k·mean(x_k) + shift``
(for example Adagrad − SGD, or (Adagrad − SGD on rare words) − (Adagrad − SGD on all words)).
It is decided by Welch's t-test: ``t = c / sqrt(Σ a_k² s_k²/n_k)`` with the Welch–Satterthwaite
degrees of freedom ``(Σ v_k)² / Σ v_k²/(n_k − 1)``, ``v_k = a_k² s_k²/n_k`` (Welch, Biometrika
1947; Satterthwaite, Biometrics 1946), one-sided at ``ALPHA``, with the 90 % two-sided
confidence interval (the interval whose one-sided halves are the tests). Claims built on ranks
use a percentile bootstrap over seeds instead (`bootstrap_means`).

Every value is used: a seed that failed (diverged, or ended worse than the trivial predictor)
is scored, never dropped (`experiment.OptimizerResult.test_values`).

A claim made "on every dataset" is a family of such tests, and its verdict controls the error
in both directions (`family_verdict`):

- ``holds`` needs every part to pass at ``ALPHA``: an intersection–union test, whose
  probability of a false ``holds`` is at most ``ALPHA`` with no correction (Berger, Technometrics
  1982);
- ``not supported`` needs at least one part's opposite to be rejected by Holm's step-down
  procedure at family-wise level ``ALPHA`` (Holm, Scand. J. Statist. 1979), so a claim that is
  true on every part is called ``not supported`` with probability at most ``ALPHA``.

Every function accepts a leading batch of draws (``(..., n)`` arrays), so the simulations in
the tests run the judges' own arithmetic on thousands of simulated studies at once.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

ALPHA = 0.05
BOOTSTRAP_RESAMPLES = 2000

HOLDS = "holds"
NOT_SUPPORTED = "not supported"
INCONCLUSIVE = "inconclusive"

WELCH = "Welch's t-test, one-sided, p < 0.05"
BOOTSTRAP = f"percentile bootstrap over seeds ({BOOTSTRAP_RESAMPLES} resamples), 95 %"
#: How a family of parts is decided (`family_verdict`); stated in each claim's evidence.
MULTIPLICITY = ("holds: every part significant at 0.05 (intersection–union test); "
                "not supported: some part's opposite significant after Holm–Bonferroni at 0.05")
SINGLE = "one test: no multiplicity"


@dataclass(frozen=True)
class Contrast:
    """The result of `welch_contrast`: the estimate, its 90 % interval and both one-sided
    p-values."""

    estimate: float
    standard_error: float
    degrees_of_freedom: float
    p_greater: float  # H1: contrast > 0
    p_less: float     # H1: contrast < 0
    ci_low: float = math.nan
    ci_high: float = math.nan

    @property
    def verdict(self) -> str:
        """``holds`` when significantly > 0, ``not supported`` when significantly < 0 (this
        part alone; a family is decided by `family_verdict`)."""
        return family_verdict([self])

    def to_json(self) -> dict:
        """Rounded fields for metrics.json."""
        return {"estimate": _round(self.estimate), "ci90": [_round(self.ci_low), _round(self.ci_high)],
                "standard_error": _round(self.standard_error),
                "df": _round(self.degrees_of_freedom), "p_greater": _round(self.p_greater),
                "p_less": _round(self.p_less), "verdict": self.verdict}


UNDECIDED = Contrast(math.nan, math.nan, math.nan, 1.0, 1.0)


def _round(x: float) -> float | None:
    return float(f"{x:.4g}") if math.isfinite(x) else None


@dataclass(frozen=True)
class WelchArrays:
    """`welch` over a batch of draws: every field has the batch's shape."""

    estimate: np.ndarray
    standard_error: np.ndarray
    degrees_of_freedom: np.ndarray
    p_greater: np.ndarray
    p_less: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray


def welch(coefficients: Sequence[float], groups: Sequence[np.ndarray],
          shift: float = 0.0) -> WelchArrays:
    """Welch's test of ``Σ_k coefficients[k]·mean(groups[k]) + shift`` against 0, batched.

    Args:
      coefficients: one coefficient per group (non-zero).
      groups: arrays of shape ``(..., n_k)`` (the same leading shape), at least two values
        each, all finite.
      shift: a constant added to the contrast (a margin, as in "within 1 point").

    With zero variance the contrast is known exactly: p = 0 on the side of its sign, 1 on
    the other (both 1 when it is exactly 0).
    """
    from scipy.stats import t as student_t

    groups = [np.asarray(g, dtype=np.float64) for g in groups]
    a = np.asarray(coefficients, dtype=np.float64)
    estimate = sum(ak * g.mean(axis=-1) for ak, g in zip(a, groups)) + shift
    parts = [ak * ak * g.var(axis=-1, ddof=1) / g.shape[-1] for ak, g in zip(a, groups)]
    variance = sum(parts)
    denominator = sum(p * p / (g.shape[-1] - 1) for p, g in zip(parts, groups))
    exact = variance <= 0.0
    safe_var = np.where(exact, 1.0, variance)
    df = np.where(exact, np.inf, safe_var ** 2 / np.where(exact, 1.0, denominator))
    se = np.sqrt(np.where(exact, 0.0, variance))
    t = estimate / np.sqrt(safe_var)
    p_greater = np.where(exact, np.where(estimate > 0, 0.0, 1.0), student_t.sf(t, df))
    p_less = np.where(exact, np.where(estimate < 0, 0.0, 1.0), student_t.cdf(t, df))
    half = np.where(exact, 0.0, student_t.ppf(1 - ALPHA, np.where(exact, 1.0, df)) * se)
    return WelchArrays(np.asarray(estimate), se, df, np.asarray(p_greater), np.asarray(p_less),
                       np.asarray(estimate - half), np.asarray(estimate + half))


def welch_contrast(coefficients: Mapping[Hashable, float],
                   samples: Mapping[Hashable, Iterable[float]], shift: float = 0.0) -> Contrast:
    """Welch's test of ``Σ_k coefficients[k]·mean(samples[k]) + shift`` against 0.

    Args:
      coefficients: the contrast's coefficient per group (for example
        ``{("r8", "adagrad"): 1, ("r8", "sgd"): -1}``); the groups are independent.
      samples: each group's measurements (one per seed, failed seeds already scored).

    Returns `UNDECIDED` (both p-values 1) when a group has fewer than two values or a value
    that is not finite (nothing is dropped: an unscored value decides nothing).
    """
    live = [(a, np.asarray(list(samples[k]), dtype=np.float64))
            for k, a in coefficients.items() if a != 0.0]
    if not live or any(len(v) < 2 or not np.isfinite(v).all() for _, v in live):
        return UNDECIDED
    w = welch([a for a, _ in live], [v for _, v in live], shift)
    return Contrast(float(w.estimate), float(w.standard_error), float(w.degrees_of_freedom),
                    float(w.p_greater), float(w.p_less), float(w.ci_low), float(w.ci_high))


def holm_rejects(p_values: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """Holm's step-down procedure over the last axis: which hypotheses are rejected.

    The ``i``-th smallest p-value (``i = 0 … m−1``) is compared with ``alpha / (m − i)``; the
    hypotheses up to the first that fails are rejected."""
    p = np.asarray(p_values, dtype=np.float64)
    m = p.shape[-1]
    order = np.argsort(p, axis=-1)
    sorted_p = np.take_along_axis(p, order, axis=-1)
    passes = sorted_p < alpha / (m - np.arange(m))
    reject_sorted = np.cumprod(passes, axis=-1).astype(bool)
    rejects = np.zeros_like(reject_sorted)
    np.put_along_axis(rejects, order, reject_sorted, axis=-1)
    return rejects


def family_codes(p_greater: np.ndarray, p_less: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """Batched `family_verdict`: ``(..., parts)`` p-values to codes 1 (holds), −1 (not
    supported), 0 (inconclusive)."""
    p_greater, p_less = np.asarray(p_greater), np.asarray(p_less)
    holds = (p_greater < alpha).all(axis=-1)
    refuted = holm_rejects(p_less, alpha).any(axis=-1)
    return np.where(holds, 1, np.where(refuted, -1, 0))


CODE_VERDICT = {1: HOLDS, -1: NOT_SUPPORTED, 0: INCONCLUSIVE}


def family_verdict(parts: Sequence[Contrast]) -> str:
    """A claim required on every part (dataset or pair): ``holds`` when every part is
    significant (intersection–union), ``not supported`` when Holm's procedure rejects some
    part's claim (its opposite significant, family-wise level ``ALPHA``), else
    ``inconclusive`` (also with no part at all)."""
    if not parts:
        return INCONCLUSIVE
    code = family_codes(np.asarray([p.p_greater for p in parts]),
                        np.asarray([p.p_less for p in parts]))
    return CODE_VERDICT[int(code)]


def bootstrap_means(groups: Sequence[Iterable[float]], seed: int = 0) -> np.ndarray | None:
    """Bootstrap resamples' group means, shape ``(resamples, groups)``: each group (one optimizer
    on one dataset: its seeds' measurements) resampled with replacement independently,
    `BOOTSTRAP_RESAMPLES` times. None if a group has fewer than two values or one that is
    not finite."""
    data = [np.asarray(list(g), dtype=np.float64) for g in groups]
    if any(len(v) < 2 or not np.isfinite(v).all() for v in data):
        return None
    rng = np.random.default_rng(seed)
    return np.stack([v[rng.integers(0, len(v), (BOOTSTRAP_RESAMPLES, len(v)))].mean(axis=1)
                     for v in data], axis=1)


def bootstrap_verdict(share_true: float, share_false: float) -> str:
    """``holds`` when the statement is true in ≥ 95 % of resamples, ``not supported`` when its
    negation is, else ``inconclusive``."""
    if math.isfinite(share_true) and share_true >= 1 - ALPHA:
        return HOLDS
    if math.isfinite(share_false) and share_false >= 1 - ALPHA:
        return NOT_SUPPORTED
    return INCONCLUSIVE


def rule_family(verdicts: Iterable[str]) -> str:
    """A claim judged part by part by a fixed rule rather than a p-value: ``not supported`` if
    any part is, ``holds`` if every part does (and there is one), else ``inconclusive``. The
    rule's error rates are measured by simulation in the tests, not controlled by a level."""
    verdicts = list(verdicts)
    if NOT_SUPPORTED in verdicts:
        return NOT_SUPPORTED
    if verdicts and all(v == HOLDS for v in verdicts):
        return HOLDS
    return INCONCLUSIVE
