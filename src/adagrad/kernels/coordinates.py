"""The per-coordinate bodies every numba kernel of Adagrad, ProximalAdagrad and FTRL runs
(dense, on table rows, and the online linear kernel of `adagrad.linear.online`), with the
coefficient tuples they take, and the 64-bit mix that hashes row ids and text features.

Numba and numpy only, no torch: `adagrad fit` imports this module without torch.
"""

from __future__ import annotations

import functools
import math

import numba
import numpy as np

from adagrad.kernels.rule import FtrlRule, ProximalRule, StepRule


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
    """§1 on one coordinate; returns the new (θ, G). ``rule`` is a `rule_tuple`.

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


@functools.lru_cache(maxsize=256)
def proximal_tuple(rule: ProximalRule, scalar) -> tuple:
    """`ProximalRule` as the coefficients `proximal_coordinate` takes, in the compute
    type: (lr, sign, l1, l2, ε, 0, 1) (the constants typed, so float32 stays float32)."""
    return (scalar(rule.lr), scalar(-1.0 if rule.maximize else 1.0), scalar(rule.l1),
            scalar(rule.l2), scalar(rule.eps), scalar(0.0), scalar(1.0))


@numba.njit(inline="always", error_model="numpy")
def proximal_coordinate(p, g, s, rule):
    """§4 on one coordinate; returns the new (θ, G). ``rule`` is a `proximal_tuple`;
    scalars come in the accumulator's dtype."""
    lr, sign, l1, l2, eps, zero, one = rule
    g = sign * g
    s = s + g * g
    eta = lr / (math.sqrt(s) + eps)
    v = p - eta * g
    shrunk = abs(v) - eta * l1
    shrunk = zero if shrunk < zero else shrunk  # max(·, 0) that keeps NaN and vectorises
    return math.copysign(shrunk, v) / (one + eta * l2), s


@functools.lru_cache(maxsize=256)
def ftrl_tuple(rule: FtrlRule, scalar) -> tuple:
    """`FtrlRule` as the coefficients `ftrl_coordinate` takes, in the compute type:
    (α, β, λ1, λ2). Every option is a plain coefficient (λ1 = 0, λ2 = 0 are neutral), so
    one straight-line body serves all of them and vectorises."""
    return (scalar(rule.lr), scalar(rule.beta), scalar(rule.l1), scalar(rule.l2))


@numba.njit(inline="always", error_model="numpy")
def ftrl_coordinate(p, g, z, n, rule):
    """§6 on one coordinate; returns the new (θ, z, n). ``rule`` is an `ftrl_tuple`.

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


@numba.njit(inline="always", error_model="numpy")
def splitmix64(value):
    """A 64-bit hash of ``value`` (the splitmix64 finaliser): every output bit depends on
    every input bit, so the partition (high bits) and the hash-table slot (low bits) are
    independent, and consecutive ids spread evenly."""
    h = np.uint64(value)
    h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))
