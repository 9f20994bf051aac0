"""What every claim shares: the `Claim` record, its verdict, and small helpers."""

from __future__ import annotations

import math
from dataclasses import dataclass

from adagrad.experiments.experiment import DatasetResult, OptimizerResult
from adagrad.experiments.optimizers import ADAGRAD
from adagrad.experiments.statistics import HOLDS, INCONCLUSIVE, NOT_SUPPORTED, SINGLE

#: The Adagrad run the claims are judged on: the textbook formula (ε inside the root).
SUBJECT = "adagrad-founding"
QUICK_REASON = ("--quick measures one seed with short training: no comparison is declared in "
                "either direction")
#: The verdict line of a comparative claim in --quick mode.
QUICK_LINE = "not judged in --quick mode (one seed, short training)"


@dataclass
class Claim:
    """One claim and its verdict, ``{"id", "claim", "holds", "verdict", "evidence", "summary"}``
    in metrics.json. ``holds`` is ``verdict == "holds"``."""

    id: str
    claim: str
    verdict: str
    evidence: dict
    summary: str = ""
    comparative: bool = False
    test: str = "measured directly"
    multiplicity: str = SINGLE
    failed_seeds: int = 0
    headline: str = ""

    @property
    def holds(self) -> bool:
        """True only for the verdict ``holds``."""
        return self.verdict == HOLDS

    def to_json(self) -> dict:
        """The claim as a JSON object (``summary`` is the one-line gist of the evidence)."""
        return {"id": self.id, "claim": self.claim, "holds": self.holds, "verdict": self.verdict,
                "comparative": self.comparative, "test": self.test,
                "multiplicity": self.multiplicity, "failed_seeds": self.failed_seeds,
                "headline": self.headline or self.summary, "evidence": self.evidence,
                "summary": self.summary}


def measured_verdict(ok: list[bool]) -> str:
    """A claim measured directly (no comparison between optimizers): ``holds`` if measured at
    least once and every measurement passed, ``not supported`` if one failed, else
    ``inconclusive`` (nothing measured)."""
    if not ok:
        return INCONCLUSIVE
    return HOLDS if all(ok) else NOT_SUPPORTED


def claim(claim_id: str, text: str, verdict: str, evidence: dict, notes: list[str],
          missing: str, comparative: bool = False, test: str | None = None,
          multiplicity: str = SINGLE, failed_seeds: int = 0, headline: str = "") -> Claim:
    """A `Claim`; with no measurement at all its evidence says why (``missing``).

    ``headline`` is the verdict table's one line (the deciding figures); ``notes`` the longer
    per-dataset summary."""
    if not notes:
        evidence = {"measured": False, "reason": missing} | evidence
        headline = f"not measured: {missing}"
    if test is not None:
        evidence = {"test": test, "multiplicity": multiplicity,
                    "failed_seeds": failed_seeds} | evidence
    return Claim(claim_id, text, verdict, evidence, "; ".join(notes) or "not measured",
                 comparative, test or "measured directly", multiplicity, failed_seeds, headline)


def cap_for_quick(c: Claim) -> Claim:
    """In ``--quick`` mode a comparative claim is never decided, in either direction: its
    verdict is ``inconclusive`` and its line says so."""
    if c.comparative:
        c.evidence = {"quick": QUICK_REASON, "verdict_before_cap": c.verdict} | c.evidence
        c.verdict = INCONCLUSIVE
        c.headline = f"{QUICK_LINE}; measured: {c.headline or c.summary}"
        c.summary = f"{QUICK_LINE}; measured: {c.summary}"
    return c


def primary(datasets: list[DatasetResult]) -> list[DatasetResult]:
    """The development datasets themselves, without derived variants or held-out sets."""
    return [ds for ds in datasets if ds.variant_of is None and not ds.info.heldout]


def held_out(datasets: list[DatasetResult]) -> list[DatasetResult]:
    """The held-out datasets (`data.HELD_OUT`): they judge ``lr-free-matches-tuned`` only."""
    return [ds for ds in datasets if ds.variant_of is None and ds.info.heldout]


def failed(results: list[OptimizerResult | None]) -> int:
    """Failed seeds over ``results`` (None entries skipped)."""
    return sum(r.failed_seeds for r in results if r is not None)


def subject(ds: DatasetResult) -> OptimizerResult | None:
    """The textbook-formula Adagrad run of ``ds`` (or another plain Adagrad)."""
    return ds.result(SUBJECT) or next((r for r in ds.results if r.spec.role == ADAGRAD), None)


def rounded(x: float | None, digits: int = 4) -> float | None:
    """``x`` to ``digits`` significant digits for JSON (None if not finite)."""
    if x is None or not math.isfinite(x):
        return None
    return float(f"{x:.{digits}g}")


def fmt(x: float | None) -> str:
    """Three significant digits, or n/a."""
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.3g}"


def pct(mean: float, std: float) -> str:
    """``mean±std`` as percentages."""
    return "n/a" if not math.isfinite(mean) else f"{100 * mean:.1f}±{100 * std:.1f}%"


def metric_text(ds: DatasetResult, res: OptimizerResult) -> str:
    """``mean±std`` of a result in its metric's units."""
    if ds.metric.higher_is_better:
        return pct(res.mean, res.std)
    return "n/a" if not math.isfinite(res.mean) else f"{res.mean:,.3g}±{res.std:,.2g}"


def interval(estimate: float, low: float, high: float, scale: float = 100.0, unit: str = "") -> str:
    """``+1.2 [0.4, 2.0]`` in ``scale`` units (default: points or percent)."""
    if not math.isfinite(estimate):
        return "n/a"
    return f"{scale * estimate:+.1f}{unit} [{scale * low:+.1f}, {scale * high:+.1f}]"


__all__ = ["HOLDS", "INCONCLUSIVE", "NOT_SUPPORTED", "SUBJECT", "Claim", "cap_for_quick", "claim",
           "failed", "fmt", "held_out", "interval", "measured_verdict", "metric_text", "pct",
           "primary", "rounded", "subject"]
