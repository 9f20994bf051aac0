"""Lazy per-row catch-up for sparse updates (:ref:`algo-sparse`).

A row that a sparse gradient does not touch still decays in the dense algorithm: its
parameter by ``(1 - lr_s·wd)`` each step under decoupled weight decay, its accumulator by
``ρ_s`` each step under ``accumulator_decay``. Rather than touch every row every step, each
tensor keeps a running log-product (a "clock") and each row a snapshot of that clock from
when it was last brought up to date; the pending factor of a row is
``exp(clock - snapshot[row])``, applied when the row is next touched or flushed. Clocks in
the log domain stay exact when the learning rate or ρ change between steps (schedulers).
On devices without float64 (MPS) the snapshots are kept on the CPU (`clock_device`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

#: device types without float64 (Apple's MPS): their tensors' clocks live on the CPU.
DEVICES_WITHOUT_FLOAT64 = ("mps",)


def clock_device(device: torch.device) -> torch.device:
    """Where the float64 per-row clocks of a tensor on ``device`` live: on ``device``
    itself, or on the CPU where it has no float64 (the snapshots are indexed there and
    the factors come back in float32)."""
    return torch.device("cpu") if device.type in DEVICES_WITHOUT_FLOAT64 else device


def factor_dtype(device: torch.device) -> torch.dtype:
    """The dtype of decay factors applied on ``device``: float64, or float32 without it."""
    return torch.float32 if device.type in DEVICES_WITHOUT_FLOAT64 else torch.float64


@dataclass(frozen=True)
class RowClocks:
    """The clocks of one tensor, after this step's factor has been added.

    Attributes:
      param_log: ``Σ_{s≤t} log(1 - lr_s·wd)``, the decoupled-decay clock.
      row_param_log: float64 ``(rows,)`` snapshots of ``param_log``, or None when the
        tensor has no lazy weight decay.
      sum_log: ``Σ_{s≤t} log ρ_s``, the accumulator-decay clock.
      row_sum_log: float64 ``(rows,)`` snapshots of ``sum_log``, or None when ρ has
        always been 1.
    """

    param_log: float = 0.0
    row_param_log: Tensor | None = None
    sum_log: float = 0.0
    row_sum_log: Tensor | None = None
