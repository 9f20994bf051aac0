"""The losses of `adagrad.linear`: their names, their codes in the online kernel, and
their derivatives with respect to the decision function (numba, inline).

With ``f`` the decision function, ``y ∈ {-1, +1}`` a binary target and ``r = f - y`` a
regression residual (the conventions of scikit-learn's SGD estimators, whose sources
give these derivatives):

=================  =====================================  ==================================
loss               ℓ                                      dℓ/df
=================  =====================================  ==================================
log_loss           log(1 + exp(-y·f))                     -y / (1 + exp(y·f))
hinge              max(0, 1 - y·f)                        -y where y·f < 1, else 0
modified_huber     max(0, 1 - y·f)² for y·f ≥ -1,         -2y·(1 - y·f) for -1 ≤ y·f < 1,
                   -4·y·f otherwise                       -4y below, 0 from y·f ≥ 1
squared_error      r² / 2                                 r
huber              r²/2 for |r| ≤ ε, ε·|r| - ε²/2 beyond  r clipped to [-ε, ε]
=================  =====================================  ==================================

Multiclass: ``log_loss`` is the softmax cross-entropy (dℓ/df_k = p_k - [k = y], p the
softmax of the scores); the other classification losses are one-vs-rest, output ``k``
taking ``y = +1`` for class ``k`` and ``-1`` for the others.
"""

from __future__ import annotations

import math

import numba
import numpy as np

CLASSIFICATION_LOSSES = ("log_loss", "hinge", "modified_huber")
REGRESSION_LOSSES = ("squared_error", "huber")
LOSS_CODES = {name: code for code, name in enumerate(CLASSIFICATION_LOSSES + REGRESSION_LOSSES)}
SOFTMAX = len(LOSS_CODES)  # the code of multiclass log_loss: one softmax over the outputs


def loss_code(loss: str, n_outputs: int) -> int:
    """The kernel's code for ``loss`` with ``n_outputs`` decision functions."""
    if loss == "log_loss" and n_outputs > 1:
        return SOFTMAX
    return LOSS_CODES[loss]


@numba.njit(inline="always", error_model="numpy")
def binary_slope(code, f, y, epsilon):
    """dℓ/df of the binary or regression loss ``code`` at score ``f``, target ``y``."""
    if code == 0:  # log_loss, written to stay finite for large |y·f|
        z = y * f
        if z > 0:
            e = math.exp(-z)
            return -y * e / (1.0 + e)
        return -y / (1.0 + math.exp(z))
    if code == 1:  # hinge
        return -y if y * f < 1.0 else 0.0
    if code == 2:  # modified_huber
        z = y * f
        if z >= 1.0:
            return 0.0
        if z >= -1.0:
            return -2.0 * y * (1.0 - z)
        return -4.0 * y
    r = f - y
    if code == 3:  # squared_error
        return r
    return min(max(r, -epsilon), epsilon)  # huber


@numba.njit(inline="always", error_model="numpy")
def slopes(code, scores, target, epsilon, out):
    """dℓ/df_k for every output into ``out``. ``target`` is the class index for a
    classifier with several outputs, ±1 for a binary one, the value for a regressor."""
    K = scores.size
    if code == SOFTMAX:
        top = scores.max()
        total = 0.0
        for k in range(K):
            out[k] = math.exp(scores[k] - top)
            total += out[k]
        for k in range(K):
            out[k] = out[k] / total - (1.0 if k == target else 0.0)
    elif K == 1:
        out[0] = binary_slope(code, scores[0], target, epsilon)
    else:
        for k in range(K):
            out[k] = binary_slope(code, scores[k], 1.0 if k == target else -1.0, epsilon)


@numba.njit(cache=True, error_model="numpy")
def batch_slopes(code, scores, targets, weights, epsilon):
    """``weights[i]·dℓ/df`` for every row of ``scores`` (n, K): the minibatch engine's."""
    out = np.empty(scores.shape, np.float64)
    row = np.empty(scores.shape[1], np.float64)
    for i in range(scores.shape[0]):
        slopes(code, scores[i], targets[i], epsilon, row)
        for k in range(scores.shape[1]):
            out[i, k] = weights[i] * row[k]
    return out
