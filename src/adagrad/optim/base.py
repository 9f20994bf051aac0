"""What the optimizers of the Adagrad family share.

`AdagradFamily` is a thin `torch.optim.Optimizer` shell: it creates state lazily on each
parameter's own device with a dtype policy, checks every gradient before anything is
written, splits sparse gradients into a ``(rows, D)`` table view, and makes checkpoints
load both ways with `torch.optim` while keeping the policy. Subclasses say how state is
initialised and how one group is stepped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.optim.optimizer import _get_scalar_dtype, _use_grad_for_differentiable

from adagrad.optim import ranks, sharding
from adagrad.kernels.engine.clocks import clock_device
from adagrad.optim import checkpoint

_HALF_DTYPES = (torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class SparseGrad:
    """A row gradient of a table: position ``k`` adds ``scale[k]·values[value_of[k]]`` to
    row ``indices[k]``.

    ``table`` is a ``(rows, D)`` view of the parameter; ``indices`` (``(nnz,)``) may
    repeat. For a COO gradient ``values`` are its ``(nnz, D)`` values, uncoalesced, and
    ``value_of`` and ``scale`` are None (the identity, 1). A fused layer's backward passes
    its output gradient as ``values``, each position's output row as ``value_of`` and
    per-sample weights as ``scale``, so that the ``(nnz, D)`` gradient is never built.
    """

    table: Tensor
    indices: Tensor
    values: Tensor
    value_of: Tensor | None = None
    scale: Tensor | None = None

    def view(self, like: Tensor) -> Tensor:
        """``like`` (a tensor shaped like the parameter) as the same table."""
        return like.view(self.table.shape)


def sparse_rows(param: Tensor, grad: Tensor) -> SparseGrad:
    """Split a sparse COO ``grad`` of ``param`` into a table view, indices and values.

    Leading sparse dimensions are flattened into one row index, so any COO gradient
    (``sparse_dim`` ≥ 1) becomes a row update. Raises ValueError when the gradient does
    not fit the parameter.
    """
    if grad.shape != param.shape:
        raise ValueError(f"sparse gradient of shape {tuple(grad.shape)} does not fit the "
                         f"parameter of shape {tuple(param.shape)}")
    if param.is_complex():
        raise ValueError("sparse gradients of complex parameters are not supported")
    if not param.is_contiguous():
        raise ValueError("a parameter with a sparse gradient must be contiguous")
    sparse_dim = grad.sparse_dim()
    rows = math.prod(param.shape[:sparse_dim])
    width = math.prod(param.shape[sparse_dim:])
    indices = grad._indices()
    if sparse_dim == 1:
        flat = indices[0]
    else:
        strides = torch.tensor([math.prod(param.shape[d + 1:sparse_dim])
                                for d in range(sparse_dim)], dtype=indices.dtype,
                               device=indices.device)
        flat = (indices * strides[:, None]).sum(0)
    values = grad._values().reshape(-1, width)
    return SparseGrad(param.view(rows, width), flat, values)


def check_rows(sparse: SparseGrad) -> None:
    """Raise IndexError naming the first row index outside the table."""
    rows = sparse.table.shape[0]
    if sparse.indices.numel() == 0:
        return
    low, high = torch.aminmax(sparse.indices)
    if low >= 0 and high < rows:
        return
    bad = (sparse.indices < 0) | (sparse.indices >= rows)
    index = int(sparse.indices[bad.nonzero()[0, 0]])
    raise IndexError(f"sparse gradient index {index} is out of range for a table of {rows} "
                     f"rows")


def as_real(*tensors: Tensor) -> tuple[Tensor, ...]:
    """Complex tensors as two real coordinates each, as torch.optim does."""
    return tuple(torch.view_as_real(t) if t.is_complex() else t for t in tensors)


def check_sparse_weight_decay(group: dict[str, Any], touched: str) -> None:
    """Raise before anything is written if ``group``'s weight decay cannot apply to a
    sparse gradient (:ref:`algo-sparse`): it needs ``sparse_weight_decay``, and the lazy mode
    needs ``lr·weight_decay < 1``. ``touched`` says what the "touched" mode does."""
    if group["weight_decay"] == 0:
        return
    if group["sparse_weight_decay"] is None:
        raise RuntimeError(
            "weight_decay option is not compatible with sparse gradients: pass "
            f"sparse_weight_decay='lazy' (decoupled, equal to dense) or 'touched' ({touched})")
    lr = float(group["lr"])
    if group["sparse_weight_decay"] == "lazy" and lr * group["weight_decay"] >= 1:
        raise ValueError(f"sparse_weight_decay='lazy' needs lr·weight_decay < 1, got "
                         f"{lr} · {group['weight_decay']}")


def _written(params: list[Tensor]) -> None:
    """Tell autograd that ``params`` changed in place (the numba kernels write through
    numpy, which torch's version counters do not see), so that a later backward through
    a graph that saved their old values raises torch's usual in-place error."""
    if params:
        torch.autograd.graph.increment_version(params)


class AdagradFamily(torch.optim.Optimizer):
    """Base of the family's optimizers (see the module docstring).

    Subclasses define `_state_shapes`, the hooks of the step loop (`_step_dense_one` or
    `_step_dense`, and `_step_sparse`), `_validate` (their hyperparameter check), and list
    the floating-point state that follows the dtype policy in `_accumulators` and the state
    that is always float64 in `_float64_state`; `_init_state` creates the element-wise
    state of most members, `_step_group` is the one step loop.
    """

    #: state keys whose dtype follows `state_dtype(param, group)`.
    _accumulators: tuple[str, ...] = ("sum",)
    #: state keys kept in float64 whatever the parameter's dtype (e.g. decay clocks).
    _float64_state: tuple[str, ...] = ()
    #: keys of `_state_shapes` that may hold negative values (a sum of gradients, not of
    #: squares); a checkpoint's other accumulators must be >= 0.
    _signed_state: tuple[str, ...] = ()

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        # Checkpoints from torch.optim (or older versions of ours) lack our keys, and old
        # ones hold `step` as a number.
        for group in self.param_groups:
            for key, value in self.defaults.items():
                group.setdefault(key, value)
        for param_state in self.state.values():
            if "step" in param_state and not isinstance(param_state["step"], Tensor):
                param_state["step"] = torch.tensor(float(param_state["step"]),
                                                   dtype=_get_scalar_dtype())

    # -- state ----------------------------------------------------------------------

    @staticmethod
    def state_dtype(param: Tensor, group: dict[str, Any]) -> torch.dtype:
        """The accumulators' dtype: the parameter's own for complex parameters (two real
        coordinates each), else ``state_dtype`` if set, else float32 for fp16/bf16
        parameters and the parameter's own dtype otherwise."""
        if param.is_complex():
            return param.dtype
        if group.get("state_dtype") is not None:
            return group["state_dtype"]
        return torch.float32 if param.dtype in _HALF_DTYPES else param.dtype

    def _init_state(self, param: Tensor, group: dict[str, Any]) -> dict[str, Tensor]:
        """Fresh state for ``param`` (step 0), on its device: the step count and one tensor
        of ``param``'s shape per `_accumulators` key, in the policy's dtype, a sum of
        squares starting at the group's ``initial_accumulator_value`` (both parts of a
        complex coordinate), a signed sum (`_signed_state`) at 0. Members whose state has
        another shape override it."""
        dtype = self.state_dtype(param, group)
        value = group["initial_accumulator_value"]
        if param.is_complex():
            value = complex(value, value)
        state = {"step": self._new_step()}
        for key in self._accumulators:
            state[key] = torch.full_like(param, 0 if key in self._signed_state else value,
                                         dtype=dtype, memory_format=torch.preserve_format)
        return state

    def _state_shapes(self, param: Tensor) -> dict[str, tuple[int, ...]]:
        """The shape each non-scalar state tensor of ``param`` must have."""
        raise NotImplementedError

    @staticmethod
    def _new_step() -> Tensor:
        # As torch.optim: a 0-d CPU tensor, float64 only under a float64 default dtype.
        return torch.tensor(0.0, dtype=_get_scalar_dtype())

    def _state_for(self, param: Tensor, group: dict[str, Any]) -> dict[str, Tensor]:
        """``param``'s state, created lazily, and following the parameter if it moved
        device or changed dtype since."""
        state = self.state[param]
        if not state:
            state.update(self._init_state(param, group))
            return state
        dtype = self.state_dtype(param, group)
        on_cpu = param.is_cpu  # CPU with CPU: equal devices, no device objects built
        for key, value in state.items():
            if key == "step" or not isinstance(value, Tensor) or value.dim() == 0:
                continue
            wanted = dtype if key in self._accumulators else value.dtype
            if on_cpu and value.is_cpu and value.dtype == wanted:
                continue
            device = clock_device(param.device) if key in self._float64_state else param.device
            if value.device != device or value.dtype != wanted:
                state[key] = value.to(device=device, dtype=wanted)
        return state

    def _params_with_groups(self) -> Iterator[tuple[Tensor, dict[str, Any]]]:
        for group in self.param_groups:
            for param in group["params"]:
                yield param, group

    # -- stepping -------------------------------------------------------------------

    def _check_grad(self, param: Tensor, group: dict[str, Any]) -> None:
        """Raise before anything is written if ``param.grad`` cannot be applied."""
        if param.grad.is_sparse:
            self._check_sparse(sparse_rows(param, param.grad), group)
        elif param.grad.shape != param.shape:
            raise ValueError(f"gradient of shape {tuple(param.grad.shape)} does not fit the "
                             f"parameter of shape {tuple(param.shape)}")

    def _check_sparse(self, sparse: SparseGrad, group: dict[str, Any]) -> None:
        """Raise before anything is written if the row gradient cannot be applied."""
        check_rows(sparse)

    def _step_group(self, group: dict[str, Any], params: list[Tensor]) -> None:
        """The step loop: step those of ``params`` (all in ``group``) that have a gradient,
        a sparse one as a row gradient (`_row_gradient`, `_step_sparse`), the dense ones
        together (`_step_dense`). Members whose step couples the parameters of a group
        (one norm or one distance per group) override it."""
        dense = []
        for param in params:
            grad = param.grad
            if grad is None:
                continue
            if grad.is_sparse:
                self._step_sparse(param, self._row_gradient(param.detach(), grad), group)
            else:
                dense.append(param)
        if dense:
            self._step_dense(group, dense)

    @staticmethod
    def _row_gradient(param: Tensor, grad: Tensor) -> SparseGrad:
        """The sparse COO ``grad`` of ``param`` as the row gradient `_step_sparse` takes."""
        return sparse_rows(param, grad)

    def _step_dense(self, group: dict[str, Any], params: list[Tensor]) -> None:
        """Step ``params`` (of ``group``, each with a dense gradient), one at a time by
        default; a member that batches its kernels overrides it."""
        for param in params:
            self._step_dense_one(param, param.grad, self._state_for(param, group), group)

    def _step_dense_one(self, param: Tensor, grad: Tensor, state: dict[str, Tensor],
                        group: dict[str, Any]) -> None:
        """One dense step of ``param`` with its ``state`` (created)."""
        raise NotImplementedError

    def _step_sparse(self, param: Tensor, sparse: SparseGrad, group: dict[str, Any]) -> None:
        """Apply the row gradient ``sparse`` of ``param`` (already checked)."""
        raise NotImplementedError

    def _group_of(self, param: Tensor) -> dict[str, Any]:
        """The group holding ``param``; ValueError if it is not this optimizer's."""
        for group in self.param_groups:
            if any(p is param for p in group["params"]):
                return group
        raise ValueError(f"the parameter of shape {tuple(param.shape)} is not one of this "
                         f"optimizer's parameters")

    @torch.compiler.disable
    @_use_grad_for_differentiable
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """Perform one optimization step; ``closure`` re-evaluates the model's loss.

        Under `torch.compile` the step runs eagerly (its kernels are numba or fused
        already); the model's forward and backward around it are still compiled.
        DTensor parameters (FSDP2, tensor parallelism) step on their local shards, and
        under torch.distributed the first step checks that every rank has rank 0's
        hyperparameters (`adagrad.distributed`).
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if ranks.is_state_initialising_step(self):  # DCP creating state: no step
            self._create_state()
            return loss
        ranks.check_ranks_agree(self)
        with sharding.local_shards(self):
            self._step_all()
        return loss

    def _step_all(self) -> None:
        stepped = []
        for param, group in self._params_with_groups():
            if param.grad is not None:
                self._check_grad(param, group)
                stepped.append(param)
        for group in self.param_groups:
            self._step_group(group, group["params"])
        _written(stepped)

    # -- updates inside backward (adagrad.nn) ---------------------------------------

    @torch.no_grad()
    def step_parameter(self, param: Tensor) -> None:
        """One step of ``param`` alone, from its gradient; the gradient is then cleared.

        For updates applied as soon as a gradient is ready (a post-accumulate-grad hook),
        so that `step()` has nothing left to do for ``param``. Raises as `step()` does,
        before anything is written.
        """
        group = self._group_of(param)
        if param.grad is None:
            return
        self._check_grad(param, group)
        self._step_group(group, [param])
        _written([param])
        param.grad = None

    @torch.no_grad()
    def step_rows(self, param: Tensor, sparse: SparseGrad) -> None:
        """One step of ``param`` alone from a row gradient given directly: what a layer
        whose backward applies the update calls, so that the gradient is never built.

        Same state, hyperparameters and result as `step()` with the equivalent sparse
        gradient in ``param.grad``.
        """
        group = self._group_of(param)
        self._check_sparse(sparse, group)
        self._step_sparse(param, sparse, group)
        _written([param])

    def catch_up_rows(self, param: Tensor, rows: Tensor) -> None:
        """Apply the pending lazy work of the rows ``rows`` (may repeat) of ``param``, so
        that they read as in the dense algorithm; what a fused layer calls at lookup.
        Nothing by default."""

    # -- checkpoints ----------------------------------------------------------------

    def flush(self) -> None:
        """Bring any lazily deferred per-row work up to date (nothing by default)."""

    def state_dict(self) -> dict[str, Any]:
        """As `torch.optim.Optimizer.state_dict`; a pure read, so that taking a checkpoint
        never changes the run (pending lazy work is saved as it is, not applied).

        Parameters not stepped yet get their fresh state now, once (it is the state their
        first step then uses): `torch.optim` needs it to load the checkpoint, and creates
        it in its constructor.
        """
        self._create_state()
        return super().state_dict()

    def _create_state(self) -> None:
        """Give every parameter its state now (fresh where it has none)."""
        with sharding.local_shards(self):
            for param, group in self._params_with_groups():
                self._state_for(param, group)

    @torch._disable_dynamo
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """As `torch.optim.Optimizer.load_state_dict` (hooks included), but the checkpoint
        is checked first, after the pre-hooks: a ValueError names the group, the parameter
        and the problem, and the optimizer is left untouched. Loaded state keeps the dtype
        policy (see `adagrad.optim.checkpoint`)."""
        checkpoint.load_state_dict(self, state_dict)

    #: hyperparameters every group of a checkpoint of this optimizer has (torch.optim's).
    _checkpoint_group_keys: tuple[str, ...] = ("lr",)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """As `torch.optim.Optimizer.add_param_group`, then the group is checked
        (`_check_new_group`): an invalid hyperparameter raises ValueError naming it, and
        the group is not added."""
        super().add_param_group(param_group)
        try:
            self._check_new_group(self.param_groups[-1])
        except ValueError:
            self.param_groups.pop()
            raise

    def _check_new_group(self, group: dict[str, Any]) -> None:
        """Raise ValueError naming the argument if a group given to the optimizer is
        invalid; by default as for a loaded group (`_check_group`)."""
        self._check_group(group)

    def _check_group(self, group: dict[str, Any]) -> None:
        """Raise ValueError naming the argument if a (loaded) group's hyperparameters are
        invalid (the member's `_validate`)."""
        self._validate(group)

    @staticmethod
    def _validate(group: dict[str, Any]) -> None:
        """The member's check of a group's hyperparameters (ValueError naming the
        argument); nothing by default."""

    def _check_saved_state(self, label: str, param: Tensor, saved: dict[str, Any]) -> None:
        """Raise ValueError (starting with ``label``) if the saved state of ``param``, whose
        step and accumulators are already checked, does not fit in another way."""

    def share_memory(self) -> None:
        """Create every parameter's state now and move it to shared memory."""
        for param, group in self._params_with_groups():
            for value in self._state_for(param, group).values():
                if isinstance(value, Tensor):
                    value.share_memory_()
