"""The claim judges: their statistics, and that nothing holds without measurements."""

from __future__ import annotations

import math

import numpy as np
import pytest

from adagrad.experiments import claims
from adagrad.experiments.training import StepTrace


def test_spearman_of_monotone_and_reversed_data():
    x = np.array([1, 2, 3, 4, 5])
    assert claims.spearman(x, x ** 2) == pytest.approx(1.0)
    assert claims.spearman(x, -x) == pytest.approx(-1.0)
    assert math.isnan(claims.spearman(x, np.ones(5)))


def test_keep_ratio_compares_the_end_with_after_the_first_epoch():
    trace = StepTrace(steps=[5, 10, 15, 20], median=[4.0, 2.0, 1.5, 1.0])
    assert claims.early_index(trace, 10) == 1
    assert claims.keep_ratio(trace, 10) == pytest.approx(0.5)
    assert math.isnan(claims.keep_ratio(trace, 100))  # never got past the first epoch
    assert math.isnan(claims.keep_ratio(StepTrace(), 10))


CLAIM_IDS = ["per-parameter-rates", "rare-features-get-larger-steps", "step-size-shrinks",
             "remedies-keep-step-size", "sparse-text-vs-sgd", "no-manual-tuning",
             "struggles-on-dense-data", "learns-from-rare-words", "adam-versatile",
             "lr-free-matches-tuned"]


def test_without_measurements_every_claim_is_inconclusive():
    judged = claims.judge([])
    assert [c.id for c in judged] == CLAIM_IDS
    for c in judged:
        assert c.holds is False and c.verdict == "inconclusive"
        assert c.evidence["measured"] is False
        assert set(c.to_json()) >= {"id", "claim", "holds", "verdict", "evidence"}
