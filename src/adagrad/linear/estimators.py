"""`AdagradClassifier` and `AdagradRegressor`: linear models trained by the Adagrad family,
as scikit-learn estimators.

The model is ``f(x) = W·x + b`` with one output per class (one for a binary classifier or a
regressor), fitted by minimising ``mean ℓ(f(x_i), y_i) + alpha·R(W)`` (`losses`, `members`)
in ``epochs`` passes over the examples in a fresh random order each. With ``batch_size`` 1
and Adagrad, ProximalAdagrad or FTRL the online kernel takes one example a step (the
setting of Duchi, Hazan & Singer 2011 and of Vowpal Wabbit); otherwise the member's
optimizer steps on minibatches. Weights and state are float32 tables of
``(n_features + 1) × K`` (the last row the intercept).

The regressor fits the target standardised with the mean and standard deviation of the
first ``fit``/``partial_fit`` data, so that one learning rate suits targets of any scale;
``coef_`` and ``intercept_`` are in the target's own units.
"""

from __future__ import annotations

import numbers

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from adagrad.linear.losses import CLASSIFICATION_LOSSES, REGRESSION_LOSSES
from adagrad.linear.members import MEMBERS, resolve_member
from adagrad.linear.tables import (
    ClassifierTables,
    LinearTables,
    RegressorTables,
    engine_input,
)

_COMMON_CONSTRAINTS = {
    "penalty": [StrOptions({"l2", "l1", "elasticnet"})],
    "alpha": [Interval(numbers.Real, 0, None, closed="left")],
    "l1_ratio": [Interval(numbers.Real, 0, 1, closed="both")],
    "optimizer": [StrOptions(set(MEMBERS)), None],
    "lr": [Interval(numbers.Real, 0, None, closed="neither")],
    "epochs": [Interval(numbers.Integral, 1, None, closed="left")],
    "batch_size": [Interval(numbers.Integral, 1, None, closed="left")],
    "random_state": ["random_state"],
    "early_stopping": ["boolean"],
    "validation_fraction": [Interval(numbers.Real, 0, 1, closed="neither")],
    "n_iter_no_change": [Interval(numbers.Integral, 1, None, closed="left")],
    "tol": [Interval(numbers.Real, 0, None, closed="left")],
}


class _AdagradLinearModel(LinearTables, BaseEstimator):
    """What the classifier and the regressor share: the tables, the engines, the passes."""

    _numeric_target = False

    def _keep_params(self, params: dict) -> None:
        """Store ``__init__``'s arguments as they are (scikit-learn's convention)."""
        for name, value in params.items():
            if name not in ("self", "__class__"):
                setattr(self, name, value)

    def _validated(self, X, y, reset: bool):
        """(X, y) checked; ``X`` as the engines read it: canonical CSR with int64 indices,
        in the tables' dtype."""
        X, y = validate_data(self, X, y, accept_sparse=["csr", "csc"],
                             dtype=[np.float64, np.float32], reset=reset,
                             y_numeric=self._numeric_target)
        return engine_input(X), y

    def _start(self, n_features: int, n_outputs: int) -> None:
        """Fresh tables and state: the start of `fit` or of the first `partial_fit`."""
        super()._start(n_features, n_outputs, check_random_state(self.random_state))

    def _fit(self, X, targets, weights, y_original) -> None:
        """`fit`'s passes, holding out a validation split when ``early_stopping``."""
        if not self.early_stopping:
            self._passes(X, targets, weights, self.epochs)
            return
        order = self._random.permutation(X.shape[0])
        held = max(1, int(round(self.validation_fraction * X.shape[0])))
        if held >= X.shape[0]:
            raise ValueError(f"early_stopping needs more than {held} examples to hold out "
                             f"validation_fraction={self.validation_fraction} of them")
        train, valid = order[held:], order[:held]
        self._passes(X[train], targets[train], weights[train], self.epochs,
                     (X[valid], y_original[valid]))

    _FITTED = ("_W", "n_features_in_", "n_iter_", "t_")

    def fitted_arrays(self) -> dict[str, np.ndarray]:
        """What prediction needs, as plain arrays (a model file's content)."""
        check_is_fitted(self, "_W")
        return {name: np.asarray(getattr(self, name)) for name in self._FITTED}

    @classmethod
    def from_fitted_arrays(cls, params: dict, arrays: dict[str, np.ndarray]):
        """The fitted model of `fitted_arrays` (without the optimizer state: it predicts,
        and a `partial_fit` on it starts the state afresh)."""
        model = cls(**params)
        for name in cls._FITTED:
            value = arrays[name]
            setattr(model, name, value if value.ndim else value.item())
        model._member = resolve_member(model.optimizer, model.penalty)
        model._random = check_random_state(model.random_state)
        model._state = None
        return model

    def _scores(self, X) -> np.ndarray:
        """The raw decision function of the tables, ``(n, K)``."""
        check_is_fitted(self, "_W")
        X = validate_data(self, X, accept_sparse=["csr", "csc"], reset=False)
        return self._table_scores(X)


