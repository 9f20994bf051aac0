"""`adagrad fit`'s torch- and scikit-learn-free path: the same models, metrics and model
files as the estimators', and the imports of each command."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp

pytest.importorskip("sklearn")
from sklearn.metrics import roc_auc_score  # noqa: E402
from sklearn.utils.extmath import softmax as sklearn_softmax  # noqa: E402

from adagrad.cli import main  # noqa: E402
from adagrad.linear import AdagradClassifier, AdagradRegressor  # noqa: E402
from adagrad.linear.tables import softmax  # noqa: E402
from adagrad.textfiles.linear_models import FileClassifier, FileRegressor  # noqa: E402
from adagrad.textfiles.metrics import roc_auc  # noqa: E402

PROBE = """
import sys
from adagrad.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exit:  # --help
    code = exit.code
print(sorted(m for m in ("torch", "sklearn", "pandas", "adagrad.experiments", "numba")
             if m in sys.modules))
sys.exit(code)
"""


def _imports(tmp_path, *args) -> list[str]:
    done = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1].replace("'", '"'))


def test_help_imports_no_command_and_fit_neither_torch_nor_sklearn(tmp_path):
    assert _imports(tmp_path, "--help") == []
    train = tmp_path / "t.tsv"
    train.write_text("pos\tgood movie\nneg\tbad film\npos\tgreat fun\nneg\tawful boring\n")
    # two classes: the AUC too is computed without scikit-learn
    assert _imports(tmp_path, "fit", str(train), "-o", str(tmp_path / "m.npz")) == ["numba"]


def _rows(rng, n, d, nnz):
    indptr = np.r_[0, np.cumsum(rng.integers(1, nnz, n))]
    X = sp.csr_matrix((rng.normal(size=indptr[-1]), rng.integers(0, d, indptr[-1]), indptr),
                      shape=(n, d))
    X.sum_duplicates()
    return X


@pytest.mark.parametrize("loss,classes,optimizer", [
    ("log_loss", 2, None), ("log_loss", 4, None), ("hinge", 3, "ftrl"),
    ("modified_huber", 2, "proximal_adagrad"),
    # the minibatch engine (torch and a member's sparse kernel: compiles for half a minute)
    pytest.param("log_loss", 3, "rowwise_adagrad", marks=pytest.mark.slow),
])
def test_file_classifier_is_the_estimator_bit_for_bit(loss, classes, optimizer):
    rng = np.random.default_rng(3)
    params = dict(loss=loss, optimizer=optimizer, alpha=1e-4, lr=0.3, random_state=7,
                  penalty="l2" if optimizer in (None, "rowwise_adagrad") else "elasticnet")
    reference, ours = AdagradClassifier(**params), FileClassifier(**params)
    labels = np.array(["a", "b", "c", "d"][:classes])
    chunks = [(_rows(rng, 60, 500, 12), labels[rng.integers(0, classes, 60)]) for _ in range(3)]
    for epoch in range(2):
        for X, y in chunks:
            reference.partial_fit(X, y, classes=labels)
            ours.partial_fit(X, y, classes=labels)
    assert ours.get_params() == reference.get_params()
    mine, theirs = ours.fitted_arrays(), reference.fitted_arrays()
    assert mine.keys() == theirs.keys()
    for name in mine:
        np.testing.assert_array_equal(mine[name], theirs[name], strict=True)
    for a, b in zip(ours._state, reference._state):
        np.testing.assert_array_equal(a, b, strict=True)
    X = _rows(rng, 40, 500, 12)
    np.testing.assert_array_equal(ours.decision_function(X), reference.decision_function(X))
    np.testing.assert_array_equal(ours.predict(X), reference.predict(X))
    assert hasattr(ours, "predict_proba") == hasattr(reference, "predict_proba")
    if hasattr(reference, "predict_proba"):
        np.testing.assert_array_equal(ours.predict_proba(X), reference.predict_proba(X))


def test_file_regressor_is_the_estimator_bit_for_bit():
    rng = np.random.default_rng(4)
    params = dict(loss="huber", epsilon=0.5, lr=0.2, random_state=1)
    reference, ours = AdagradRegressor(**params), FileRegressor(**params)
    for _ in range(3):
        X = _rows(rng, 50, 300, 10)
        y = rng.normal(size=50) * 7 + 3
        reference.partial_fit(X, y)
        ours.partial_fit(X, y)
    assert ours.get_params() == reference.get_params()
    for name, value in reference.fitted_arrays().items():
        np.testing.assert_array_equal(ours.fitted_arrays()[name], value, strict=True)
    X = _rows(rng, 30, 300, 10)
    np.testing.assert_array_equal(ours.predict(X), reference.predict(X))


def test_default_parameters_are_the_estimators():
    assert FileClassifier().get_params() == AdagradClassifier().get_params()
    assert FileRegressor().get_params() == AdagradRegressor().get_params()
    with pytest.raises(TypeError, match="no parameters"):
        FileClassifier(epsilon=1.0)


@pytest.mark.parametrize("n,ties", [(2, False), (7, True), (300, False), (2000, True)])
def test_roc_auc_is_scikit_learns(n, ties):
    rng = np.random.default_rng(n)
    for _ in range(10):
        scores = rng.normal(size=n)
        scores = np.round(scores, 1) if ties else scores
        positive = rng.random(n) < 0.3
        positive[0], positive[-1] = True, False
        assert roc_auc(positive, scores) == roc_auc_score(positive, scores)


def test_softmax_is_scikit_learns():
    scores = np.random.default_rng(0).normal(size=(50, 7)) * 30
    np.testing.assert_array_equal(softmax(scores), sklearn_softmax(scores))


def test_fit_refuses_a_non_finite_feature_value(tmp_path, capsys):
    train = tmp_path / "a.svm"
    train.write_text("1 1:0.5\n0 2:nan\n")
    assert main(["fit", str(train), "-o", str(tmp_path / "m.npz")]) == 1
    assert "a.svm:2: feature '2:nan' is not a finite number" in capsys.readouterr().err


def test_main_called_from_python_leaves_the_garbage_collector_alone(tmp_path, capsys):
    # only the `adagrad` program (argv None) pauses and freezes the collector at start-up
    import gc

    frozen = gc.get_freeze_count()
    with pytest.raises(SystemExit):
        main(["--help"])
    assert main(["fit", str(tmp_path / "missing.tsv"), "-o", str(tmp_path / "m.npz")]) == 1
    assert gc.isenabled() and gc.get_freeze_count() == frozen
    train = tmp_path / "t.tsv"
    train.write_text("pos\tgood movie\nneg\tbad film\n")
    done = subprocess.run([sys.executable, "-m", "adagrad.cli", "fit", str(train), "-o",
                           str(tmp_path / "m.npz")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr  # the program, with the collector paused
    assert "model written to" in done.stdout and (tmp_path / "m.npz").exists()
