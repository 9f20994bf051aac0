"""`AdagradClassifier` / `AdagradRegressor`: scikit-learn's own estimator checks, closed-form
and scipy.optimize references on tiny problems, partial_fit, L1's exact zeros, every
member by name."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")
import scipy.optimize  # noqa: E402
import scipy.sparse as sp  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.utils.estimator_checks import check_estimator  # noqa: E402

from adagrad.linear import AdagradClassifier, AdagradRegressor  # noqa: E402
from adagrad.linear.members import MEMBERS  # noqa: E402

SHUFFLED_STEPS = ("per-example steps in a random order: a sample weight of 2 is one step of "
                  "twice the gradient, not two steps (scikit-learn's SGD estimators fail "
                  "this check alike)")
EXPECTED_FAILURES = {"check_sample_weight_equivalence_on_dense_data": SHUFFLED_STEPS,
                     "check_sample_weight_equivalence_on_sparse_data": SHUFFLED_STEPS}


@pytest.mark.parametrize("estimator", [AdagradClassifier(), AdagradRegressor()],
                         ids=lambda e: type(e).__name__)
def test_scikit_learn_estimator_checks(estimator):
    check_estimator(estimator, expected_failed_checks=EXPECTED_FAILURES)


def test_regressor_reaches_the_least_squares_solution():
    """Noise-free y = X·w + b: the online passes converge to the closed form."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    w, b = np.array([1.5, -2.0, 0.5]), 3.0
    y = X @ w + b
    model = AdagradRegressor(alpha=0.0, lr=0.5, epochs=300, random_state=0).fit(X, y)
    solution = np.linalg.lstsq(np.column_stack([X, np.ones(40)]), y, rcond=None)[0]
    np.testing.assert_allclose(model.coef_, solution[:3], atol=1e-3)
    np.testing.assert_allclose(model.intercept_, solution[3:], atol=1e-3)


def test_classifier_approaches_the_l2_logistic_optimum_of_scipy():
    """Binary log loss + alpha/2·|w|² (every feature in every example, so the touched-row
    L2 is the full one): probabilities within 0.02 of L-BFGS's optimum."""
    rng = np.random.default_rng(1)
    X = rng.normal(size=(60, 2))
    y = (X @ [2.0, -1.0] + rng.normal(size=60) > 0).astype(int)
    alpha = 0.05
    s = np.where(y == 1, 1.0, -1.0)

    def objective(theta):
        f = X @ theta[:2] + theta[2]
        return np.mean(np.logaddexp(0, -s * f)) + alpha / 2 * theta[:2] @ theta[:2]

    theta = scipy.optimize.minimize(objective, np.zeros(3), method="L-BFGS-B", tol=1e-12).x
    model = AdagradClassifier(alpha=alpha, lr=0.2, epochs=400, random_state=0).fit(X, y)
    want = 1 / (1 + np.exp(-(X @ theta[:2] + theta[2])))
    np.testing.assert_allclose(model.predict_proba(X)[:, 1], want, atol=0.02)


