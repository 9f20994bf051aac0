"""Proximal Adagrad (:ref:`algo-proximal`) on one coordinate: `proximal_coordinate`, the body
every ProximalAdagrad kernel runs (dense, on table rows, and the online linear kernel), and
`proximal_tuple`, the coefficients it takes. Numba only, no torch."""

from __future__ import annotations

import functools
import math

import numba

from adagrad.kernels.engine.rule import ProximalRule


@functools.lru_cache(maxsize=256)
def proximal_tuple(rule: ProximalRule, scalar) -> tuple:
    """`ProximalRule` as the coefficients `proximal_coordinate` takes, in the compute
    type: (lr, sign, l1, l2, ε, 0, 1) (the constants typed, so float32 stays float32)."""
    return (scalar(rule.lr), scalar(-1.0 if rule.maximize else 1.0), scalar(rule.l1),
            scalar(rule.l2), scalar(rule.eps), scalar(0.0), scalar(1.0))


@numba.njit(inline="always", error_model="numpy")
def proximal_coordinate(p, g, s, rule):
    """:ref:`algo-proximal` on one coordinate; returns the new (θ, G). ``rule`` is a `proximal_tuple`;
    scalars come in the accumulator's dtype."""
    lr, sign, l1, l2, eps, zero, one = rule
    g = sign * g
    s = s + g * g
    eta = lr / (math.sqrt(s) + eps)
    v = p - eta * g
    shrunk = abs(v) - eta * l1
    shrunk = zero if shrunk < zero else shrunk  # max(·, 0) that keeps NaN and vectorises
    return math.copysign(shrunk, v) / (one + eta * l2), s
