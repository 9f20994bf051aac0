"""What every rank must agree on, checked at an optimizer's first step, and DCP's
initialisation of empty state recognised."""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

import torch.distributed as dist
from torch import Tensor

from adagrad.kernels.engine import cuda_dispatch

if TYPE_CHECKING:
    from adagrad.optim.base import AdagradFamily

_checked: weakref.WeakSet = weakref.WeakSet()


def check_ranks_agree(optimizer: AdagradFamily) -> None:
    """At ``optimizer``'s first step, when a default process group of more than one rank
    exists: raise ValueError on every rank if any rank's groups (their number, or one
    hyperparameter) differ from rank 0's. Later steps cost nothing."""
    if optimizer in _checked:
        return
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        _checked.add(optimizer)
        return
    mine = [{key: _comparable(group[key]) for key in optimizer.defaults if key in group}
            for group in optimizer.param_groups]
    everyone: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, mine)
    for rank, theirs in enumerate(everyone[1:], start=1):
        problem = _difference(everyone[0], theirs)
        if problem:
            raise ValueError(f"{type(optimizer).__name__}: rank {rank} was given other "
                             f"hyperparameters than rank 0: {problem}; every rank must "
                             f"build the optimizer alike")
    _checked.add(optimizer)


def _comparable(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.tolist()
    return value if isinstance(value, (bool, int, float, str, type(None))) else repr(value)


def _difference(first: list[dict[str, Any]], other: list[dict[str, Any]]) -> str | None:
    if len(first) != len(other):
        return f"{len(other)} parameter groups, rank 0 has {len(first)}"
    for index, (ours, theirs) in enumerate(zip(first, other)):
        for key in sorted(ours.keys() | theirs.keys()):
            if ours.get(key) != theirs.get(key):
                return f"group {index} '{key}' is {theirs.get(key)!r} there, " \
                       f"{ours.get(key)!r} on rank 0"
    return None


def _is_host_zero(lr: Any) -> bool:
    """lr == 0 read without a device synchronisation: DCP's zero is a float or a CPU tensor,
    so a learning rate on an accelerator is never it."""
    if isinstance(lr, Tensor):
        return cuda_dispatch.device_type(lr) == "cpu" and float(lr) == 0
    return float(lr) == 0


def is_state_initialising_step(optimizer: AdagradFamily) -> bool:
    """Whether this step is `torch.distributed.checkpoint`'s initialisation of empty state
    (``_init_optim_state``): no state yet, every group's lr 0 and every gradient zero."""
    if optimizer.state or not optimizer.param_groups:
        return False
    if not all(_is_host_zero(group["lr"]) for group in optimizer.param_groups):
        return False
    params = [p for group in optimizer.param_groups for p in group["params"]]
    return all(p.grad is not None and not p.grad.is_sparse and not p.grad.any()
               for p in params if p.requires_grad)
