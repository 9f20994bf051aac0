"""Every claim's judge on synthetic measurements: one case where it must hold, one where it
must not, one where the evidence is too weak to say (and the statistics under them, against
scipy's own Welch test)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from experiments_support import around, dataset, result, tabular_data, text_data
from scipy import stats

from adagrad.experiments import claims, statistics
from adagrad.experiments.data import CLASSIFICATION
from adagrad.experiments.statistics import HOLDS, INCONCLUSIVE, NOT_SUPPORTED
from adagrad.experiments.training import StepTrace

# --- statistics -------------------------------------------------------------------------------


def test_welch_two_groups_matches_scipy():
    rng = np.random.default_rng(3)
    a, b = rng.normal(0.8, 0.01, 5), rng.normal(0.79, 0.03, 7)
    ours = statistics.welch_contrast({"a": 1.0, "b": -1.0}, {"a": a, "b": b})
    reference = stats.ttest_ind(a, b, equal_var=False, alternative="greater")
    assert ours.p_greater == pytest.approx(reference.pvalue, rel=1e-10)
    assert ours.p_less == pytest.approx(1 - reference.pvalue, rel=1e-10)
    assert ours.estimate == pytest.approx(a.mean() - b.mean())


def test_welch_contrast_of_four_groups_closed_form():
    groups = {k: np.asarray(v) for k, v in
              {"a": [1.0, 2.0, 3.0], "b": [0.0, 1.0], "c": [5.0, 5.5, 6.0, 7.0], "d": [1.0, 3.0]}.items()}
    coef = {"a": 1.0, "b": -1.0, "c": -0.5, "d": 2.0}
    v = {k: coef[k] ** 2 * g.var(ddof=1) / len(g) for k, g in groups.items()}
    df = sum(v.values()) ** 2 / sum(v[k] ** 2 / (len(g) - 1) for k, g in groups.items())
    estimate = sum(coef[k] * g.mean() for k, g in groups.items()) + 0.25
    t = estimate / math.sqrt(sum(v.values()))
    ours = statistics.welch_contrast(coef, groups, shift=0.25)
    assert ours.degrees_of_freedom == pytest.approx(df)
    assert ours.p_greater == pytest.approx(stats.t.sf(t, df))


def test_one_seed_or_diverged_seeds_decide_nothing():
    single = statistics.welch_contrast({"a": 1, "b": -1}, {"a": [0.9], "b": [0.1, 0.2]})
    diverged = statistics.welch_contrast({"a": 1, "b": -1}, {"a": [0.9, math.nan], "b": [0.1, 0.2]})
    assert single.verdict == diverged.verdict == INCONCLUSIVE


def test_rule_family():
    assert statistics.rule_family([HOLDS, HOLDS]) == HOLDS
    assert statistics.rule_family([HOLDS, INCONCLUSIVE]) == INCONCLUSIVE
    assert statistics.rule_family([HOLDS, NOT_SUPPORTED, INCONCLUSIVE]) == NOT_SUPPORTED
    assert statistics.rule_family([]) == INCONCLUSIVE


def _verdict(claim_fn, datasets) -> str:
    judged = claim_fn(datasets)
    assert judged.holds == (judged.verdict == HOLDS)
    return judged.verdict


# --- sparse-text-vs-sgd -----------------------------------------------------------------------

def _text_pair(ada: float, sgd: float, spread: float = 0.002, name: str = "t"):
    data = text_data(name)
    return dataset(data, [result(data, "adagrad-founding", around(ada, spread)),
                          result(data, "sgd", around(sgd, spread))])


@pytest.mark.parametrize("ada, sgd, spread, expected", [
    (0.85, 0.80, 0.002, HOLDS), (0.80, 0.85, 0.002, NOT_SUPPORTED), (0.801, 0.80, 0.02, INCONCLUSIVE)])
def test_sparse_text_vs_sgd(ada, sgd, spread, expected):
    assert _verdict(claims.sparse_text_vs_sgd, [_text_pair(ada, sgd, spread)]) == expected


def test_quick_never_shows_a_comparison():
    judged = {c.id: c for c in claims.judge([_text_pair(0.85, 0.80)], quick=True)}
    assert judged["sparse-text-vs-sgd"].verdict == INCONCLUSIVE
    assert "quick" in judged["sparse-text-vs-sgd"].evidence


# --- struggles-on-dense-data ------------------------------------------------------------------

def _gap_datasets(dense_gap: float, sparse_gap: float, spread: float):
    text, table = text_data("t"), tabular_data("d", CLASSIFICATION)
    return [dataset(text, [result(text, "adagrad-founding", around(0.8 * (1 - sparse_gap), spread)),
                           result(text, "adam", around(0.8, spread))]),
            dataset(table, [result(table, "adagrad-founding", around(0.8 * (1 - dense_gap), spread)),
                            result(table, "adam", around(0.8, spread))])]


@pytest.mark.parametrize("dense_gap, sparse_gap, spread, expected", [
    (0.10, 0.01, 0.002, HOLDS), (0.01, 0.10, 0.002, NOT_SUPPORTED), (0.02, 0.018, 0.02, INCONCLUSIVE)])
def test_struggles_on_dense_data(dense_gap, sparse_gap, spread, expected):
    assert _verdict(claims.struggles_on_dense, _gap_datasets(dense_gap, sparse_gap, spread)) == expected


def test_struggles_on_dense_regression_gap_counts_higher_rmse_as_worse():
    text, table = text_data("t"), tabular_data("d")
    datasets = [dataset(text, [result(text, "adagrad-founding", around(0.80)),
                               result(text, "adam", around(0.80))]),
                dataset(table, [result(table, "adagrad-founding", around(110.0, 0.5)),
                                result(table, "adam", around(100.0, 0.5))])]
    assert _verdict(claims.struggles_on_dense, datasets) == HOLDS


# --- learns-from-rare-words -------------------------------------------------------------------

def _rare(full_adv: float, rare_adv: float, spread: float):
    whole = _text_pair(0.80 + full_adv, 0.80, spread, name="t")
    rare_data = text_data("t-rare")
    rare = dataset(rare_data, [result(rare_data, "adagrad-founding", around(0.5 + rare_adv, spread)),
                               result(rare_data, "sgd", around(0.5, spread))], variant_of="t")
    return [whole, rare]


@pytest.mark.parametrize("full_adv, rare_adv, spread, expected", [
    (0.01, 0.08, 0.002, HOLDS), (0.08, 0.01, 0.002, NOT_SUPPORTED), (0.01, 0.012, 0.02, INCONCLUSIVE)])
def test_learns_from_rare_words(full_adv, rare_adv, spread, expected):
    assert _verdict(claims.learns_from_rare_words, _rare(full_adv, rare_adv, spread)) == expected


# --- adam-versatile ---------------------------------------------------------------------------

def _ranked(adam: float, spread: float):
    out = []
    for name in ("a", "b"):
        data = text_data(name)
        out.append(dataset(data, [result(data, "adagrad-founding", around(0.80, spread)),
                                  result(data, "rmsprop", around(0.79, spread)),
                                  result(data, "adam", around(adam, spread))]))
    return out


@pytest.mark.parametrize("adam, spread, expected", [
    (0.85, 0.002, HOLDS), (0.70, 0.002, NOT_SUPPORTED), (0.801, 0.03, INCONCLUSIVE)])
def test_adam_versatile(adam, spread, expected):
    assert _verdict(claims.adam_versatile, _ranked(adam, spread)) == expected


def test_mean_ranks_are_scipys_average_ranks():
    """The mean rank of each optimizer over datasets, ties averaged as scipy's `rankdata`
    does, a non-finite mean ranked last, lower metrics better where a dataset says so."""
    from adagrad.experiments.claims.comparisons import _mean_ranks

    rng = np.random.default_rng(0)
    means = rng.integers(0, 4, (200, 3, 5)).astype(float)  # many ties
    means[rng.random(means.shape) < 0.1] = np.nan
    better = [True, False, True]
    sign = np.array([-1.0, 1.0, -1.0])[:, None]
    scores = np.where(np.isfinite(means), sign * means, np.inf)
    expected = stats.rankdata(scores, axis=-1).mean(axis=-2)
    np.testing.assert_array_equal(_mean_ranks(means, better), expected)


# --- lr-free-matches-tuned --------------------------------------------------------------------

def _lr_free(free: float, anchor: float, spread: float):
    data = text_data("t")
    return [dataset(data, [result(data, "adagrad-founding", around(0.80, spread)),
                           result(data, "adagrad-lr-free", around(free, spread)),
                           result(data, "dog", around(anchor, spread))], heldout=True)]


@pytest.mark.parametrize("free, anchor, spread, expected", [
    (0.80, 0.70, 0.002, HOLDS), (0.75, 0.70, 0.002, NOT_SUPPORTED), (0.791, 0.78, 0.02, INCONCLUSIVE)])
def test_lr_free_matches_tuned(free, anchor, spread, expected):
    assert _verdict(claims.lr_free_matches_tuned, _lr_free(free, anchor, spread)) == expected


def test_lr_free_regression_margin_is_three_percent():
    data = tabular_data("d")
    within = [dataset(data, [result(data, "adagrad-founding", around(100.0, 0.2)),
                             result(data, "adagrad-lr-free", around(101.0, 0.2))], heldout=True)]
    outside = [dataset(data, [result(data, "adagrad-founding", around(100.0, 0.2)),
                              result(data, "adagrad-lr-free", around(105.0, 0.2))], heldout=True)]
    assert _verdict(claims.lr_free_matches_tuned, within) == HOLDS
    assert _verdict(claims.lr_free_matches_tuned, outside) == NOT_SUPPORTED


# --- no-manual-tuning -------------------------------------------------------------------------

LRS = [0.01, 0.0316, 0.1, 0.316, 1.0, 3.16, 10.0]
WIDE = [0.60, 0.795, 0.80, 0.80, 0.798, 0.70, math.nan]    # usable 0.0316 … 1: 1.5 decades
NARROW = [0.50, 0.60, 0.70, 0.80, 0.75, 0.60, math.nan]   # usable 0.316 only: 0 decades


def _tuning(ada_grid, sgd_grid, val_spread):
    data = text_data("t")
    return [dataset(data, [
        result(data, "adagrad-founding", around(0.8), around(0.8, val_spread),
               grid=list(zip(LRS, ada_grid)), lr=0.316),
        result(data, "sgd", around(0.8), around(0.8, val_spread), grid=list(zip(LRS, sgd_grid)),
               lr=0.316)])]


@pytest.mark.parametrize("ada, sgd, spread, expected", [
    (WIDE, NARROW, 0.001, HOLDS), (NARROW, WIDE, 0.001, NOT_SUPPORTED), (WIDE, NARROW, 0.05, INCONCLUSIVE)])
def test_no_manual_tuning(ada, sgd, spread, expected):
    assert _verdict(claims.no_manual_tuning, _tuning(ada, sgd, spread)) == expected


def test_usable_range_width_in_decades():
    data = text_data("t")
    res = result(data, "adagrad-founding", around(0.8), grid=list(zip(LRS, WIDE)), lr=0.316)
    usable = claims.usable_range(res)
    assert (usable.lo, usable.hi, usable.width, usable.bounded) == (0.0316, 1.0, 1.5, True)


# --- the claims measured directly --------------------------------------------------------------

def _rates(spread_ratio: float):
    data = text_data("t")
    rates = np.geomspace(1.0, spread_ratio, 100)
    return [dataset(data, [result(data, "adagrad-founding", around(0.8), coordinate_rate=rates)])]


def test_per_parameter_rates():
    assert _verdict(claims.per_parameter_rates, _rates(100.0)) == HOLDS
    assert _verdict(claims.per_parameter_rates, _rates(1.0)) == NOT_SUPPORTED
    assert _verdict(claims.per_parameter_rates, []) == INCONCLUSIVE


def _word_rates(rare_larger: bool):
    doc_freq = np.asarray([1] * 50 + list(range(2, 152)), dtype=np.int64)
    rate = 1.0 / np.sqrt(doc_freq) if rare_larger else np.sqrt(doc_freq.astype(float))
    data = text_data("t", doc_freq)
    return [dataset(data, [result(data, "adagrad-founding", around(0.8), word_rate=rate)])]


def test_rare_features_get_larger_steps():
    assert _verdict(claims.rare_features, _word_rates(True)) == HOLDS
    assert _verdict(claims.rare_features, _word_rates(False)) == NOT_SUPPORTED
    assert _verdict(claims.rare_features, [dataset(tabular_data("d"), [])]) == INCONCLUSIVE


def _traced(increases: int, remedy_median: list[float]):
    data = text_data("t", n_train=100)  # 10 steps per epoch
    shrinking = StepTrace([5, 10, 15, 20], [4.0, 2.0, 1.5, 1.0], increases=increases, compared=400)
    remedy = StepTrace([5, 10, 15, 20], remedy_median)
    return [dataset(data, [result(data, "adagrad-founding", around(0.8), trace=shrinking),
                           result(data, "rmsprop", around(0.8), trace=remedy)])]


def test_step_size_shrinks():
    assert _verdict(claims.step_shrinks, _traced(0, [1, 1, 1, 1])) == HOLDS
    assert _verdict(claims.step_shrinks, _traced(3, [1, 1, 1, 1])) == NOT_SUPPORTED
    assert _verdict(claims.step_shrinks, [dataset(text_data("t"), [])]) == INCONCLUSIVE


def test_remedies_keep_step_size():
    assert _verdict(claims.remedies, _traced(0, [1.0, 1.0, 0.9, 0.9])) == HOLDS
    assert _verdict(claims.remedies, _traced(0, [4.0, 2.0, 1.0, 0.2])) == NOT_SUPPORTED
    assert _verdict(claims.remedies, []) == INCONCLUSIVE
