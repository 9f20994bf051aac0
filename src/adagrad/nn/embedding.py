"""`Embedding` and `EmbeddingBag` that can apply their optimizer's update inside backward.

They are `torch.nn.Embedding` and `torch.nn.EmbeddingBag` (same arguments, weights,
``state_dict`` and forward). After ``layer.update_in_backward(optimizer)``, backward hands
the table's row gradient straight to the optimizer (`AdagradFamily.step_rows`): the
``(ids, D)`` sparse gradient is never built, and each touched row is read and written
once. This is the data flow of FBGEMM's table-batched embeddings; the result is that of
``optimizer.step()`` on the sparse gradient torch's layer would produce, and the state
stays the optimizer's own (its ``state_dict`` holds the table's ``sum``).

One backward pass is one step of the table, with the gradients of all its uses summed:
each lookup's backward keeps its row gradient, and the weight's post-accumulate-grad hook,
which autograd runs once every use of the weight has its gradient, applies them together
(tied or shared tables, a table looked up several times, a weight also used directly as
an output projection all give torch's result). At lookup, rows whose lazy decay is
pending (``sparse_weight_decay="lazy"``, ``accumulator_decay`` < 1) are caught up first,
so the forward reads what dense Adagrad would: the fused path equals dense at every step.

What changes for the table once fused, as with FBGEMM:

- its update happens during ``loss.backward()``, with the group's lr at that moment;
  `step()` then skips it (its ``.grad`` stays None), so gradient clipping, gradient
  accumulation over several backward passes and `GradScaler` do not apply to it;
- each backward pass through the layer is one optimizer step of the table.

Under data parallelism, ``update_in_backward(optimizer, process_group=group)`` makes
every rank apply the global batch's update: backward all-gathers the ranks' ids and output
gradients, averaged over the ranks as `DistributedDataParallel` averages gradients, and
updates the union of the touched rows once (`adagrad.distributed.gather_rows`); lookups
that train catch up the union of the ranks' ids, so the replicas stay identical (a lookup
without grad, e.g. evaluation, catches up only its own ids, with no collective: replicas
may then differ by float rounding). Every rank must run the same lookups. Leave such tables out of DDP
(`adagrad.distributed.ignore_fused_tables(model)` before wrapping); a fused table inside
DDP's forward without a process group, or still among DDP's parameters, is refused.

Memory: on Linux a table of 16 MiB or more that the layer allocates itself (no ``_weight``)
lives in transparent huge pages (``madvise(MADV_HUGEPAGE)`` before its first touch), and
once fused, the optimizer's per-row state of the table is moved there after its first step
(`adagrad.kernels.engine.huge_pages`): scattered rows then cost far fewer TLB misses. Values
never change; a table passed in (``from_pretrained``) keeps its memory.

Configurations the fused backward does not cover (``mode="max"``,
``scale_grad_by_freq=True``) take torch's own gradient, and the same hook steps the
weight from it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from adagrad.kernels.engine.bags import bag_of_positions
from adagrad.kernels.engine.huge_pages import huge_page_empty_like, move_to_huge_pages_
from adagrad.nn import collectives
from adagrad.optim import ranks, sharding
from adagrad.optim.base import AdagradFamily, SparseGrad, sparse_rows


class _UpdateInBackward:
    """What the two layers share: the optimizer they hand their gradient to, and the row
    gradients of this backward pass's lookups, waiting to be applied as one step."""

    weight: Tensor
    _optimizer: AdagradFamily | None = None
    _hook: RemovableHandle | None = None
    _pending: list[tuple[int, SparseGrad]]  # (the backward pass's graph task, row gradient)
    _process_group: Any = None  # the data-parallel ranks whose gradients are averaged
    _placed_state: tuple[int, ...] = ()  # addresses of the state already in huge pages
    _constructed = False  # whether the table was allocated (reset_parameters' first call)

    def reset_parameters(self) -> None:
        """torch's initialisation (the same random values), of a table placed in huge pages
        (`adagrad.kernels.engine.huge_pages`: a large CPU table's scattered rows then cost far
        fewer TLB misses). Called by the constructor when no ``_weight`` is given; a later
        call re-initialises in place, as torch's does."""
        if not self._constructed:
            self._constructed = True
            fresh = huge_page_empty_like(self.weight.detach())
            if fresh is not None:
                self.weight.data = fresh
        super().reset_parameters()

    def _place_state(self, weight: Tensor) -> None:
        """Move the optimizer's per-row state of the table (tensors with its rows) into
        huge pages, once per state tensor (values unchanged). A copy: while it runs, the
        process holds the state twice (measured: 12.3 GB peak RSS for a 16M x 64 Adagrad
        table, against 8.7 GB without the move)."""
        tensors = [value for value in self._optimizer.state[weight].values()
                   if isinstance(value, Tensor) and value.dim() >= 1
                   and value.shape[0] == weight.shape[0]]
        placed = tuple(value.data_ptr() for value in tensors)
        if placed != self._placed_state:
            for value in tensors:
                move_to_huge_pages_(value)
            self._placed_state = tuple(value.data_ptr() for value in tensors)

    def update_in_backward(self, optimizer: AdagradFamily | None,
                           process_group: Any = None) -> _UpdateInBackward:
        """Apply ``optimizer``'s update to ``weight`` inside backward from now on (None:
        back to a plain gradient). ``weight`` must be one of the optimizer's parameters.
        With ``process_group`` (e.g. ``torch.distributed.group.WORLD``) each step applies
        the gradient averaged over its ranks (see the module docstring). Returns the
        layer."""
        if optimizer is not None:
            if not isinstance(optimizer, AdagradFamily):
                raise TypeError(f"update_in_backward needs an optimizer of the adagrad "
                                f"family, got {type(optimizer).__name__}")
            optimizer._group_of(self.weight)  # raises if the weight is not among its params
            if sharding.is_dtensor(self.weight):
                raise TypeError("update_in_backward needs a replicated table, not a "
                                "sharded (DTensor) weight: keep the table out of FSDP or "
                                "tensor parallelism and pass process_group instead")
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        self._optimizer = optimizer
        self._process_group = process_group if optimizer is not None else None
        self._pending = []
        if optimizer is not None:
            self._hook = self.weight.register_post_accumulate_grad_hook(self._apply_update)
        return self

    def __setstate__(self, state: dict[str, Any]) -> None:
        # A copy (pickle, deepcopy) has its own weight, without the hook: attach it anew.
        super().__setstate__(state)
        self._hook = None
        self.update_in_backward(self._optimizer, self._process_group)

    def _fused(self) -> bool:
        return (self._optimizer is not None and torch.is_grad_enabled()
                and self.weight.requires_grad and not self.scale_grad_by_freq)

    def _catch_up(self, input: Tensor) -> None:
        """Bring the rows about to be read up to date on their pending lazy decay, so that
        the forward reads what the dense algorithm would (:ref:`algo-sparse`). A training
        lookup with a process group catches up every rank's ids, so that the replicas
        stay identical."""
        if self._optimizer is None:
            return
        if self.weight.requires_grad and torch.is_grad_enabled():
            collectives.check_fused_table(self, self._process_group)
            if self._process_group is not None:
                input = collectives.gather_ids(input, self._process_group)
        self._optimizer.catch_up_rows(self.weight, input)

    def _defer(self, indices: Tensor, values: Tensor, value_of: Tensor | None,
               scale: Tensor | None) -> Tensor:
        """Keep one lookup's row gradient for `_apply_update`; returns the (empty) sparse
        gradient the lookup hands autograd for the weight, so that the weight's
        post-accumulate-grad hook runs once every use of the weight has its gradient."""
        weight = self.weight
        table = weight.detach().view(weight.shape[0], -1)
        self._pending.append((torch._C._current_graph_task_id(),
                              SparseGrad(table, indices, values, value_of, scale)))
        return torch.sparse_coo_tensor(
            torch.empty((1, 0), dtype=torch.long, device=weight.device),
            torch.empty((0,) + weight.shape[1:], dtype=weight.dtype, device=weight.device),
            weight.shape, check_invariants=False, is_coalesced=True)

    def _apply_update(self, weight: Tensor) -> None:
        """The weight's post-accumulate-grad hook: one optimizer step for the backward
        pass, with the gradients of every lookup and every other use summed, as torch's
        layer and ``optimizer.step()`` would do. Lookups alone take the row kernel with
        all their positions (it sums duplicates); any other gradient is added to theirs
        and stepped as `step()` would.

        Row gradients of other backward passes, whose hook never ran (`torch.autograd.grad`
        without the weight among its inputs, a backward that failed), are dropped: those
        passes leave torch's own layer untouched too.
        """
        task = torch._C._current_graph_task_id()
        pending = [rows for rows_task, rows in self._pending if rows_task == task]
        self._pending = []
        if self._process_group is not None:
            pending = self._average_over_ranks(pending, weight)
        grad = weight.grad
        if pending and (grad is None or (grad.is_sparse and grad._nnz() == 0)):
            weight.grad = None
            self._optimizer.step_rows(weight, _concatenate(pending))
        else:
            if pending:
                weight.grad = grad + _as_coo(_concatenate(pending), weight)
            self._optimizer.step_parameter(weight)
        self._place_state(weight)

    def _average_over_ranks(self, pending: list[SparseGrad], weight: Tensor) -> list[SparseGrad]:
        """This backward's gradient of ``weight`` (``pending`` lookups and ``weight.grad``)
        averaged over the process group's ranks, the same on every rank: row gradients are
        all-gathered (a sparse ``grad`` joins them), a dense ``grad`` is all-reduced.
        The first time, the ranks' hyperparameters are checked to agree."""
        ranks.check_ranks_agree(self._optimizer)
        grad = weight.grad
        if grad is not None and grad.is_sparse:
            pending = pending + [sparse_rows(weight.detach(), grad)]
            weight.grad = grad = None
        if grad is not None:
            weight.grad = collectives.average_dense(grad, self._process_group)
        if not pending:
            return []
        return [collectives.gather_rows(_concatenate(pending), self._process_group)]


