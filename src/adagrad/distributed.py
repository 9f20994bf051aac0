"""The family on `torch.distributed`: sharded (DTensor) parameters, checks across ranks,
and the collectives of fused tables under data parallelism.

- **DTensor parameters** (FSDP2's `fully_shard`, tensor parallelism): `local_shards`
  runs a step on each rank's local shard, so the numba kernels see plain tensors and
  nothing is gathered to full size. State is created on the shard and kept as a DTensor
  with the parameter's placements (row-wise state, one value per row, shards with its
  rows), which is what `torch.distributed.checkpoint` saves and reshards. This is exact
  for every member whose state is elementwise or per row; `AdagradNorm` (one norm over
  the whole parameter) and `FullMatrixAdagrad` (blocks across rows) are refused.
- **Ranks agree**: at an optimizer's first step, when a default process group of more
  than one rank exists, every rank's hyperparameters are compared with rank 0's
  (`check_ranks_agree`); a difference raises on every rank, so none is left waiting.
- **DCP before the first step**: `torch.distributed.checkpoint.state_dict.get_state_dict`
  initialises an optimizer whose state is empty by a step with lr 0 on zero gradients.
  Ours creates the fresh state then and changes nothing else (`is_state_initialising_step`),
  so a checkpoint taken before the first step is the true state and resuming from it
  never changes the run (torch's own Adagrad creates its state in its constructor).
- **Checkpoints**: `save_checkpoint` / `load_checkpoint` are DCP's save and load with
  `get_state_dict` / `set_state_dict`, plus one thing DCP cannot do alone: state that
  appears only once it is needed (lazy decay clocks, catch-up tables) is absent from a
  fresh optimizer, so DCP, which loads the keys of the state it is given, would drop it;
  `load_checkpoint` creates it first from the checkpoint's metadata, placed as the
  parameter (any world size: DCP reshards), so that resuming never changes the run.
- **Fused tables** (`adagrad.nn`, ``update_in_backward(optimizer, process_group=...)``):
  `gather_rows` all-gathers every rank's ids and output gradients and averages them over
  the ranks, as `DistributedDataParallel` averages gradients, so that every replica
  applies the same global update to the union of the touched rows, once.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

if TYPE_CHECKING:
    from adagrad.optim.base import AdagradFamily, SparseGrad

try:
    from torch.distributed.tensor import DTensor, Shard
except ImportError:  # pragma: no cover - torch built without distributed
    DTensor = None

ProcessGroup = Any  # torch.distributed.ProcessGroup (absent from builds without distributed)


def is_dtensor(tensor: Any) -> bool:
    """Whether ``tensor`` is a `torch.distributed.tensor.DTensor`."""
    return DTensor is not None and isinstance(tensor, DTensor)


# -- DTensor parameters ------------------------------------------------------------------


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
                optimizer.state[param] = {key: _as_placed_like(param, local, value)
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
            f"not see (use Adagrad, RowWiseAdagrad, ProximalAdagrad, AdagradDA or FTRL)")
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


def _as_placed_like(param: Tensor, local: Tensor, value: Any) -> Any:
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


# -- the first step ----------------------------------------------------------------------

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


def is_state_initialising_step(optimizer: AdagradFamily) -> bool:
    """Whether this step is `torch.distributed.checkpoint`'s initialisation of empty state
    (``_init_optim_state``): no state yet, every group's lr 0 and every gradient zero."""
    if optimizer.state or not optimizer.param_groups:
        return False
    if any(float(group["lr"]) != 0 for group in optimizer.param_groups):
        return False
    params = [p for group in optimizer.param_groups for p in group["params"]]
    return all(p.grad is not None and not p.grad.is_sparse and not p.grad.any()
               for p in params if p.requires_grad)


# -- fused tables under data parallelism -------------------------------------------------


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


def ignore_fused_tables(model: nn.Module) -> list[str]:
    """Leave the weights of ``model``'s fused tables that have a process group out of a
    `DistributedDataParallel` built on ``model`` afterwards (their layers average their
    gradients themselves), and broadcast them from their group's first rank, as DDP does
    for its own parameters, so every replica starts alike. Returns their names."""
    from adagrad.nn.embedding import _UpdateInBackward

    names = []
    for prefix, module in model.named_modules():
        group = getattr(module, "_process_group", None)
        if isinstance(module, _UpdateInBackward) and group is not None:
            names.append(f"{prefix}.weight" if prefix else "weight")
            with torch.no_grad():
                dist.broadcast(module.weight, dist.get_global_rank(group, 0), group=group)
    nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
        model, names)
    return names


# -- distributed checkpoints -------------------------------------------------------------