def sparse_problem(seed=0, n=300, d=200, classes=3):
    """Each class has 5 indicative features among d mostly irrelevant ones."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, size=n)
    X = sp.random(n, d, density=0.05, random_state=seed, format="lil")
    for i, label in enumerate(y):
        for j in rng.choice(5, size=2, replace=False):
            X[i, label * 5 + j] = 1.0
    return sp.csr_matrix(X), y


@pytest.mark.parametrize("optimizer", ["proximal_adagrad", "ftrl",
                                       pytest.param("adagrad_da", marks=pytest.mark.slow)])
def test_l1_makes_weights_exactly_zero(optimizer):
    X, y = sparse_problem()
    lr = 1.0 if optimizer == "ftrl" else 0.1
    alpha = 1.0 if optimizer == "ftrl" else 0.01  # FTRL's λ1 bounds z, a sum of gradients
    sparse = AdagradClassifier(penalty="l1", alpha=alpha, optimizer=optimizer, lr=lr,
                               random_state=0,
                               batch_size=1 if optimizer != "adagrad_da" else 8).fit(X, y)
    dense = AdagradClassifier(penalty="l2", alpha=0.0, lr=lr, random_state=0).fit(X, y)
    assert np.mean(sparse.coef_ == 0) > 0.3 and np.mean(dense.coef_ == 0) < 0.05
    assert sparse.score(X, y) > 0.9


def test_default_penalty_l1_picks_proximal_and_adagrad_refuses_l1():
    X, y = sparse_problem()
    assert np.any(AdagradClassifier(penalty="l1", alpha=0.01).fit(X, y).coef_ == 0)
    with pytest.raises(ValueError, match="penalty='l1' needs an optimizer with an L1"):
        AdagradClassifier(penalty="l1", optimizer="adagrad").fit(X, y)


@pytest.mark.parametrize("optimizer", [
    pytest.param(name, marks=() if name == "adagrad" else pytest.mark.slow)
    for name in sorted(MEMBERS)])
def test_every_member_trains_by_name(optimizer):
    full = optimizer == "full_matrix_adagrad"  # a (45 × 45) matrix root each step: few steps
    X, y = sparse_problem(d=15 if full else 40)
    lr = {"ftrl": 1.0, "adagrad_norm": 1.0}.get(optimizer, 0.3)
    model = AdagradClassifier(optimizer=optimizer, lr=lr, batch_size=30 if full else 4,
                              epochs=5 if full else 10, random_state=0).fit(X, y)
    assert model.score(X, y) > 0.9


@pytest.mark.parametrize("optimizer,own_lr", [
    ("adagrad", 0.1), (None, 0.1),
    # DoGAdagrad's lr multiplies the step size it finds itself: its own default is 1, not
    # the tuned rate 0.1 (the minibatch engine: compiles its kernel, so in the slow pass)
    pytest.param("dog_adagrad", 1.0, marks=pytest.mark.slow)])
def test_lr_none_is_the_members_own_default(optimizer, own_lr):
    X, y = sparse_problem(d=20)
    settings = dict(optimizer=optimizer, batch_size=1 if optimizer != "dog_adagrad" else 8,
                    epochs=2, random_state=0)
    default = AdagradClassifier(**settings)
    assert default.get_params()["lr"] is None
    assert clone(default).get_params()["lr"] is None
    default.fit(X, y)
    assert default.get_params()["lr"] is None  # stored as given
    given = AdagradClassifier(lr=own_lr, **settings).fit(X, y)
    other = AdagradClassifier(lr=own_lr / 2, **settings).fit(X, y)
    assert np.array_equal(default.coef_, given.coef_)
    assert np.array_equal(default.intercept_, given.intercept_)
    assert not np.array_equal(default.coef_, other.coef_)  # lr does move the weights


def test_partial_fit_continues_where_it_stopped():
    """Two partial_fit calls over the halves equal one pass run as the same two steps."""
    X, y = sparse_problem()
    classes = np.unique(y)
    first = AdagradClassifier(random_state=0).partial_fit(X[:150], y[:150], classes=classes)
    first.partial_fit(X[150:], y[150:])
    again = AdagradClassifier(random_state=0).partial_fit(X[:150], y[:150], classes=classes)
    refit = AdagradClassifier(random_state=0).partial_fit(X[:150], y[:150], classes=classes)
    assert np.array_equal(again.coef_, refit.coef_)
    assert not np.array_equal(again.coef_, first.coef_)  # the second call moved it on
    assert first.n_iter_ == 2 and first.t_ == 300
    with pytest.raises(ValueError, match="classes must be passed"):
        AdagradClassifier().partial_fit(X, y)
    with pytest.raises(ValueError, match="classes not in classes_"):
        first.partial_fit(X[:2], np.array([7, 7]))


def test_early_stopping_and_class_weight():
    X, y = sparse_problem()
    model = AdagradClassifier(early_stopping=True, epochs=50, n_iter_no_change=2, tol=0.5,
                              random_state=0).fit(X, y)
    assert model.n_iter_ == 3  # the first pass, then two that gain less than 0.5
    heavy = AdagradClassifier(class_weight={0: 1.0, 1: 1e-6, 2: 1e-6}, random_state=0).fit(X, y)
    assert np.mean(heavy.predict(X) == 0) > np.mean(y == 0)


@pytest.mark.parametrize("loss", ["log_loss", "modified_huber"])
def test_probabilities_sum_to_one(loss):
    X, y = sparse_problem()
    proba = AdagradClassifier(loss=loss, random_state=0).fit(X, y).predict_proba(X)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert not hasattr(AdagradClassifier(loss="hinge").fit(X, y), "predict_proba")


def test_guide_text_recipe_runs(capsys):
    """The first recipe of the linear-models guide prints what its comment says."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "guides" / "linear.md").read_text()
    example = re.findall(r"```python\n(.*?)```", text, re.S)[0]
    exec(compile(example, "docs/guides/linear.md (text recipe)", "exec"), {})
    assert capsys.readouterr().out.strip() == "['pos' 'neg']"
