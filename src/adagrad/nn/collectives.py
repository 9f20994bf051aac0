"""The collectives of fused tables under data parallelism: what a layer with a process
group calls in backward (`gather_ids`, `gather_rows`, `average_dense`) and its check beside
`DistributedDataParallel` (`check_fused_table`). They need only `torch.distributed`, so they
live below the layers; `adagrad.distributed` exports them with the rest of its API."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

if TYPE_CHECKING:
    from adagrad.optim.base import SparseGrad

ProcessGroup = Any  # torch.distributed.ProcessGroup (absent from builds without distributed)


def gather_rows(rows: SparseGrad, group: ProcessGroup) -> SparseGrad:
    """Every rank's row gradient in one, in rank order, averaged over the ranks (its
    values divided by the world size, as `DistributedDataParallel` averages): the same
    `SparseGrad` on every rank of ``group``. Positions keep their own row, value and scale;
    the kernels sum a row's positions, so each touched row is updated once."""
    from adagrad.optim.base import SparseGrad

    positions = rows.indices.numel()
    value_of = rows.value_of if rows.value_of is not None else torch.arange(
        positions, device=rows.indices.device)
    sizes = _all_gather_sizes([positions, rows.values.shape[0], int(rows.scale is not None)],
                              rows.indices.device, group)
    world = len(sizes)
    ids = _all_gather_varying(torch.stack([rows.indices.long(), value_of.long()]),
                              [s[0] for s in sizes], group, dim=1)
    values = _all_gather_varying(rows.values, [s[1] for s in sizes], group)
    starts = [0]
    for size in sizes[:-1]:
        starts.append(starts[-1] + size[1])
    scale = None
    if any(size[2] for size in sizes):
        own = rows.scale.to(rows.values.dtype) if rows.scale is not None \
            else rows.values.new_ones(positions)
        scale = torch.cat(_all_gather_varying(own, [s[0] for s in sizes], group))
    return SparseGrad(rows.table, torch.cat([part[0] for part in ids]),
                      torch.cat(values) / world,
                      torch.cat([part[1] + start for part, start in zip(ids, starts)]), scale)


def average_dense(grad: Tensor, group: ProcessGroup) -> Tensor:
    """A dense gradient summed over the ranks of ``group`` and divided by their number."""
    total = grad.clone()
    dist.all_reduce(total, group=group)
    return total.div_(dist.get_world_size(group))


def gather_ids(ids: Tensor, group: ProcessGroup) -> Tensor:
    """Every rank's ``ids`` (flattened), in rank order, on every rank of ``group``."""
    ids = ids.reshape(-1)
    sizes = _all_gather_sizes([ids.numel()], ids.device, group)
    return torch.cat(_all_gather_varying(ids, [s[0] for s in sizes], group))


def _all_gather_sizes(sizes: list[int], device: torch.device,
                      group: ProcessGroup) -> list[list[int]]:
    mine = torch.tensor(sizes, dtype=torch.long, device=device)
    everyone = [torch.empty_like(mine) for _ in range(dist.get_world_size(group))]
    dist.all_gather(everyone, mine, group=group)
    return [size.tolist() for size in everyone]


def _all_gather_varying(tensor: Tensor, lengths: list[int], group: ProcessGroup,
                        dim: int = 0) -> list[Tensor]:
    """All-gather tensors whose length along ``dim`` differs by rank (``lengths``)."""
    longest = max(lengths)
    padded = tensor.new_zeros(tensor.shape[:dim] + (longest,) + tensor.shape[dim + 1:])
    padded.narrow(dim, 0, tensor.shape[dim]).copy_(tensor)
    everyone = [torch.empty_like(padded) for _ in lengths]
    dist.all_gather(everyone, padded, group=group)
    return [part.narrow(dim, 0, length) for part, length in zip(everyone, lengths)]


def check_fused_table(layer: nn.Module, group: ProcessGroup | None) -> None:
    """Raise RuntimeError if the fused table ``layer`` runs inside the forward of a
    `DistributedDataParallel` in a way that would let the replicas drift apart: without a
    process group (each rank would apply only its own gradient), or with one but with the
    weight still among DDP's parameters (DDP would reduce it again and fill it with
    zeros)."""
    ddp = nn.parallel.DistributedDataParallel._get_active_ddp_module()
    if ddp is None:
        return
    if group is None:
        raise RuntimeError(
            f"{type(layer).__name__} updates inside backward but runs inside "
            f"DistributedDataParallel without a process group, so each rank would apply "
            f"only its own gradient: call layer.update_in_backward(optimizer, "
            f"process_group=torch.distributed.group.WORLD) and "
            f"adagrad.distributed.ignore_fused_tables(model) before wrapping the model")
    if any(param is layer.weight for param in getattr(ddp, "_module_parameters", ())):
        raise RuntimeError(
            f"{type(layer).__name__} updates inside backward with a process group, but its "
            f"weight is also one of DistributedDataParallel's parameters: call "
            f"adagrad.distributed.ignore_fused_tables(model) before wrapping the model")