_OPTIMIZER = "optimizer"


def save_checkpoint(checkpoint_id: str, model: nn.Module, optimizer: AdagradFamily) -> None:
    """Save ``model`` and ``optimizer`` with `torch.distributed.checkpoint` (every rank
    calls it; sharded state is written as shards)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optimizer_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, _OPTIMIZER: optimizer_state}, checkpoint_id=checkpoint_id)


def load_checkpoint(checkpoint_id: str, model: nn.Module, optimizer: AdagradFamily) -> None:
    """Load a `save_checkpoint` (of any world size) into ``model`` and ``optimizer``, which
    are built as for training; see the module docstring. A checkpoint that does not fit
    raises naming the parameter, and the optimizer is left as it was."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    saved = FileSystemReader(checkpoint_id).read_metadata().state_dict_metadata
    had_state = bool(optimizer.state)
    optimizer._create_state()
    added: list[tuple[Tensor, str]] = []
    try:
        _add_saved_optional_state(saved, model, optimizer, added)
        model_state, optimizer_state = get_state_dict(model, optimizer)
        state = {"model": model_state, _OPTIMIZER: optimizer_state}
        _check_fits(saved, state, type(optimizer).__name__)
        dcp.load(state, checkpoint_id=checkpoint_id)
        set_state_dict(model, optimizer, model_state_dict=state["model"],
                       optim_state_dict=state[_OPTIMIZER])
    except Exception:
        for param, key in added:
            optimizer.state[param].pop(key, None)
        if not had_state:
            optimizer.state.clear()
        raise


def _add_saved_optional_state(saved: dict[str, Any], model: nn.Module,
                              optimizer: AdagradFamily, added: list[tuple[Tensor, str]]) -> None:
    """Give ``optimizer`` placeholders for the state keys the checkpoint (its metadata
    ``saved``) has and it lacks, shaped and placed as the saved ones will load; each is
    listed in ``added``."""
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata
    from torch.distributed.checkpoint.state_dict import _get_fqns

    for name, param in model.named_parameters():
        state = optimizer.state.get(param)
        for fqn in _get_fqns(model, name) if state is not None else ():
            prefix = f"{_OPTIMIZER}.state.{fqn}."
            for entry, metadata in saved.items():
                key = entry[len(prefix):]
                if entry.startswith(prefix) and "." not in key and key not in state \
                        and isinstance(metadata, TensorStorageMetadata):
                    state[key] = _placeholder(fqn, key, param, tuple(metadata.size),
                                              metadata.properties.dtype)
                    added.append((param, key))


def _check_fits(saved: dict[str, Any], state: dict[str, Any], optimizer_name: str) -> None:
    """Raise ValueError naming the parameter if a tensor ``state`` is to load is absent
    from the checkpoint (its metadata ``saved``) or saved with another shape."""
    tensors = {f"model.{fqn}": (fqn, "", value) for fqn, value in state["model"].items()}
    for fqn, param_state in state[_OPTIMIZER]["state"].items():
        for key, value in param_state.items():
            tensors[f"{_OPTIMIZER}.state.{fqn}.{key}"] = (fqn, key, value)
    for entry, (fqn, key, value) in tensors.items():
        if not isinstance(value, Tensor):
            continue
        what = f"{optimizer_name}'s state {key!r}" if key else "its value"
        if entry not in saved:
            raise ValueError(f"checkpoint does not fit parameter {fqn!r}: it lacks {what} "
                             f"(a checkpoint of another model or optimizer?)")
        size = tuple(getattr(saved[entry], "size", ()))
        if size != tuple(value.shape):
            raise ValueError(f"checkpoint does not fit parameter {fqn!r}: {what} has shape "
                             f"{size} there, {tuple(value.shape)} here")


def _placeholder(fqn: str, key: str, param: Tensor, shape: tuple[int, ...],
                 dtype: torch.dtype) -> Tensor:
    """A tensor DCP can load the saved state ``key`` of ``param`` into."""
    if not shape or not is_dtensor(param):
        return torch.zeros(shape, dtype=dtype, device="cpu" if not shape else param.device)
    local = param.to_local()
    if shape == tuple(param.shape):
        local_shape = local.shape
    elif param.dim() >= 2 and shape == tuple(param.shape[:1]):
        local_shape = local.shape[:1]
    else:
        raise ValueError(f"checkpoint does not fit parameter {fqn!r} of shape "
                         f"{tuple(param.shape)}: its state {key!r} has shape {shape}, which "
                         f"cannot be resharded as the parameter")
    return _as_placed_like(param, local, torch.zeros(local_shape, dtype=dtype,
                                                     device=local.device))
