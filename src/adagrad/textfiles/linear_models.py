"""The models `adagrad fit` trains: `AdagradClassifier` / `AdagradRegressor`'s tables,
passes and outputs (`adagrad.linear.tables`), without scikit-learn.

`adagrad fit` builds its rows itself (CSR of ``2**bits`` float64 columns, finite values, the
labels as read), so scikit-learn's checks have nothing to add there, and its import (over
a second) was most of the time of a small fit. A model here is the estimator of the same
parameters, step for step: the same tables, the same order of examples, the same model file
(`estimator` names the estimator `adagrad predict` loads it as).
"""

from __future__ import annotations

import numpy as np

from adagrad.linear.tables import ClassifierTables, RegressorTables, engine_input

#: `AdagradClassifier`'s parameters and their defaults (its ``get_params()``, by name)
CLASSIFIER_PARAMS = {"alpha": 1e-6, "batch_size": 1, "class_weight": None,
                     "early_stopping": False, "epochs": 10, "l1_ratio": 0.15, "loss": "log_loss",
                     "lr": 0.1, "n_iter_no_change": 2, "optimizer": None, "penalty": "l2",
                     "random_state": None, "tol": 1e-4, "validation_fraction": 0.1}
#: `AdagradRegressor`'s
REGRESSOR_PARAMS = {**{k: v for k, v in CLASSIFIER_PARAMS.items() if k != "class_weight"},
                    "epsilon": 1.0, "loss": "squared_error"}


class _FileModel:
    """What both models share: the parameters and the fitted arrays."""

    estimator = ""
    _DEFAULTS: dict = {}
    _FITTED = ("_W", "n_features_in_", "n_iter_", "t_")

    def __init__(self, **params) -> None:
        unknown = set(params) - set(self._DEFAULTS)
        if unknown:
            raise TypeError(f"{self.estimator} has no parameters {sorted(unknown)}")
        self._params = {**self._DEFAULTS, **params}
        for name, value in self._params.items():
            setattr(self, name, value)

    def get_params(self) -> dict:
        """The parameters by name, as the estimator's ``get_params()``."""
        return dict(sorted(self._params.items()))

    def fitted_arrays(self) -> dict[str, np.ndarray]:
        """What prediction needs, as plain arrays (the estimator's ``fitted_arrays()``)."""
        return {name: np.asarray(getattr(self, name)) for name in self._FITTED}

    def _first(self, X) -> bool:
        first = not hasattr(self, "_W")
        if first:
            self.n_features_in_ = X.shape[1]
        return first

    def _seed(self) -> np.random.RandomState:
        seed = self.random_state
        return np.random.mtrand._rand if seed is None else np.random.RandomState(seed)


class FileClassifier(_FileModel, ClassifierTables):
    """`AdagradClassifier`'s `partial_fit`, `decision_function`, `predict_proba` (where the
    loss has probabilities) and `predict`, on CSR rows and labels as `adagrad fit` makes
    them."""

    estimator = "AdagradClassifier"
    _DEFAULTS = CLASSIFIER_PARAMS
    _FITTED = (*_FileModel._FITTED, "classes_")

    def partial_fit(self, X, y: np.ndarray, classes=None):
        """One pass over (X, y); the first call needs ``classes`` (two or more)."""
        if self._first(X):
            self.classes_ = np.unique(np.asarray(classes))
            if self.classes_.size < 2:
                raise ValueError(f"{self.estimator} needs at least 2 classes in y, got "
                                 f"{self.classes_.tolist()}")
            self._start(X.shape[1], self._n_outputs(), self._seed())
        targets = self._kernel_targets(self._class_index(y))
        self._passes(engine_input(X), targets, np.ones(X.shape[0]), 1)
        return self

    def decision_function(self, X) -> np.ndarray:
        return self._decision(self._table_scores(X))

    def predict(self, X) -> np.ndarray:
        return self._predicted(self._table_scores(X))

    @property
    def predict_proba(self):
        if not self._has_proba():
            raise AttributeError(f"the loss {self.loss!r} gives no probabilities")
        return lambda X: self._probabilities(self._table_scores(X))


class FileRegressor(_FileModel, RegressorTables):
    """`AdagradRegressor`'s `partial_fit` and `predict` on CSR rows and float64 targets."""

    estimator = "AdagradRegressor"
    _DEFAULTS = REGRESSOR_PARAMS
    _FITTED = (*_FileModel._FITTED, "_y_center", "_y_scale")

    def partial_fit(self, X, y: np.ndarray):
        """One pass over (X, y); the first call sets the target's scale."""
        if self._first(X):
            self._start(X.shape[1], 1, self._seed())
            self._set_scale(y)
        self._passes(engine_input(X), self._standardised(y), np.ones(X.shape[0]), 1)
        return self

    def predict(self, X) -> np.ndarray:
        return self._predicted(self._table_scores(X))
