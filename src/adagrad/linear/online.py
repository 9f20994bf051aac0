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

import dataclasses
from collections.abc import Callable

import numba
import numpy as np

from adagrad import members as family
from adagrad.kernels.adagrad.coordinate import adagrad_coordinate, rule_tuple
from adagrad.kernels.engine.rule import FtrlRule, ProximalRule, StepRule
from adagrad.kernels.ftrl.coordinate import ftrl_coordinate, ftrl_tuple
from adagrad.kernels.proximal.coordinate import proximal_coordinate, proximal_tuple
from adagrad.linear.losses import slopes


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


@dataclasses.dataclass(frozen=True)
class OnlineMember:
    """What the online kernel needs of one member: its pass, its frozen rule and the
    coefficient tuple of that rule, and its state tables (named, the accumulator last)."""

    run: Callable
    rule: type
    coefficients: Callable
    state: tuple[str, ...]


#: Each member the online kernel has, by key: the one place this module names a member.
_ONLINE_OF = {
    "adagrad": OnlineMember(_adagrad_pass, StepRule, rule_tuple, ("G",)),
    "proximal_adagrad": OnlineMember(_proximal_pass, ProximalRule, proximal_tuple, ("G",)),
    "ftrl": OnlineMember(_ftrl_pass, FtrlRule, ftrl_tuple, ("z", "n")),
}
#: the online kernel of each member `adagrad.members` marks ``online`` (one without an entry
#: in `_ONLINE_OF` fails at import, not at its first fit)
ONLINE = {key: _ONLINE_OF[key] for key in family.keys(online=True)}
#: the pass of each of them
PASSES = {key: online.run for key, online in ONLINE.items()}


def online_rules(member: str, lr: float, alpha: float, rho: float, dtype) -> tuple[tuple, tuple]:
    """The online kernel's coefficient tuples (features, intercept) for ``member``: its rule
    with the member's own defaults (`adagrad.members`) for all but ``lr``, the rules its
    optimizer steps with in the minibatch engine. Regularisation as `adagrad.linear.members`
    says: ``l1 = alpha·ρ``, ``l2 = alpha·(1-ρ)`` in the rule of a member with an L1 step,
    else ``weight_decay = alpha·(1-ρ)`` (coupled); none for the intercept."""
    scalar = np.dtype(dtype).type
    own = family.BY_KEY[member]
    online = ONLINE[member]
    fields = {field.name for field in dataclasses.fields(online.rule)}
    settings = {name: value for name, value in own.defaults.items() if name in fields}
    settings["lr"] = lr
    if own.l1:
        penalty = {"l1": alpha * rho, "l2": alpha * (1.0 - rho)}
    else:
        penalty = {"weight_decay": alpha * (1.0 - rho)}
    return (online.coefficients(online.rule(**settings, **penalty), scalar),
            online.coefficients(online.rule(**settings), scalar))


def online_state(member: str, shape: tuple[int, int], dtype) -> tuple[np.ndarray, ...]:
    """The initial state tables of ``member`` in the online kernel, as its optimizer creates
    them: zeros, and the accumulator (the last) at the member's
    ``initial_accumulator_value``."""
    names = ONLINE[member].state
    initial = family.BY_KEY[member].defaults["initial_accumulator_value"]
    return (*(np.zeros(shape, dtype) for _ in names[:-1]), np.full(shape, initial, dtype))


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
    tables, with the coefficients of `online_rules`."""

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
