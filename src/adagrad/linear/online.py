"""The online kernel: one pass of per-example Adagrad-family steps over CSR rows.

For each example ``i`` in ``order`` (:ref:`algo-sparse` with one example a step): the scores
``f_k = b_k + Σ_j x_ij·W[j, k]``, the loss slopes ``s_k = dℓ/df_k`` (`losses.slopes`), times
the example's weight ``c_i``, then the member's coordinate rule on every touched weight with
its gradient ``c_i·s_k·x_ij`` and on the intercept with ``c_i·s_k``. Only the example's own
features are read and written: the cost of a step is ``nnz(x_i)·K``, whatever the number of
features (2²⁰ hashed text features, say).

The coordinate rules are the members' own (`adagrad_coordinate` of Adagrad,
:ref:`algo-adagrad`; `proximal_coordinate` of ProximalAdagrad, :ref:`algo-proximal`;
`ftrl_coordinate` of FTRL, :ref:`algo-ftrl`), with the regularisation of the rows of
features in ``rule`` and none for the intercept
(``bias_rule``). ``tables`` is ``(W, state...)``, each ``(n_features + 1, K)``, the last row
the intercept's. Arithmetic of the rule in the tables' dtype; the scores and slopes in float64.
"""

from __future__ import annotations

import numba
import numpy as np

from adagrad import members as family
from adagrad.kernels.adagrad.coordinate import adagrad_coordinate
from adagrad.kernels.ftrl.coordinate import ftrl_coordinate
from adagrad.kernels.proximal.coordinate import proximal_coordinate
from adagrad.linear.losses import slopes
from adagrad.linear.members import online_rules, online_state


@numba.njit(inline="always", error_model="numpy")
def _scores(W, indptr, indices, data, i, out):
    """``out[k] = W[-1, k] + Σ_j x_ij·W[j, k]`` for example ``i``."""
    bias = W.shape[0] - 1
    for k in range(out.size):
        out[k] = W[bias, k]
    for p in range(indptr[i], indptr[i + 1]):
        row = indices[p]
        x = data[p]
        for k in range(out.size):
            out[k] += x * W[row, k]


@numba.njit(inline="always", error_model="numpy")
def _adagrad_update(tables, row, k, g, rule):
    W = tables[0]
    G = tables[1]
    W[row, k], G[row, k] = adagrad_coordinate(W[row, k], g, G[row, k], rule)


@numba.njit(inline="always", error_model="numpy")
def _proximal_update(tables, row, k, g, rule):
    W = tables[0]
    G = tables[1]
    W[row, k], G[row, k] = proximal_coordinate(W[row, k], g, G[row, k], rule)


@numba.njit(inline="always", error_model="numpy")
def _ftrl_update(tables, row, k, g, rule):
    W = tables[0]
    Z = tables[1]
    N = tables[2]
    W[row, k], Z[row, k], N[row, k] = ftrl_coordinate(W[row, k], g, Z[row, k], N[row, k], rule)


@numba.njit(inline="always", error_model="numpy")
def _run(tables, indptr, indices, data, targets, weights, order, code, epsilon, rule,
         bias_rule, update):
    """The pass, for any member's ``update(tables, row, k, g, rule)``."""
    W = tables[0]
    K = W.shape[1]
    bias = W.shape[0] - 1
    scores = np.empty(K, np.float64)
    slope = np.empty(K, np.float64)
    g = np.empty(K, W.dtype)  # the slopes in the tables' dtype
    for i in order:
        _scores(W, indptr, indices, data, i, scores)
        slopes(code, scores, targets[i], epsilon, slope)
        for k in range(K):
            g[k] = slope[k] * weights[i]
        for p in range(indptr[i], indptr[i + 1]):
            row = indices[p]
            x = data[p]
            for k in range(K):
                update(tables, row, k, g[k] * x, rule)
        for k in range(K):
            update(tables, bias, k, g[k], bias_rule)


@numba.njit(cache=True, error_model="numpy")
def _adagrad_pass(W, G, indptr, indices, data, targets, weights, order, code, epsilon, rule,
                  bias_rule):
    _run((W, G), indptr, indices, data, targets, weights, order, code, epsilon, rule, bias_rule,
         _adagrad_update)


@numba.njit(cache=True, error_model="numpy")
def _proximal_pass(W, G, indptr, indices, data, targets, weights, order, code, epsilon, rule,
                   bias_rule):
    _run((W, G), indptr, indices, data, targets, weights, order, code, epsilon, rule, bias_rule,
         _proximal_update)


@numba.njit(cache=True, error_model="numpy")
def _ftrl_pass(W, Z, N, indptr, indices, data, targets, weights, order, code, epsilon, rule,
               bias_rule):
    _run((W, Z, N), indptr, indices, data, targets, weights, order, code, epsilon, rule,
         bias_rule, _ftrl_update)


_PASS_OF = {"adagrad": _adagrad_pass, "proximal_adagrad": _proximal_pass, "ftrl": _ftrl_pass}
#: the pass of each member `adagrad.members` says the online kernel runs (a member marked
#: ``online`` without a pass here fails at import, not at its first fit)
PASSES = {key: _PASS_OF[key] for key in family.keys(online=True)}


def online_pass(member: str, tables: tuple[np.ndarray, ...], X, targets: np.ndarray,
                weights: np.ndarray, order: np.ndarray, code: int, epsilon: float,
                rule: tuple, bias_rule: tuple) -> None:
    """One pass of ``member``'s per-example steps over the rows ``order`` of the CSR matrix
    ``X`` (canonical: sorted, no duplicates; ``X.data`` in the tables' dtype), in place on
    ``tables``. ``rule``/``bias_rule`` are the member's coefficient tuples in that dtype."""
    PASSES[member](*tables, X.indptr, X.indices, X.data, targets, weights, order, code,
                   float(epsilon), rule, bias_rule)


class OnlineEngine:
    """The online kernel over the ``(n_features + 1, K)`` table ``W`` and ``member``'s state
    tables, with the coefficients of `members.online_rules`."""

    def __init__(self, member: str, W: np.ndarray, lr: float, alpha: float, rho: float,
                 state: tuple[np.ndarray, ...] | None = None) -> None:
        self.member = member
        self.W = W
        self.tables = online_state(member, W.shape, W.dtype) if state is None else state
        self.rule, self.bias_rule = online_rules(member, lr, alpha, rho, W.dtype)

    def run_pass(self, X, targets, weights, order, code, epsilon, batch_size) -> None:
        """One pass over the rows ``order`` of ``X``, one example a step (``batch_size`` 1)."""
        online_pass(self.member, (self.W, *self.tables), X, targets, weights, order, code,
                    epsilon, self.rule, self.bias_rule)

    def state(self) -> tuple[np.ndarray, ...]:
        """The state tables, to carry to the next `partial_fit`."""
        return self.tables
