"""The linear models' tables, passes and outputs, without scikit-learn: what the estimators
(`adagrad.linear.estimators`) and `adagrad fit` (`adagrad.textfiles.file_model`) share.

The model is ``f(x) = W·x + b`` held as one float32 table ``W`` of ``(n_features + 1) × K``
(the last row the intercept) plus the member's state tables. A pass runs the online kernel
(`adagrad.linear.online`: one example a step, for the members it has) or the minibatch
engine (`adagrad.linear.minibatch`, which needs torch, imported only then) over the
examples in a fresh random order.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from adagrad.linear.losses import loss_code
from adagrad.linear.members import ONLINE_MEMBERS, l1_ratio_of, resolve_member

TABLE_DTYPE = np.float32


def engine_input(X) -> sp.csr_matrix:
    """``X`` (sparse or dense, checked) as the engines read it: a canonical CSR copy with
    int64 indices, in the tables' dtype."""
    X = sp.csr_matrix(X, dtype=TABLE_DTYPE, copy=True)
    X.sum_duplicates()
    X.indices = X.indices.astype(np.int64)
    X.indptr = X.indptr.astype(np.int64)
    return X


def softmax(scores: np.ndarray) -> np.ndarray:
    """Row-wise softmax of float64 ``scores`` (a new array): ``exp(f - max f)``, normalised;
    the operations of scikit-learn's ``sklearn.utils.extmath.softmax``."""
    out = np.array(scores, copy=True)
    out -= out.max(axis=1).reshape(-1, 1)
    np.exp(out, out=out)
    out /= out.sum(axis=1).reshape(-1, 1)
    return out


class LinearTables:
    """The tables and the passes. Uses the hyperparameters as attributes (``optimizer``,
    ``penalty``, ``alpha``, ``l1_ratio``, ``lr``, ``batch_size``, ``loss``, ``epsilon``
    where the loss has one) and keeps ``_member``, ``_random``, ``_W``, ``_state``,
    ``n_iter_`` and ``t_``."""

    def _start(self, n_features: int, n_outputs: int, random: np.random.RandomState) -> None:
        """Fresh tables and state: the start of `fit` or of the first `partial_fit`."""
        self._member = resolve_member(self.optimizer, self.penalty)
        self._random = random
        self._W = np.zeros((n_features + 1, n_outputs), TABLE_DTYPE)
        self._state = None
        self.n_iter_ = 0
        self.t_ = 0

    def _engine(self):
        rho = l1_ratio_of(self.penalty, self.l1_ratio)
        if self.batch_size == 1 and self._member in ONLINE_MEMBERS:
            from adagrad.linear.online import OnlineEngine as cls
        else:
            from adagrad.linear.minibatch import MinibatchEngine as cls
        return cls(self._member, self._W, float(self.lr), float(self.alpha), rho, self._state)

    def _passes(self, X, targets, weights, epochs: int, validation=None) -> None:
        """``epochs`` passes over ``X`` (an `engine_input`), stopping early on
        ``validation`` (a (X, y) pair for ``self.score``)."""
        engine = self._engine()
        code = loss_code(self.loss, self._W.shape[1])
        epsilon = float(getattr(self, "epsilon", 0.0))
        best, stale = -np.inf, 0
        for _ in range(epochs):
            order = self._random.permutation(X.shape[0]).astype(np.int64)
            engine.run_pass(X, targets, weights, order, code, epsilon, self.batch_size)
            self.n_iter_ += 1
            self.t_ += X.shape[0]
            self._state = engine.state()
            if validation is None:
                continue
            score = self.score(*validation)
            best, stale = (score, 0) if score > best + self.tol else (best, stale + 1)
            if stale >= self.n_iter_no_change:
                break

    def _table_scores(self, X) -> np.ndarray:
        """The raw decision function ``X·W + b`` of checked ``X``, float64 ``(n, K)``.

        For CSR rows, the product runs on the table's rows that ``X`` uses only (its
        columns renumbered in order: the same sums in the same order), rather than on all
        ``2**bits`` of them, which scipy would first copy in ``X``'s dtype."""
        W = self._W[:-1]
        if sp.issparse(X) and X.format == "csr" and X.nnz < W.shape[0]:
            used = np.zeros(W.shape[0], bool)
            used[X.indices] = True
            renumbered = (np.cumsum(used) - 1)[X.indices]
            X = sp.csr_matrix((X.data, renumbered, X.indptr), shape=(X.shape[0], used.sum()))
            W = W[used]
        return np.asarray(X @ W, np.float64) + self._W[-1]


class ClassifierTables(LinearTables):
    """A classifier's targets and outputs from its ``classes_`` (sorted, two or more)."""

    def _n_outputs(self) -> int:
        return 1 if self.classes_.size == 2 else self.classes_.size

    def _class_index(self, y) -> np.ndarray:
        """Each label's index in ``classes_``, refusing labels not in it."""
        index = np.searchsorted(self.classes_, y)
        index = np.minimum(index, self.classes_.size - 1)
        unseen = self.classes_[index] != y
        if unseen.any():
            raise ValueError(f"y has classes not in classes_ {self.classes_.tolist()}: "
                             f"{np.unique(y[unseen]).tolist()}")
        return index

    def _kernel_targets(self, index: np.ndarray) -> np.ndarray:
        """The kernel's targets: ±1 for two classes, else the class index."""
        if self.classes_.size == 2:
            return np.where(index == 1, 1.0, -1.0)
        return index.astype(np.float64)

    def _decision(self, scores: np.ndarray) -> np.ndarray:
        return scores.ravel() if scores.shape[1] == 1 else scores

    def _predicted(self, scores: np.ndarray) -> np.ndarray:
        decision = self._decision(scores)
        index = (decision > 0).astype(int) if decision.ndim == 1 else decision.argmax(axis=1)
        return self.classes_[index]

    def _has_proba(self) -> bool:
        return self.loss in ("log_loss", "modified_huber")

    def _probabilities(self, scores: np.ndarray) -> np.ndarray:
        """Class probabilities: the logistic / softmax of the scores for ``log_loss``;
        ``(clip(f, -1, 1) + 1)/2`` per output, normalised, for ``modified_huber``
        (Zadrozny & Elkan 2002, as scikit-learn's SGDClassifier)."""
        if self.loss == "log_loss":
            if scores.shape[1] == 1:
                positive = 1.0 / (1.0 + np.exp(-scores[:, 0]))
                return np.column_stack([1.0 - positive, positive])
            return softmax(scores)
        proba = (np.clip(scores, -1.0, 1.0) + 1.0) / 2.0
        if scores.shape[1] == 1:
            return np.column_stack([1.0 - proba[:, 0], proba[:, 0]])
        total = proba.sum(axis=1, keepdims=True)
        uniform = np.full_like(proba, 1.0 / proba.shape[1])
        return np.where(total > 0, proba / np.where(total > 0, total, 1.0), uniform)


class RegressorTables(LinearTables):
    """A regressor's standardised target: the mean and standard deviation of the first
    data it is fitted on."""

    def _set_scale(self, y: np.ndarray) -> None:
        self._y_center = float(y.mean())
        spread = float(y.std())
        self._y_scale = spread if spread > 0 else 1.0

    def _standardised(self, y: np.ndarray) -> np.ndarray:
        return (y - self._y_center) / self._y_scale

    def _predicted(self, scores: np.ndarray) -> np.ndarray:
        return scores[:, 0] * self._y_scale + self._y_center