def _concatenate(parts: list[SparseGrad]) -> SparseGrad:
    """One row gradient with the positions of all ``parts``: since the kernels sum a
    row's positions first, its update is that of the parts' summed gradient."""
    if len(parts) == 1:
        return parts[0]
    values = torch.cat([part.values for part in parts])
    value_of = scale = None
    if any(part.value_of is not None for part in parts):
        starts = torch.tensor([0] + [part.values.shape[0] for part in parts[:-1]]).cumsum(0)
        value_of = torch.cat([_sources(part) + start for part, start in zip(parts, starts)])
    if any(part.scale is not None for part in parts):
        scale = torch.cat([part.scale.to(values.dtype) if part.scale is not None
                           else values.new_ones(part.indices.numel()) for part in parts])
    return SparseGrad(parts[0].table, torch.cat([part.indices for part in parts]), values,
                      value_of, scale)


def _sources(part: SparseGrad) -> Tensor:
    """The row of ``part.values`` each of its positions reads."""
    if part.value_of is not None:
        return part.value_of.long()
    return torch.arange(part.indices.numel(), device=part.indices.device)


def _as_coo(rows: SparseGrad, weight: Tensor) -> Tensor:
    """A row gradient as the sparse COO gradient torch's own layer would produce."""
    values = rows.values.index_select(0, _sources(rows))
    if rows.scale is not None:
        values = values * rows.scale.to(values.dtype).unsqueeze(1)
    return torch.sparse_coo_tensor(rows.indices.long().unsqueeze(0),
                                   values.reshape((-1,) + weight.shape[1:]).to(weight.dtype),
                                   weight.shape, check_invariants=False)  # ids checked at lookup


