"""The fused tables (`adagrad.nn`) beside `DistributedDataParallel`: leaving their weights
out of DDP's own reduction. Their collectives are `adagrad.nn.collectives`."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from adagrad.nn import is_fused_table


def ignore_fused_tables(model: nn.Module) -> list[str]:
    """Leave the weights of ``model``'s fused tables that have a process group out of a
    `DistributedDataParallel` built on ``model`` afterwards (their layers average their
    gradients themselves), and broadcast them from their group's first rank, as DDP does
    for its own parameters, so every replica starts alike. Returns their names."""
    names = []
    for prefix, module in model.named_modules():
        group = getattr(module, "_process_group", None)
        if is_fused_table(module) and group is not None:
            names.append(f"{prefix}.weight" if prefix else "weight")
            with torch.no_grad():
                dist.broadcast(module.weight, dist.get_global_rank(group, 0), group=group)
    nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
        model, names)
    return names
