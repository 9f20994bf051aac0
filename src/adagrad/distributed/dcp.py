"""Distributed checkpoints: `torch.distributed.checkpoint` with `get_state_dict` /
`set_state_dict`, plus the optional state a fresh optimizer lacks (see the package
docstring)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from adagrad.optim.sharding import is_dtensor, placed_like

if TYPE_CHECKING:
    from adagrad.optim.base import AdagradFamily

_OPTIMIZER = "optimizer"


def save_checkpoint(checkpoint_id: str, model: nn.Module, optimizer: AdagradFamily) -> None:
    """Save ``model`` and ``optimizer`` with `torch.distributed.checkpoint` (every rank
    calls it; sharded state is written as shards).

    Example:
        In one process (DCP then warns that it saves and loads in a single process):

        >>> import tempfile, torch, adagrad
        >>> from adagrad.distributed import load_checkpoint, save_checkpoint
        >>> model = torch.nn.Linear(3, 1)
        >>> optimizer = adagrad.Adagrad(model.parameters(), lr=0.1)
        >>> model(torch.ones(2, 3)).sum().backward()
        >>> optimizer.step()
        >>> folder = tempfile.mkdtemp()
        >>> save_checkpoint(folder, model, optimizer)
        >>> resumed = torch.nn.Linear(3, 1)
        >>> resumed_optimizer = adagrad.Adagrad(resumed.parameters(), lr=0.1)
        >>> load_checkpoint(folder, resumed, resumed_optimizer)
        >>> torch.equal(resumed.weight, model.weight), int(resumed_optimizer.state[resumed.weight]["step"])
        (True, 1)
    """
    import torch.distributed.checkpoint as torch_dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optimizer_state = get_state_dict(model, optimizer)
    torch_dcp.save({"model": model_state, _OPTIMIZER: optimizer_state}, checkpoint_id=checkpoint_id)


def load_checkpoint(checkpoint_id: str, model: nn.Module, optimizer: AdagradFamily) -> None:
    """Load a `save_checkpoint` (of any world size) into ``model`` and ``optimizer``, which
    are built as for training; see the module docstring. A checkpoint that does not fit
    raises naming the parameter, and the optimizer is left as it was."""
    import torch.distributed.checkpoint as torch_dcp
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
        torch_dcp.load(state, checkpoint_id=checkpoint_id)
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
    return placed_like(param, local, torch.zeros(local_shape, dtype=dtype,
                                                     device=local.device))
