"""The claim that Adagrad spares you tuning the learning rate: usable learning-rate ranges.

An optimizer's *usable range* on a dataset is the widest run of consecutive rates of its grid
(half-decades, the same for every optimizer), around its best validation metric, whose
validation metric stays within the metric's tolerance of that best (1 accuracy point, or 2 %
RMSE). Its width is in decades. The grid was trained with one seed, so each width is also
computed with the tolerance moved by ±2 standard deviations of the validation metric over the
seeds at the chosen rate; a comparison is decided only if it survives that.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from adagrad.experiments.claims.base import SUBJECT, Claim, claim, failed, primary, rounded
from adagrad.experiments.experiment import DatasetResult, OptimizerResult, decades
from adagrad.experiments.statistics import HOLDS, INCONCLUSIVE, NOT_SUPPORTED, rule_family

SGD = "sgd"
LR_FREE = "adagrad-lr-free"
NOISE_SIGMAS = 2.0


@dataclass(frozen=True)
class UsableRange:
    """The usable rates of one grid: ``lo … hi``, ``width`` in decades, and whether the range
    is closed on both sides by a grid point outside it (else the width is a lower bound)."""

    lo: float
    hi: float
    width: float
    bounded: bool

    def to_json(self) -> dict:
        """Fields for metrics.json."""
        return {"lo": self.lo, "hi": self.hi, "decades": self.width, "bounded": self.bounded}


def usable_range(res: OptimizerResult, slack: float = 0.0) -> UsableRange | None:
    """The usable range of ``res``'s grid with the tolerance widened by ``slack`` (metric units;
    negative narrows it); None without a finite grid point."""
    grid = sorted(res.grid, key=lambda g: g.lr)
    values = [g.val_metric if not g.diverged else math.nan for g in grid]
    finite = [i for i, v in enumerate(values) if math.isfinite(v)]
    if not finite:
        return None
    pick = max if res.metric.higher_is_better else min
    best_i = pick(finite, key=lambda i: values[i])
    ok = [res.metric.usable(v, values[best_i], slack) for v in values]
    lo = hi = best_i
    while lo > 0 and ok[lo - 1]:
        lo -= 1
    while hi < len(grid) - 1 and ok[hi + 1]:
        hi += 1
    bounded = lo > 0 and hi < len(grid) - 1 and not res.grid_limited
    return UsableRange(grid[lo].lr, grid[hi].lr, decades([grid[lo].lr, grid[hi].lr]), bounded)


def _noise(res: OptimizerResult) -> float:
    """Standard deviation over seeds of the validation metric at the chosen rate (NaN < 2)."""
    v = res.val_values[np.isfinite(res.val_values)]
    return float(v.std(ddof=1)) if len(v) >= 2 else math.nan


def _ranges(res: OptimizerResult) -> tuple[UsableRange | None, UsableRange | None, UsableRange | None]:
    """(narrowed, nominal, widened) usable ranges: tolerance −2σ, as stated, +2σ."""
    sigma = _noise(res)
    nominal = usable_range(res)
    if not math.isfinite(sigma):
        return None, nominal, None
    return usable_range(res, -NOISE_SIGMAS * sigma), nominal, usable_range(res, NOISE_SIGMAS * sigma)


def wider(a: OptimizerResult, b: OptimizerResult) -> str:
    """Is ``a``'s usable range wider than ``b``'s? ``holds`` if even ``a``'s narrowed range is
    wider than ``b``'s widened one (and ``b``'s is bounded), ``not supported`` if ``a``'s
    widened range is narrower than ``b``'s narrowed one (and ``a``'s is bounded). Equal
    widths decide nothing: on a half-decade lattice "no wider" at the boundary is a coin flip,
    and calling it ``not supported`` was wrong 17 % of the time at the least-favourable true
    configuration (simulated in tests/test_experiments_error_rates.py; strict: 0.2 %)."""
    a_narrow, _, a_wide = _ranges(a)
    b_narrow, _, b_wide = _ranges(b)
    if None in (a_narrow, a_wide, b_narrow, b_wide):
        return INCONCLUSIVE
    if b_wide.bounded and a_narrow.width > b_wide.width:
        return HOLDS
    if a_wide.bounded and a_wide.width < b_narrow.width:
        return NOT_SUPPORTED
    return INCONCLUSIVE


def no_manual_tuning(datasets: list[DatasetResult]) -> Claim:
    """Plain Adagrad's usable learning-rate range is wider than SGD's on every dataset."""
    evidence, verdicts, notes, lines, used = {}, [], [], [], []
    for ds in primary(datasets):
        ada, sgd = ds.result(SUBJECT), ds.result(SGD)
        if ada is None or sgd is None:
            continue
        verdict = wider(ada, sgd)
        verdicts.append(verdict)
        used += [ada, sgd]
        entry = {r.spec.key: _range_json(r) for r in ds.results if r.spec.tuned}
        free = ds.result(LR_FREE)
        if free is not None:
            entry[LR_FREE] = {"needs_no_grid": True, "test_mean": rounded(free.mean),
                              "tuned_adagrad_test_mean": rounded(ada.mean)}
        evidence[ds.name] = {"adagrad_wider_than_sgd": verdict, "usable_range": entry}
        a, s = usable_range(ada), usable_range(sgd)
        notes.append(f"{ds.name}: Adagrad {_width_text(a)} vs SGD {_width_text(s)} decades ({verdict})")
        lines.append(f"{ds.name} {_width_text(a)} vs {_width_text(s)}")
    return claim("no-manual-tuning",
                 "You don't have to tweak the learning rate: plain Adagrad's usable learning-rate "
                 "range (validation metric within 1 accuracy point or 2 % RMSE of its best, on a "
                 "half-decade grid shared by every optimizer) is wider than SGD's on every "
                 "dataset, robust to ±2 seed standard deviations of the validation metric. The "
                 "learning-rate-free member (adagrad-lr-free) is reported beside it.",
                 rule_family(verdicts), evidence, notes, "no dataset with both Adagrad and SGD",
                 comparative=True,
                 test="rule, not a p-value: usable-range widths with the tolerance moved by ±2 "
                      "seed standard deviations",
                 multiplicity="rule-based, no level: holds if every dataset passes the rule, not "
                              "supported if one fails it (error rates simulated in the tests)",
                 failed_seeds=failed(used),
                 headline="usable range Adagrad vs SGD, decades: " + ", ".join(lines))


def _range_json(res: OptimizerResult) -> dict:
    narrow, nominal, wide = _ranges(res)
    return {"nominal": nominal.to_json() if nominal else None,
            "narrowed_2sigma": narrow.to_json() if narrow else None,
            "widened_2sigma": wide.to_json() if wide else None,
            "validation_std": rounded(_noise(res))}


def _width_text(r: UsableRange | None) -> str:
    if r is None:
        return "n/a"
    return f"{r.width:g}" if r.bounded else f"≥{r.width:g}"
