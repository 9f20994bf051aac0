"""The hyperparameters a tensor's last step ran with, kept in its state.

A lazy catch-up that replays steps an untouched row skipped (``sparse_catch_up=True`` of
`ProximalAdagrad` and `AdagradDA`) must replay them with the hyperparameters those steps
had, not with whatever the param group holds by the time the row is looked up (an lr
scheduler changes it between steps). Each value is a 0-d float64 CPU tensor in the
parameter's state, so that checkpoints carry it and reading it costs no device sync.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor


def recorded(state: dict[str, Any], keys: Sequence[str]) -> tuple[float, ...] | None:
    """The values recorded under ``keys``, or None if there are none."""
    if keys[0] not in state:
        return None
    return tuple(state[key].item() for key in keys)


def record(state: dict[str, Any], keys: Sequence[str], values: Sequence[float]) -> None:
    """Record ``values`` under ``keys`` (writing only what changed)."""
    for key, value in zip(keys, values):
        if key not in state:
            state[key] = torch.tensor(float(value), dtype=torch.float64)
        elif state[key].item() != value:
            state[key].fill_(value)


def forget(state: dict[str, Any], keys: Sequence[str]) -> None:
    """Drop the values recorded under ``keys``."""
    for key in keys:
        state.pop(key, None)


def check_saved(label: str, saved: dict[str, Any], keys: Sequence[str]) -> None:
    """ValueError (starting with ``label``) unless ``saved`` has all of ``keys`` or none,
    each a finite real number >= 0 held in a 0-d tensor."""
    present = [key for key in keys if key in saved]
    if present and len(present) != len(keys):
        missing = [key for key in keys if key not in saved]
        raise ValueError(f"state_dict does not fit {label}: its state has "
                         f"{', '.join(map(repr, present))} but not "
                         f"{', '.join(map(repr, missing))}")
    for key in present:
        value = saved[key]
        good = (isinstance(value, Tensor) and value.dim() == 0 and value.is_floating_point()
                and math.isfinite(value.item()) and value.item() >= 0)
        if not good:
            raise ValueError(f"state_dict does not fit {label}: its state {key!r} is "
                             f"{value!r}, expected a finite number >= 0 in a 0-d tensor")
