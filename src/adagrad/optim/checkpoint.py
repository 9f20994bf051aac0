"""Loading checkpoints into the family's optimizers: check everything, then load.

`load_state_dict` is `torch.optim.Optimizer.load_state_dict` with three differences:

- the whole checkpoint is checked before anything changes, after the load pre-hooks have
  run (a refused checkpoint raises a ValueError that names the group, the parameter and
  the problem, and leaves the optimizer as it was);
- state keeps the optimizer's dtype policy (float32 accumulators for fp16/bf16
  parameters, float64 clocks), where torch would cast every tensor to the parameter's
  dtype;
- every state tensor is copied, so two optimizers loaded from one dict share nothing
  (torch shares the ``step`` tensor).
"""

from __future__ import annotations

import math
from collections import defaultdict
from copy import deepcopy
from itertools import chain
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from adagrad.kernels.engine.clocks import clock_device

if TYPE_CHECKING:
    from adagrad.optim.base import AdagradFamily


def load_state_dict(optimizer: AdagradFamily, state_dict: dict[str, Any]) -> None:
    """Run the load pre-hooks, check the result (`check_state_dict`), load it, then run
    the post-hooks, as `torch.optim.Optimizer.load_state_dict` does."""
    state_dict = state_dict.copy()  # shallow, as torch: hooks may edit or replace it
    for pre_hook in optimizer._optimizer_load_state_dict_pre_hooks.values():
        result = pre_hook(optimizer, state_dict)
        if result is not None:
            state_dict = result
    saved_groups = deepcopy(state_dict["param_groups"])
    check_state_dict(optimizer, saved_groups, state_dict["state"])
    saved_ids = [saved["params"] for saved in saved_groups]
    groups = [_loaded_group(optimizer, group, saved)
              for group, saved in zip(optimizer.param_groups, saved_groups)]
    state: defaultdict[Any, dict[str, Any]] = defaultdict(dict)
    for ids, group in zip(saved_ids, groups):
        for saved_id, param in zip(ids, group["params"]):
            saved = state_dict["state"].get(saved_id)
            if saved:
                state[param] = {key: _loaded_value(optimizer, param, group, key, value)
                                for key, value in saved.items()}
    placed = set(chain.from_iterable(saved_ids))
    for key, value in state_dict["state"].items():  # as torch: state of no parameter is kept
        if key not in placed:
            state[key] = value
    optimizer.__setstate__({"state": state, "param_groups": groups})
    for post_hook in optimizer._optimizer_load_state_dict_post_hooks.values():
        post_hook(optimizer)


def check_state_dict(optimizer: AdagradFamily, saved_groups: list[dict[str, Any]],
                     saved_state: dict[Any, dict[str, Any]]) -> None:
    """Raise ValueError, naming the group, the parameter and the problem, if the
    checkpoint does not fit ``optimizer``: another number of groups or parameters, group
    hyperparameters missing (a checkpoint of another optimizer) or invalid, or a
    parameter's state with unknown or missing keys, a wrong shape or dtype, or values
    that no run produces (NaN, a negative sum of squares)."""
    groups = optimizer.param_groups
    if len(saved_groups) != len(groups):
        raise ValueError(f"loaded state dict has {len(saved_groups)} parameter groups, this "
                         f"optimizer has {len(groups)}")
    position = 0
    for index, (group, saved) in enumerate(zip(groups, saved_groups)):
        if len(saved["params"]) != len(group["params"]):
            raise ValueError(f"loaded state dict contains a parameter group that doesn't "
                             f"match the size of optimizer's group: group {index} has "
                             f"{len(saved['params'])} parameters there, "
                             f"{len(group['params'])} here")
        _check_group(optimizer, index, group, saved)
        names = group.get("param_names") or [None] * len(group["params"])
        for saved_id, param, name in zip(saved["params"], group["params"], names):
            label = f"group {index}, parameter {position}" + (f" ({name!r})" if name else "")
            _check_param_state(optimizer, label, param, saved_state.get(saved_id) or {})
            position += 1


def _check_group(optimizer: AdagradFamily, index: int, group: dict[str, Any],
                 saved: dict[str, Any]) -> None:
    name = type(optimizer).__name__
    missing = [key for key in optimizer._checkpoint_group_keys if key not in saved]
    if missing:
        raise ValueError(f"loaded state dict's group {index} lacks {', '.join(map(repr, missing))}"
                         f": it is not a checkpoint of {name}")
    try:
        optimizer._check_group(_loaded_group(optimizer, group, deepcopy(saved)))
    except ValueError as error:
        raise ValueError(f"loaded state dict's group {index}: {error}") from None


