"""The claims of the common account of Adagrad, judged from the measurements.

Each claim states its test up front; its verdict is computed from the numbers, never assumed:
``holds``, ``not supported`` or ``inconclusive`` (the evidence is insufficient, for example a
difference within the seed-to-seed noise, or nothing measured). Comparisons between
optimizers are significance tests over seeds (`adagrad.experiments.statistics`); a claim made
for every dataset holds only if it holds on each of them.
"""

from __future__ import annotations

from collections.abc import Callable

from adagrad.experiments.claims.base import SUBJECT, Claim, cap_for_quick
from adagrad.experiments.claims.comparisons import (
    adam_versatile,
    learns_from_rare_words,
    lr_free_matches_tuned,
    sparse_text_vs_sgd,
    struggles_on_dense,
)
from adagrad.experiments.claims.mechanism import (
    early_index,
    keep_ratio,
    per_parameter_rates,
    rare_features,
    remedies,
    spearman,
    step_shrinks,
    steps_per_epoch,
)
from adagrad.experiments.claims.tuning import no_manual_tuning, usable_range
from adagrad.experiments.experiment import DatasetResult

CLAIMS: tuple[Callable[[list[DatasetResult]], Claim], ...] = (
    per_parameter_rates, rare_features, step_shrinks, remedies, sparse_text_vs_sgd,
    no_manual_tuning, struggles_on_dense, learns_from_rare_words, adam_versatile,
    lr_free_matches_tuned)


def judge(datasets: list[DatasetResult], quick: bool = False) -> list[Claim]:
    """Every claim, judged on ``datasets`` (``quick``: comparisons are never shown)."""
    judged = [judge_one(datasets) for judge_one in CLAIMS]
    return [cap_for_quick(c) for c in judged] if quick else judged


__all__ = ["CLAIMS", "SUBJECT", "Claim", "early_index", "judge", "keep_ratio", "spearman",
           "steps_per_epoch", "usable_range"]
