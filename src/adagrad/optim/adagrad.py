"""`Adagrad`: a drop-in for `torch.optim.Adagrad`, exact, with the conventions users port
from and sparse updates done right (:ref:`algo-adagrad`, :ref:`algo-sparse`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor
from torch.optim.optimizer import ParamsT

from adagrad import kernels
from adagrad.kernels import RowClocks, StepRule
from adagrad.kernels.engine.rule import AdagradGroupRule, decayed_step_rule
from adagrad.kernels.engine import cuda_dispatch
from adagrad.kernels.adagrad import cpu as dense_cpu
from adagrad.kernels.adagrad import torch_ops as portable
from adagrad.kernels.engine.clocks import clock_device
from adagrad.kernels.engine.elementwise import PARALLEL_MIN_ELEMENTS
from adagrad.optim import checkpoint, conventions
from adagrad.optim.base import (
    AdagradFamily,
    SparseGrad,
    as_real,
    check_sparse_weight_decay,
)
from adagrad.optim.validation import (
    check_choice,
    check_in_unit_interval,
    check_non_negative,
    check_state_dtype,
)

EPS_PLACEMENTS = ("outside", "inside")
SPARSE_WEIGHT_DECAY_MODES = (None, "lazy", "touched")


@dataclass(frozen=True)
class LazyDecay:
    """Where one lazily applied decay (:ref:`algo-sparse`) keeps its clocks in the state:
    ``clock`` the tensor's running log-product of factors (0-d), ``snapshots`` each row's
    value of it when the row was last brought up to date (``(rows,)``), both float64."""

    clock: str
    snapshots: str


PARAM_DECAY = LazyDecay("param_log", "row_param_log")  # decoupled weight decay of θ
SUM_DECAY = LazyDecay("sum_log", "row_sum_log")  # accumulator decay ρ of G


def _check_hyperparameters(group: dict[str, Any]) -> None:
    for name in ("lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps"):
        check_non_negative(name, group[name])
    check_choice("eps_placement", group["eps_placement"], EPS_PLACEMENTS)
    check_in_unit_interval("accumulator_decay", group["accumulator_decay"])
    check_state_dtype(group["state_dtype"])
    check_choice("sparse_weight_decay", group["sparse_weight_decay"], SPARSE_WEIGHT_DECAY_MODES)


class Adagrad(AdagradFamily):
    r"""Adagrad (Duchi, Hazan, Singer, JMLR 2011): per-coordinate steps from the running
    sum of squared gradients.

    With only `torch.optim.Adagrad`'s arguments it is that optimizer: same defaults, same
    ``state_dict`` (state ``step`` and ``sum``), same results. The update (:ref:`algo-adagrad`)::

        t ← t + 1;  lr_t = lr / (1 + (t-1)·lr_decay)
        g ← g + wd·θ                      (or θ ← θ·(1 - lr_t·wd) if decoupled_weight_decay)
        G ← ρ·G + g²
        θ ← θ - lr_t·g / (sqrt(G) + ε)    (eps_placement="outside", torch)
        θ ← θ - lr_t·g / sqrt(G + ε)      (eps_placement="inside", the textbook formula)

    Sparse gradients (``nn.Embedding(sparse=True)``) take a deduplicating row update
    (:ref:`algo-sparse`), equal to the dense update with zero rows.

    Args:
      params: parameters or parameter groups; every keyword below may be set per group.
      lr: learning rate (float or 1-element tensor). Default 1e-2.
      lr_decay: inverse-time decay of the learning rate per step. Default 0.
      weight_decay: decay coefficient ``wd``. Default 0.
      initial_accumulator_value: ``G₀``; honoured per group. Default: the convention's (0).
      eps: ε. Default: the convention's (1e-10).
      foreach, fused: accepted for compatibility; the fastest exact path is always taken.
      maximize: ascend the objective. Default False.
      differentiable: let autograd through the step (torch ops, slower). Default False.
      eps_placement: ``"outside"`` (torch, TensorFlow, FBGEMM) or ``"inside"`` the square
        root (optax, Keras, the textbook formula). Default: the convention's ("outside").
      decoupled_weight_decay: ``θ ← θ·(1 - lr_t·wd)`` instead of L2 added to ``g``.
        Default: the convention's (False).
      accumulator_decay: ρ in ``G ← ρ·G + g²``, in (0, 1]; below 1 the step no longer
        only shrinks. Default 1.0 (plain Adagrad).
      state_dtype: dtype of ``sum``. Default: float32 for fp16/bf16 parameters (torch keeps
        them in the parameter's dtype, where ``sum`` stalls at 256 for bf16), else the
        parameter's.
      convention: ``"torch"`` (default), ``"optax"``, ``"keras"``, ``"tensorflow"`` or
        ``"fbgemm"``: sets eps, eps_placement, initial_accumulator_value and
        decoupled_weight_decay as those libraries do; explicit arguments win.
      sparse_weight_decay: weight decay for sparse gradients: ``"lazy"`` (decoupled,
        caught up per row when next touched and by `flush()`; equals dense decoupled
        decay) or ``"touched"`` (L2 on the touched rows only, as TensorFlow, Keras and
        FBGEMM). Default None: sparse gradients with weight_decay raise, as in torch.

    Example:
        The first step moves each coordinate by about ``lr`` against its gradient's sign
        (``G = g²``, so ``g / sqrt(G) = ±1``):

        >>> import torch, adagrad
        >>> w = torch.nn.Parameter(torch.tensor([1.0, 1.0]))
        >>> optimizer = adagrad.Adagrad([w], lr=0.1)
        >>> w.grad = torch.tensor([2.0, -0.5])
        >>> optimizer.step()
        >>> w.data
        tensor([0.9000, 1.1000])
    """

    _float64_state = (PARAM_DECAY.clock, PARAM_DECAY.snapshots, SUM_DECAY.clock,
                      SUM_DECAY.snapshots)
    _checkpoint_group_keys = ("lr", "lr_decay", "eps", "weight_decay",
                              "initial_accumulator_value")

    def __init__(self, params: ParamsT, lr: float | Tensor = 1e-2, lr_decay: float = 0,
                 weight_decay: float = 0, initial_accumulator_value: float | None = None,
                 eps: float | None = None, foreach: bool | None = None, *,
                 maximize: bool = False, differentiable: bool = False,
                 fused: bool | None = None, eps_placement: str | None = None,
                 decoupled_weight_decay: bool | None = None, accumulator_decay: float = 1.0,
                 state_dtype: torch.dtype | None = None, convention: str | None = None,
                 sparse_weight_decay: str | None = None) -> None:
        chosen = conventions.resolve(
            convention, eps=eps, eps_placement=eps_placement,
            initial_accumulator_value=initial_accumulator_value,
            decoupled_weight_decay=decoupled_weight_decay)
        defaults = dict(lr=lr, lr_decay=lr_decay, eps=chosen["eps"], weight_decay=weight_decay,
                        initial_accumulator_value=chosen["initial_accumulator_value"],
                        foreach=foreach, maximize=maximize, differentiable=differentiable,
                        fused=fused, eps_placement=chosen["eps_placement"],
                        decoupled_weight_decay=chosen["decoupled_weight_decay"],
                        accumulator_decay=accumulator_decay, state_dtype=state_dtype,
                        sparse_weight_decay=sparse_weight_decay)
        _check_hyperparameters(defaults)
        if fused and differentiable:
            raise RuntimeError("`fused` does not support `differentiable`")
        if fused and foreach:
            raise RuntimeError("`fused` and `foreach` cannot be `True` together.")
        super().__init__(params, defaults)

    # -- state ----------------------------------------------------------------------

    def _state_shapes(self, param: Tensor) -> dict[str, tuple[int, ...]]:
        return {"sum": tuple(param.shape)}

    def reset_state(self) -> None:
        """Put every accumulator back to its initial value (the textbook remedy,
        remedy for the ever-shrinking step). Step counts and parameters are kept."""
        for param, group in self._params_with_groups():
            state = self.state.get(param)
            if not state:
                continue
            value = group["initial_accumulator_value"]
            state["sum"].fill_(complex(value, value) if param.is_complex() else value)
            if SUM_DECAY.snapshots in state:
                state[SUM_DECAY.snapshots].fill_(state[SUM_DECAY.clock].item())

    def flush(self) -> None:
        """Apply every row's pending lazy decay (sparse weight decay, accumulator decay),
        so that parameters and state equal the dense algorithm's: call it before exporting
        a model trained on torch's own sparse layers with lazy decay. Checkpoints do not
        need it (`state_dict()` saves the pending decay as it is, for an exact resume);
        mid-run it changes the trajectory only by float rounding."""
        for param, _ in self._params_with_groups():
            state = self.state.get(param)
            if state:
                self._flush_rows(param, state)

    @staticmethod
    def _flush_rows(param: Tensor, state: dict[str, Tensor]) -> None:
        table = _table_with_snapshots(param, state)
        if table is not None:
            kernels.flush_rows_(table, state["sum"].view(table.shape), _row_clocks(state))

    @torch.no_grad()
    def catch_up_rows(self, param: Tensor, rows: Tensor) -> None:
        """Apply the pending lazy decay of ``rows`` (may repeat), so that a lookup reads
        them as the dense algorithm would (what `adagrad.nn`'s layers call at lookup).
        Their logical value does not change, so autograd's version counter is left as is."""
        state = self.state.get(param)
        table = _table_with_snapshots(param, state) if state else None
        if table is not None:
            kernels.catch_up_rows_(table, state["sum"].view(table.shape), rows.reshape(-1),
                                   _row_clocks(state))

    # -- checkpoints ----------------------------------------------------------------

    _validate = staticmethod(_check_hyperparameters)

    def _check_saved_state(self, label: str, param: Tensor, saved: dict[str, Any]) -> None:
        """The lazy-decay clocks: both of a pair or neither, a finite 0-d clock and one
        snapshot per row of the table the parameter is seen as (:ref:`algo-sparse`)."""
        table_rows = {math.prod(param.shape[:d]) for d in range(1, param.dim() + 1)}
        for decay in (PARAM_DECAY, SUM_DECAY):
            present = [key in saved for key in (decay.clock, decay.snapshots)]
            if any(present) and not all(present):
                raise ValueError(f"state_dict does not fit {label}: its state has only one of "
                                 f"'{decay.clock}' and '{decay.snapshots}'")
            if all(present):
                clock, snapshots = saved[decay.clock], saved[decay.snapshots]
                checkpoint.check_clock(label, decay.clock, clock,
                                       isinstance(clock, Tensor) and clock.dim() == 0)
                checkpoint.check_clock(label, decay.snapshots, snapshots,
                                       isinstance(snapshots, Tensor) and snapshots.dim() == 1
                                       and snapshots.numel() in table_rows)

    # -- stepping -------------------------------------------------------------------

    def _check_sparse(self, sparse: SparseGrad, group: dict[str, Any]) -> None:
        super()._check_sparse(sparse, group)
        check_sparse_weight_decay(group, "L2 on the touched rows")

    def _step_dense(self, group: dict[str, Any], params: list[Tensor]) -> None:
        """The dense parameters of ``group`` together: batched per kernel (torch's fused
        CPU kernel, `cuda_dispatch`, numba or torch ops), their counters advanced in one
        op. CPU tensors the numba kernels take go to `dense_cpu.dense_adagrad_batch_`, one
        call per step count (one serial kernel for the small tensors, one parallel kernel
        for the large; it advances their counters itself); everything that depends only
        on the group (the rule, the kernel) is decided once."""
        rule = group_rule(group)
        steps: list[Tensor] = []  # counters advanced in one op (all but the numba batches')
        numba_batches: dict[float, tuple[list[Tensor], ...]] = {}  # step → θ, g, G, counters
        per_tensor: list[tuple[Tensor, Tensor, Tensor, float]] = []  # numba or torch ops
        torch_fused: dict[tuple[torch.device, torch.dtype], list[list[Tensor]]] = {}
        on_device: list[tuple[Tensor, Tensor, Tensor, Tensor]] = []  # cuda_dispatch's
        batch_allowed = not rule.differentiable
        for param in params:
            grad = param.grad
            state = self._state_for(param, group)
            if PARAM_DECAY.snapshots in state or SUM_DECAY.snapshots in state:
                self._flush_rows(param, state)  # rows a lazy sparse decay left behind
            counter, state_sum = state["step"], state["sum"]
            if param.is_complex():
                param, grad, state_sum = as_real(param, grad, state_sum)
            if cuda_dispatch.takes_dense(param, rule):
                on_device.append((param, grad, state_sum, counter))
                steps.append(counter)
            elif self._is_torch_fused_case(param, state_sum, rule):
                batch = torch_fused.setdefault((param.device, param.dtype), [[], [], [], []])
                for tensors, tensor in zip(batch, (param, grad, state_sum, counter)):
                    tensors.append(tensor)
                steps.append(counter)
            elif batch_allowed and dense_cpu.batch_supports(param, grad, state_sum, counter):
                batch = numba_batches.get(counter.item() + 1)
                if batch is None:
                    batch = numba_batches[counter.item() + 1] = ([], [], [], [])
                batch[0].append(param)
                batch[1].append(grad)
                batch[2].append(state_sum)
                batch[3].append(counter)
            else:
                per_tensor.append((param, grad, state_sum, counter.item() + 1))
                steps.append(counter)
        if steps:
            torch._foreach_add_(steps, 1.0)
        cuda_dispatch.dense_adagrad_(on_device, rule)
        # a host float only where the CPU kernels need one (a device lr would sync)
        lr = float(group["lr"]) if per_tensor or torch_fused or numba_batches else 0.0
        for step, (params_, grads, sums, counters) in numba_batches.items():
            dense_cpu.dense_adagrad_batch_(params_, grads, sums, counters, rule.at(lr, step))
        dense = portable.dense_adagrad_ if rule.differentiable else kernels.dense_adagrad_
        rules: dict[float, StepRule] = {}
        for param, grad, state_sum, step in per_tensor:
            if step not in rules:
                rules[step] = rule.at(lr, step)
            dense(param, grad, state_sum, rules[step])
        for params_, grads, sums, counters in torch_fused.values():
            torch._fused_adagrad_(params_, grads, sums, counters, lr=lr, lr_decay=rule.lr_decay,
                                  weight_decay=rule.weight_decay, eps=rule.eps,
                                  maximize=rule.maximize)

    @staticmethod
    def _is_torch_fused_case(param: Tensor, state_sum: Tensor, rule: AdagradGroupRule) -> bool:
        """torch's fused CPU kernel computes exactly torch's rule: use it for large tensors
        when the group asks for nothing else. (On small ones its thread pool costs more
        than the update, and far more on a busy machine: our serial kernel wins there.)"""
        return (param.numel() >= PARALLEL_MIN_ELEMENTS and param.device.type == "cpu"
                and cuda_dispatch.is_torch_rule(param, state_sum, rule))

    def _step_sparse(self, param: Tensor, sparse: SparseGrad, group: dict[str, Any]) -> None:
        state = self._state_for(param, group)
        touched_l2 = group["weight_decay"] if group["sparse_weight_decay"] == "touched" else 0
        rule = replace(_step_rule(group, float(group["lr"]), state["step"].item() + 1),
                       weight_decay=touched_l2)
        clocks = self._advance_clocks(state, group, rule.lr, sparse.table.shape[0], param.device)
        kernels.sparse_adagrad_(sparse.table, sparse.view(state["sum"]), sparse.indices,
                                sparse.values, rule, clocks, sparse.value_of, sparse.scale)
        state["step"] += 1
        for decay, value in ((PARAM_DECAY, clocks.param_log), (SUM_DECAY, clocks.sum_log)):
            if decay.clock in state:
                state[decay.clock].fill_(value)

    @staticmethod
    def _advance_clocks(state: dict[str, Tensor], group: dict[str, Any], lr_t: float,
                        rows: int, device: torch.device) -> RowClocks:
        """This step's lazy-decay clocks (:ref:`algo-sparse`), not yet stored (the step does
        that once its kernel has run); each pair is created on first need (a factor
        other than 1)."""
        weight_decay = group["weight_decay"] if group["sparse_weight_decay"] == "lazy" else 0.0
        now = {}
        for decay, factor in ((PARAM_DECAY, 1 - lr_t * weight_decay),
                              (SUM_DECAY, group["accumulator_decay"])):
            if factor != 1 and decay.clock not in state:
                state[decay.clock] = torch.tensor(0.0, dtype=torch.float64)
                state[decay.snapshots] = torch.zeros(rows, dtype=torch.float64,
                                                     device=clock_device(device))
            now[decay] = state[decay.clock].item() + math.log(factor) \
                if decay.clock in state else 0.0
        return RowClocks(now[PARAM_DECAY], state.get(PARAM_DECAY.snapshots), now[SUM_DECAY],
                         state.get(SUM_DECAY.snapshots))


def _table_with_snapshots(param: Tensor, state: dict[str, Tensor]) -> Tensor | None:
    """``param`` as the ``(rows, D)`` table its lazy-decay snapshots describe, or None if
    it has none."""
    snapshots = state.get(PARAM_DECAY.snapshots, state.get(SUM_DECAY.snapshots))
    return None if snapshots is None else param.detach().view(snapshots.numel(), -1)


def _row_clocks(state: dict[str, Tensor]) -> RowClocks:
    """The clocks in ``state`` as the kernels take them."""
    return RowClocks(state[PARAM_DECAY.clock].item() if PARAM_DECAY.clock in state else 0.0,
                     state.get(PARAM_DECAY.snapshots),
                     state[SUM_DECAY.clock].item() if SUM_DECAY.clock in state else 0.0,
                     state.get(SUM_DECAY.snapshots))


def group_rule(group: dict[str, Any]) -> AdagradGroupRule:
    """``group``'s hyperparameters as the kernels' dispatch takes them (frozen)."""
    return AdagradGroupRule(lr=group["lr"], lr_decay=group["lr_decay"], eps=group["eps"],
                            eps_inside=group["eps_placement"] == "inside",
                            maximize=group["maximize"], weight_decay=group["weight_decay"],
                            decoupled=bool(group["decoupled_weight_decay"]),
                            accumulator_decay=group["accumulator_decay"],
                            differentiable=bool(group["differentiable"]))


def _step_rule(group: dict[str, Any], lr: float, step: float) -> StepRule:
    return decayed_step_rule(lr, step, group["lr_decay"], group["eps"],
                             group["eps_placement"] == "inside", group["maximize"],
                             group["weight_decay"], bool(group["decoupled_weight_decay"]),
                             group["accumulator_decay"])