def _check_param_state(optimizer: AdagradFamily, label: str, param: Tensor,
                       saved: dict[str, Any]) -> None:
    if not saved:  # no state yet: it is created at the parameter's first step
        return
    shapes = optimizer._state_shapes(param)
    known = {"step", *shapes, *optimizer._float64_state}
    unknown = [key for key in saved if key not in known]
    if unknown:
        raise ValueError(f"state_dict does not fit {label}: its state has "
                         f"{', '.join(map(repr, unknown))}, which {type(optimizer).__name__} "
                         f"does not keep (a checkpoint of another optimizer?)")
    missing = [key for key in ("step", *shapes) if key not in saved]
    if missing:
        raise ValueError(f"state_dict does not fit {label}: its state lacks "
                         f"{', '.join(map(repr, missing))}")
    _check_step(label, saved["step"])
    for key, shape in shapes.items():
        _check_accumulator(label, param, key, saved[key], shape,
                           signed=key in optimizer._signed_state)
    optimizer._check_saved_state(label, param, saved)


def _check_step(label: str, step: Any) -> None:
    number = float(step) if isinstance(step, (Tensor, int, float)) else math.nan
    if isinstance(step, Tensor) and step.numel() != 1:
        number = math.nan
    if not (math.isfinite(number) and number >= 0):
        raise ValueError(f"state_dict does not fit {label}: its state 'step' is {step!r}, "
                         f"expected a count >= 0")


def _check_accumulator(label: str, param: Tensor, key: str, value: Any,
                       shape: tuple[int, ...], signed: bool = False) -> None:
    problem = f"state_dict does not fit {label} of shape {tuple(param.shape)}, dtype {param.dtype}"
    if not isinstance(value, Tensor):
        raise ValueError(f"{problem}: its state '{key}' is a {type(value).__name__}, "
                         f"expected a tensor")
    if tuple(value.shape) != shape:
        raise ValueError(f"{problem}: its state '{key}' has shape {tuple(value.shape)}, "
                         f"expected {shape}")
    if not (value.is_floating_point() or value.is_complex()) \
            or value.is_complex() != param.is_complex():
        raise ValueError(f"{problem}: its state '{key}' has dtype {value.dtype}")
    real = torch.view_as_real(value) if value.is_complex() else value
    if real.isnan().any():
        raise ValueError(f"{problem}: its state '{key}' holds NaN")
    if not signed and (real < 0).any():
        raise ValueError(f"{problem}: its state '{key}' holds negative values (a sum of "
                         f"squares is >= 0)")


def check_clock(label: str, key: str, value: Any, shape_ok: bool) -> None:
    """A float64 clock or snapshot table: a real, finite tensor of the expected shape."""
    if not (isinstance(value, Tensor) and value.is_floating_point() and shape_ok):
        shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise ValueError(f"state_dict does not fit {label}: its state '{key}' is {shape}")
    if not value.isfinite().all():
        raise ValueError(f"state_dict does not fit {label}: its state '{key}' is not finite")


def _loaded_group(optimizer: AdagradFamily, group: dict[str, Any],
                  saved: dict[str, Any]) -> dict[str, Any]:
    """The saved group with this optimizer's parameters (and names, if the checkpoint has
    none), and our defaults for keys a `torch.optim` checkpoint lacks."""
    saved["params"] = group["params"]
    if "param_names" in group and "param_names" not in saved:
        saved["param_names"] = group["param_names"]
    for key, value in optimizer.defaults.items():
        saved.setdefault(key, value)
    return saved


def _loaded_value(optimizer: AdagradFamily, param: Tensor, group: dict[str, Any], key: str,
                  value: Any) -> Any:
    """A copy of one saved state value (already checked), on the parameter's device, in
    the dtype policy. A ``step`` saved as a number is made a tensor by ``__setstate__``."""
    if key == "step":
        return value.clone() if isinstance(value, Tensor) else value
    if key in optimizer._float64_state:  # 0-d clocks stay where they were saved
        device = value.device if value.dim() == 0 else clock_device(param.device)
        return value.to(device=device, dtype=torch.float64, copy=True)
    return value.to(device=param.device, dtype=optimizer.state_dtype(param, group), copy=True)
