"""What the element-wise Triton kernels share: the launch's warps, the members' block size
and their one-dimensional grid (`adagrad.kernels.<member>.triton`: one launch per tensor,
each program a block of consecutive elements)."""

from __future__ import annotations

import triton
from torch import Tensor

WARPS = 8  # warps per program (untuned: no GPU measured yet)
BLOCK = 2048  # elements per program of the members' one-tensor kernels


def grid(param: Tensor) -> tuple[int]:
    """The programs of a one-tensor launch over ``param``: one per `BLOCK` elements."""
    return (triton.cdiv(param.numel(), BLOCK),)
