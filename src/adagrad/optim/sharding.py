"""DTensor parameters (FSDP2's `fully_shard`, tensor parallelism): a step runs on each
rank's local shard, and state is kept as DTensors placed as the parameter."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from adagrad import members

if TYPE_CHECKING:
    from adagrad.optim.base import AdagradFamily

try:
    from torch.distributed.tensor import DTensor, Shard
except ImportError:  # pragma: no cover - torch built without distributed
    DTensor = None


def is_dtensor(tensor: Any) -> bool:
    """Whether ``tensor`` is a `torch.distributed.tensor.DTensor`."""
    return DTensor is not None and isinstance(tensor, DTensor)


@contextmanager
def local_shards(optimizer: AdagradFamily) -> Iterator[None]:
    """Within the block, every DTensor parameter of ``optimizer`` is its local shard (a
    plain tensor sharing its storage), with its gradient's local shard as ``.grad`` and its
    state's local shards as state; afterwards the parameters are put back and their state,
    new tensors included, is wrapped again as DTensors placed as the parameter."""
    swapped: list[tuple[list[Tensor], int, Tensor, Tensor]] = []
    try:
        for group in optimizer.param_groups:
            for index, param in enumerate(group["params"]):
                if is_dtensor(param):
                    local = _local_shard(optimizer, param)
                    group["params"][index] = local
                    swapped.append((group["params"], index, param, local))
        yield
    finally:
        for params, index, param, local in swapped:
            params[index] = param
            local.grad = None
            if local in optimizer.state:
                optimizer.state[param] = {key: placed_like(param, local, value)
                                          for key, value in optimizer.state.pop(local).items()}


def _local_shard(optimizer: AdagradFamily, param: Tensor) -> Tensor:
    """``param``'s local shard with its gradient's, its state moved onto it (unwrapped).
    Raises NotImplementedError, before anything is written, if a step of the shard alone
    is not the step of the whole."""
    name = type(optimizer).__name__
    if not optimizer._shardable:
        raise NotImplementedError(
            f"{name} cannot step a sharded (DTensor) parameter of shape "
            f"{tuple(param.shape)}: its state spans the whole parameter, which the shards do "
            f"not see (use {', '.join(members.names(shardable=True))})")
    local = param.to_local().detach()
    per_row = local.dim() >= 2 and local.shape[:1] in optimizer._state_shapes(local).values()
    if per_row and any(isinstance(p, Shard) and p.dim != 0 for p in param.placements):
        raise NotImplementedError(
            f"{name} keeps one value per row, so the sharded (DTensor) parameter of shape "
            f"{tuple(param.shape)} must be sharded by rows (Shard(0)), not {param.placements}")
    if param.grad is not None:
        grad = param.grad
        if is_dtensor(grad) and tuple(grad.placements) != tuple(param.placements):
            grad = grad.redistribute(param.device_mesh, param.placements)
        local.grad = grad.to_local() if is_dtensor(grad) else grad
    if param in optimizer.state:
        optimizer.state[local] = {key: value.to_local() if is_dtensor(value) else value
                                  for key, value in optimizer.state.pop(param).items()}
    return local


def placed_like(param: Tensor, local: Tensor, value: Any) -> Any:
    """A state value of ``local`` (the shard of ``param``) as a DTensor: shaped like the
    shard, it is placed as ``param``; one value per row of the shard, it shards with the
    rows; 0-d (a step count, a clock) it is the same on every rank and stays a tensor."""
    if not isinstance(value, Tensor) or value.dim() == 0:
        return value
    if value.shape == local.shape:
        shape = param.shape
    elif local.dim() >= 2 and value.shape == local.shape[:1]:
        if any(isinstance(p, Shard) and p.dim != 0 for p in param.placements):
            raise NotImplementedError(
                f"per-row state of the parameter of shape {tuple(param.shape)} needs it "
                f"sharded by rows (Shard(0)), not {param.placements}")
        shape = param.shape[:1]
    else:
        raise NotImplementedError(f"state of shape {tuple(value.shape)} does not follow the "
                                  f"shard {tuple(local.shape)} of a sharded parameter")
    return DTensor.from_local(value, param.device_mesh, param.placements, run_check=False,
                              shape=shape, stride=_contiguous_strides(shape))


def _contiguous_strides(shape: torch.Size) -> tuple[int, ...]:
    return tuple(math.prod(shape[d + 1:]) for d in range(len(shape)))
