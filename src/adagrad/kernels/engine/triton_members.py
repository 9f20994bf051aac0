"""Deprecated: the family members' dense Triton kernels by name, kept for one release as the
old path ``adagrad.kernels.triton_members`` (every access warns). The device dispatch
(`cuda_dispatch.member_kernel`) takes the member's own module, named by its key.

No kernel lives here: ``dense_<package>_`` is the function of that name in the member's
own ``adagrad.kernels.<package>.triton`` (``dense_ftrl_`` is
`adagrad.kernels.ftrl.triton.dense_ftrl_`), for the members whose description
(`adagrad.members`) lists a ``triton`` kernel module; it is looked up at each access.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

from adagrad import members
from adagrad.kernels.engine.triton_launch import BLOCK

__all__ = ["BLOCK"]


def _home(name: str) -> str | None:
    """The Triton module holding the kernel ``name``, or None."""
    if not (name.startswith("dense_") and name.endswith("_")):
        return None
    package = f"adagrad.kernels.{name[len('dense_'):-1]}"
    for member in members.MEMBERS:
        if member.kernels == package and "triton" in member.paths:
            return f"{package}.triton"
    return None


def __getattr__(name: str) -> Any:
    home = _home(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(f"{__name__}.{name} is deprecated: use {home}.{name}", DeprecationWarning,
                  stacklevel=2)
    return getattr(importlib.import_module(home), name)