class AdagradClassifier(ClassifierMixin, ClassifierTables, _AdagradLinearModel):
    """A linear classifier trained by the Adagrad family (module docstring).

    Args:
      loss: ``"log_loss"`` (logistic; softmax for several classes), ``"hinge"`` (linear
        SVM) or ``"modified_huber"``; the last two are one-vs-rest for several classes.
      penalty: ``"l2"``, ``"l1"`` or ``"elasticnet"`` (``l1_ratio`` of L1).
      alpha: the regularisation strength.
      l1_ratio: the share of L1 in ``"elasticnet"``.
      optimizer: a member of the family by name (`members.MEMBERS`); None picks Adagrad for
        ``"l2"`` and ProximalAdagrad where there is L1 (exact zeros).
      lr: the learning rate.
      epochs: passes over the data in `fit`.
      batch_size: examples a step (1: the online kernel, for the members it runs).
      random_state: seeds the order of the examples.
      class_weight: None, ``"balanced"`` or ``{class: weight}``, multiplying sample weights.
      early_stopping: hold out ``validation_fraction`` of `fit`'s data and stop when its
        accuracy has not improved by ``tol`` for ``n_iter_no_change`` passes.

    Example:
        >>> from adagrad.linear import AdagradClassifier
        >>> X = [[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]]
        >>> model = AdagradClassifier(random_state=0).fit(X, ["a", "a", "b", "b"])
        >>> model.predict([[1.0, 0.0], [0.0, 1.0]]).tolist()
        ['a', 'b']
    """

    _FITTED = (*_AdagradLinearModel._FITTED, "classes_")
    _parameter_constraints = {**_COMMON_CONSTRAINTS,
                              "loss": [StrOptions(set(CLASSIFICATION_LOSSES))],
                              "class_weight": [StrOptions({"balanced"}), dict, None]}

    def __init__(self, loss="log_loss", *, penalty="l2", alpha=1e-6, l1_ratio=0.15,
                 optimizer=None, lr=0.1, epochs=10, batch_size=1, random_state=None,
                 class_weight=None, early_stopping=False, validation_fraction=0.1,
                 n_iter_no_change=2, tol=1e-4):
        self._keep_params(locals())

    def fit(self, X, y, sample_weight=None):
        """Fit from scratch: ``epochs`` passes over (X, y)."""
        self._validate_params()
        X, y = self._validated(X, y, reset=True)
        check_classification_targets(y)
        self._set_classes(np.unique(y))
        self._start(X.shape[1], self._n_outputs())
        targets, weights = self._targets(y, sample_weight, X.shape[0])
        self._fit(X, targets, weights, y)
        return self

    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """One pass over (X, y), continuing from the previous call; the first call needs
        ``classes``, every class that will ever be seen."""
        first = not hasattr(self, "_W")
        if first:
            self._validate_params()
            if classes is None:
                raise ValueError("classes must be passed on the first call to partial_fit")
        X, y = self._validated(X, y, reset=first)
        check_classification_targets(y)
        if first:
            self._set_classes(np.unique(np.asarray(classes)))
            self._start(X.shape[1], self._n_outputs())
        elif classes is not None and not np.array_equal(np.unique(classes), self.classes_):
            raise ValueError(f"classes={classes!r} differs from the first call's {self.classes_!r}")
        targets, weights = self._targets(y, sample_weight, X.shape[0])
        self._passes(X, targets, weights, 1)
        return self

    def _set_classes(self, classes: np.ndarray) -> None:
        if classes.size < 2:
            raise ValueError(f"AdagradClassifier needs at least 2 classes in y, got "
                             f"{classes.size} class: {classes.tolist()}")
        self.classes_ = classes

    def _targets(self, y, sample_weight, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The kernel's targets (±1 for two classes, else the class index) and weights."""
        index = self._class_index(y)
        weights = _check_sample_weight(sample_weight, np.empty((n, 0)), dtype=np.float64)
        if self.class_weight is not None:
            per_class = compute_class_weight(self.class_weight, classes=self.classes_, y=y)
            weights = weights * per_class[index]
        return self._kernel_targets(index), weights

    @property
    def coef_(self) -> np.ndarray:
        check_is_fitted(self, "_W")
        return self._W[:-1].T

    @property
    def intercept_(self) -> np.ndarray:
        check_is_fitted(self, "_W")
        return self._W[-1].copy()

    def decision_function(self, X) -> np.ndarray:
        """``W·x + b``: (n,) for two classes (positive: ``classes_[1]``), else (n, K)."""
        return self._decision(self._scores(X))

    def predict(self, X) -> np.ndarray:
        return self._predicted(self._scores(X))

    @available_if(ClassifierTables._has_proba)
    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities: the logistic / softmax of the scores for ``log_loss``;
        ``(clip(f, -1, 1) + 1)/2`` per output, normalised, for ``modified_huber``
        (Zadrozny & Elkan 2002, as scikit-learn's SGDClassifier)."""
        return self._probabilities(self._scores(X))

    @available_if(ClassifierTables._has_proba)
    def predict_log_proba(self, X) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags


class AdagradRegressor(RegressorMixin, RegressorTables, _AdagradLinearModel):
    """A linear regressor trained by the Adagrad family (module docstring).

    Args:
      loss: ``"squared_error"`` or ``"huber"`` (``epsilon``: where it turns linear, in
        standard deviations of the target).
      The others as `AdagradClassifier`; ``early_stopping`` watches R².

    Example:
        >>> import numpy as np
        >>> from adagrad.linear import AdagradRegressor
        >>> X = np.random.default_rng(0).normal(size=(200, 2))
        >>> model = AdagradRegressor(random_state=0, epochs=20).fit(X, X @ [2.0, -1.0])
        >>> np.round(model.coef_, 1).tolist()
        [2.0, -1.0]
    """

    _numeric_target = True
    _FITTED = (*_AdagradLinearModel._FITTED, "_y_center", "_y_scale")
    _parameter_constraints = {**_COMMON_CONSTRAINTS,
                              "loss": [StrOptions(set(REGRESSION_LOSSES))],
                              "epsilon": [Interval(numbers.Real, 0, None, closed="left")]}

    def __init__(self, loss="squared_error", *, penalty="l2", alpha=1e-6, l1_ratio=0.15,
                 epsilon=1.0, optimizer=None, lr=0.1, epochs=10, batch_size=1,
                 random_state=None, early_stopping=False, validation_fraction=0.1,
                 n_iter_no_change=2, tol=1e-4):
        self._keep_params(locals())

    def fit(self, X, y, sample_weight=None):
        """Fit from scratch: ``epochs`` passes over (X, y)."""
        self._validate_params()
        X, y = self._validated(X, y, reset=True)
        self._start(X.shape[1], 1)
        self._set_scale(y)
        self._fit(X, self._standardised(y), self._weights(sample_weight, X.shape[0]), y)
        return self

    def partial_fit(self, X, y, sample_weight=None):
        """One pass over (X, y), continuing from the previous call."""
        first = not hasattr(self, "_W")
        if first:
            self._validate_params()
        X, y = self._validated(X, y, reset=first)
        if first:
            self._start(X.shape[1], 1)
            self._set_scale(y)
        self._passes(X, self._standardised(y), self._weights(sample_weight, X.shape[0]), 1)
        return self

    @staticmethod
    def _weights(sample_weight, n: int) -> np.ndarray:
        return _check_sample_weight(sample_weight, np.empty((n, 0)), dtype=np.float64)

    @property
    def coef_(self) -> np.ndarray:
        check_is_fitted(self, "_W")
        return self._W[:-1, 0] * self._y_scale

    @property
    def intercept_(self) -> np.ndarray:
        check_is_fitted(self, "_W")
        return np.array([self._W[-1, 0] * self._y_scale + self._y_center])

    def predict(self, X) -> np.ndarray:
        return self._predicted(self._scores(X))

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags
