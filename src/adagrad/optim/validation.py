"""Hyperparameter checks shared by the optimizers: a ValueError that names the argument.

Where `torch.optim` has a message for the same mistake, its wording is kept (users and
torch's own test database match on it) and the argument's name is added.
"""

from __future__ import annotations

import numbers
from collections.abc import Collection

import torch
from torch import Tensor

# torch's wording for each argument it checks.
_TORCH_LABELS = {
    "lr": "Invalid learning rate",
    "lr_decay": "Invalid lr_decay value",
    "weight_decay": "Invalid weight_decay value",
    "initial_accumulator_value": "Invalid initial_accumulator_value value",
    "eps": "Invalid epsilon value",
}


def _label(name: str) -> str:
    return _TORCH_LABELS.get(name, f"Invalid {name} value")


def _number(name: str, value: float | Tensor) -> float:
    """A hyperparameter as a number (a 1-element tensor's value)."""
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"Tensor {name} must be 1-element (argument `{name}`)")
        return float(value.detach())
    return value


def check_non_negative(name: str, value: float | Tensor) -> None:
    """``value >= 0`` and not NaN, else ValueError naming ``name``."""
    number = _number(name, value)
    if not number >= 0.0:
        raise ValueError(f"{_label(name)}: {value} (argument `{name}` must be >= 0)")


def check_in_unit_interval(name: str, value: float) -> None:
    """``0 < value <= 1``, else ValueError naming ``name``."""
    if not (isinstance(value, (int, float)) and 0.0 < value <= 1.0):
        raise ValueError(f"{_label(name)}: {value} (argument `{name}` must be in (0, 1])")


def check_choice(name: str, value: object, choices: Collection[object]) -> None:
    """``value`` is one of ``choices``, else ValueError naming ``name`` and the choices."""
    if value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{_label(name)}: {value!r} (argument `{name}` must be one of "
                         f"{listed})")


def check_state_dtype(value: torch.dtype | None) -> None:
    """None or a floating-point torch dtype, else ValueError naming `state_dtype`."""
    if value is not None and not (isinstance(value, torch.dtype) and value.is_floating_point):
        raise ValueError(f"Invalid state_dtype value: {value!r} (argument `state_dtype` must "
                         f"be None or a floating-point torch.dtype)")


def check_positive(name: str, value: float | Tensor) -> None:
    """``value > 0`` (a real number, or a 1-element tensor as a learning rate may be),
    else ValueError naming ``name``."""
    if isinstance(value, Tensor):
        positive = _number(name, value) > 0.0
    else:
        positive = not isinstance(value, bool) and isinstance(value, numbers.Real) and value > 0.0
    if not positive:
        raise ValueError(f"{_label(name)}: {value!r} (argument `{name}` must be > 0)")


def check_positive_int(name: str, value: object, allow_none: bool = False) -> None:
    """``value`` an integer ≥ 1 (or None if ``allow_none``), else ValueError naming
    ``name``. Booleans and integral floats are refused: a size is an int."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        expected = "None or an integer >= 1" if allow_none else "an integer >= 1"
        raise ValueError(f"{_label(name)}: {value!r} (argument `{name}` must be {expected})")
