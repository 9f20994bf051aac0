"""FTRL-Proximal (:ref:`algo-ftrl`) on one coordinate: `ftrl_coordinate`, the body every
FTRL kernel runs (dense, on table rows, and the online linear kernel), and `ftrl_tuple`,
the coefficients it takes. Numba only, no torch."""

from __future__ import annotations

import functools
import math

import numba

from adagrad.kernels.engine.rule import FtrlRule


@functools.lru_cache(maxsize=256)
def ftrl_tuple(rule: FtrlRule, scalar) -> tuple:
    """`FtrlRule` as the coefficients `ftrl_coordinate` takes, in the compute type:
    (α, β, λ1, λ2). Every option is a plain coefficient (λ1 = 0, λ2 = 0 are neutral), so
    one straight-line body serves all of them and vectorises."""
    return (scalar(rule.lr), scalar(rule.beta), scalar(rule.l1), scalar(rule.l2))


@numba.njit(inline="always", error_model="numpy")
def ftrl_coordinate(p, g, z, n, rule):
    """:ref:`algo-ftrl` on one coordinate; returns the new (θ, z, n). ``rule`` is an `ftrl_tuple`.

    Every argument comes in the accumulators' dtype (the callers cast θ and g), so
    float32 arithmetic stays float32: mixed with a float64 θ, sqrt(n) would be a float32
    root and sqrt(n + g²) a float64 one, and σ would not be 0 for g = 0. The
    operations and their order are those of the float64 reference; θ = 0 where
    |z| ≤ λ1 is a select, not a branch (``l1 * 0``: a zero of the compute type).
    """
    lr, beta, l1, l2 = rule
    new_n = n + g * g
    root = math.sqrt(new_n)
    sigma = (root - math.sqrt(n)) / lr
    z = z + g - sigma * p
    denom = (beta + root) / lr + l2
    theta = -(z - math.copysign(l1, z)) / denom
    return (l1 * 0 if abs(z) <= l1 else theta), z, new_n  # NaN in z stays NaN in θ