class Embedding(_UpdateInBackward, nn.Embedding):
    """`torch.nn.Embedding` whose update can run inside backward (see the module
    docstring and `update_in_backward`).

    Example:
        >>> import torch, adagrad, adagrad.nn
        >>> table = adagrad.nn.Embedding(10, 4)
        >>> optimizer = adagrad.Adagrad(table.parameters(), lr=0.1)
        >>> table.update_in_backward(optimizer)   # returns the table
        Embedding(10, 4)
        >>> table(torch.tensor([1, 1, 3])).sum().backward()   # rows 1 and 3 step here
        >>> table.weight.grad is None, int(optimizer.state[table.weight]["step"])
        (True, 1)
    """

    def forward(self, input: Tensor) -> Tensor:
        self._catch_up(input)
        if not self._fused():
            return super().forward(input)
        return _FusedEmbedding.apply(self.weight, input, self)


class EmbeddingBag(_UpdateInBackward, nn.EmbeddingBag):
    """`torch.nn.EmbeddingBag` whose update can run inside backward (see the module
    docstring and `update_in_backward`). Modes ``"sum"`` and ``"mean"`` (with
    ``per_sample_weights``, ``padding_idx``, ``include_last_offset``) take the fused
    backward; ``"max"`` updates from torch's gradient.

    Example:
        >>> import torch, adagrad, adagrad.nn
        >>> table = adagrad.nn.EmbeddingBag(100, 8, mode="sum")
        >>> optimizer = adagrad.RowWiseAdagrad(table.parameters(), lr=0.1)
        >>> table.update_in_backward(optimizer)   # returns the table
        EmbeddingBag(100, 8, mode='sum')
        >>> ids, offsets = torch.tensor([3, 14, 15, 92, 65]), torch.tensor([0, 2])
        >>> table(ids, offsets).sum().backward()   # the touched rows step here
        >>> int(optimizer.state[table.weight]["sum"].count_nonzero())
        5
    """

    def forward(self, input: Tensor, offsets: Tensor | None = None,
                per_sample_weights: Tensor | None = None) -> Tensor:
        self._catch_up(input)
        if not self._fused() or self.mode == "max":
            return super().forward(input, offsets, per_sample_weights)
        return _FusedEmbeddingBag.apply(self.weight, input, offsets, per_sample_weights, self)


