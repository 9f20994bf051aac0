"""Adagrad (:ref:`algo-adagrad`) on one coordinate: `adagrad_coordinate`, the body every
Adagrad kernel runs (dense, on table rows, and the online linear kernel of
`adagrad.linear.online`), and `rule_tuple`, the coefficients it takes. Numba only, no
torch: `adagrad fit` imports it without torch."""

from __future__ import annotations

import functools
import math

import numba

from adagrad.kernels.engine.rule import StepRule


@functools.lru_cache(maxsize=256)
def rule_tuple(rule: StepRule, scalar) -> tuple:
    """`StepRule` as the branch-free coefficients `adagrad_coordinate` takes, in the
    compute type: (lr, sign, l2, shrink, ρ, ε inside, ε outside, zero guard).

    Every option becomes a neutral coefficient when off (sign 1, l2 0, shrink 1, ρ 1,
    one of the two ε 0), so one straight-line body serves all of them and vectorises.
    """
    decoupled = rule.decoupled and rule.weight_decay != 0
    return (scalar(rule.lr), scalar(-1.0 if rule.maximize else 1.0),
            scalar(0.0 if decoupled else rule.weight_decay),
            scalar(1 - rule.lr * rule.weight_decay if decoupled else 1.0),
            scalar(rule.accumulator_decay),
            scalar(rule.eps if rule.eps_inside else 0.0),
            scalar(0.0 if rule.eps_inside else rule.eps), rule.eps_inside)


@numba.njit(inline="always", error_model="numpy")
def adagrad_coordinate(p, g, s, rule):
    """:ref:`algo-adagrad` on one coordinate; returns the new (θ, G). ``rule`` is a `rule_tuple`.

    Scalars come in the accumulator's dtype, so float32 arithmetic stays float32.
    """
    lr, sign, l2, shrink, rho, eps_inside, eps_outside, zero_guard = rule
    g = sign * g + l2 * p
    p = p * shrink
    s = rho * s + g * g
    denom = math.sqrt(s + eps_inside) + eps_outside
    step = g / denom
    if zero_guard and denom == 0:  # ε inside: G + ε == 0 only where g == 0, the step is 0
        step = g - g
    return p - lr * step, s