class _FusedEmbedding(torch.autograd.Function):
    """``F.embedding`` forward; backward applies the optimizer to the table's rows."""

    @staticmethod
    def forward(ctx: Any, weight: Tensor, input: Tensor, layer: Embedding) -> Tensor:
        ctx.layer = layer
        ctx.save_for_backward(input)
        # Detached: torch's forward-only path (the gradient is ours to compute).
        return F.embedding(input, weight.detach(), layer.padding_idx, layer.max_norm,
                           layer.norm_type)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor, None, None]:
        (input,) = ctx.saved_tensors
        layer = ctx.layer
        indices = input.reshape(-1)
        values = grad_output.reshape(indices.numel(), layer.embedding_dim)
        value_of = None
        if layer.padding_idx is not None:  # as torch: the padding row gets no gradient
            value_of = (indices != layer.padding_idx).nonzero().squeeze(1)
            indices = indices[value_of]
        return layer._defer(indices, values, value_of, None), None, None


class _FusedEmbeddingBag(torch.autograd.Function):
    """``F.embedding_bag`` forward (sum or mean); backward applies the optimizer to the
    table's rows, each position reading its bag's output gradient."""

    @staticmethod
    def forward(ctx: Any, weight: Tensor, input: Tensor, offsets: Tensor | None,
                per_sample_weights: Tensor | None, layer: EmbeddingBag) -> Tensor:
        # Detached: torch's forward-only path (the gradient is ours to compute).
        output = F.embedding_bag(input, weight.detach(), offsets, layer.max_norm, layer.norm_type,
                                 False, layer.mode, False, per_sample_weights,
                                 layer.include_last_offset, layer.padding_idx)
        ctx.layer = layer
        ctx.weights_need_grad = ctx.needs_input_grad[3]
        # The table is saved only to differentiate the per-sample weights (the update comes
        # after every lookup's backward, so it reads the values the forward read).
        ctx.save_for_backward(input, offsets, per_sample_weights,
                              weight if ctx.weights_need_grad else None)
        return output

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        input, offsets, per_sample_weights, weight = ctx.saved_tensors
        layer = ctx.layer
        indices, bag_of = _positions(input, offsets, layer.include_last_offset)
        positions = torch.arange(indices.numel(), device=indices.device)
        if layer.padding_idx is not None:  # as torch: padding ids are left out of their bag
            positions = (indices != layer.padding_idx).nonzero().squeeze(1)
            indices, bag_of = indices[positions], bag_of[positions]
        weights = weights_grad = None
        if per_sample_weights is not None:
            weights = per_sample_weights.reshape(-1)[positions]
        if ctx.weights_need_grad:  # d output[b] / d weights[k] = ⟨θ[ids[k]], grad_output[b]⟩
            weights_grad = torch.zeros_like(per_sample_weights).reshape(-1)
            weights_grad[positions] = (weight[indices] * grad_output[bag_of]).sum(1).to(
                weights_grad.dtype)
            weights_grad = weights_grad.view_as(per_sample_weights)
        values = grad_output
        if layer.mode == "mean":
            bag_sizes = torch.bincount(bag_of, minlength=grad_output.shape[0]).clamp_min_(1)
            values = grad_output / bag_sizes.unsqueeze(1).to(grad_output.dtype)
        return layer._defer(indices, values, bag_of, weights), None, None, weights_grad, None


def _positions(input: Tensor, offsets: Tensor | None,
               include_last_offset: bool) -> tuple[Tensor, Tensor]:
    """The ids of an `EmbeddingBag` call, flattened, and the bag of each one."""
    if input.dim() == 2:
        return input.reshape(-1), torch.arange(input.numel(), device=input.device) // input.shape[1]
    if include_last_offset:  # the last offset ends the last bag; ids after it are unused
        input, offsets = input[:int(offsets[-1])], offsets[:-1]
    return input, bag_of_positions(offsets, input.numel())


def is_fused_table(module: nn.Module) -> bool:
    """Whether ``module`` is one of this package's fused tables (`Embedding`,
    `EmbeddingBag`), whose update can run in backward (`update_in_backward`)."""
    return isinstance(module, _UpdateInBackward)
