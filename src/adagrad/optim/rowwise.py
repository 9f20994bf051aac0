"""`RowWiseAdagrad`: one accumulator per row of an embedding table (:ref:`algo-rowwise`;
FBGEMM ``EXACT_ROWWISE_ADAGRAD``, TorchRec ``RowWiseAdagrad``)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from torch.optim.optimizer import ParamsT

from adagrad import kernels
from adagrad.kernels import RowClocks, StepRule
from adagrad.kernels.engine.clocks import clock_device
from adagrad.optim import checkpoint, conventions
from adagrad.optim.adagrad import PARAM_DECAY
from adagrad.optim.base import (
    AdagradFamily,
    SparseGrad,
    check_rows,
    check_sparse_weight_decay,
    sparse_rows,
)
from adagrad.optim.validation import check_choice, check_non_negative

SPARSE_WEIGHT_DECAY_MODES = (None, "lazy", "touched")
#: the conventions whose libraries have row-wise Adagrad: FBGEMM, and TorchRec (whose
#: `RowWiseAdagrad` takes torch's defaults).
ROWWISE_CONVENTIONS = ("torch", "fbgemm")
#: group keys of `adagrad.Adagrad` whose options :ref:`algo-rowwise` does not have: a checkpoint whose
#: groups hold them is Adagrad's.
_ADAGRAD_ONLY_KEYS = ("eps_placement", "accumulator_decay")


class RowWiseAdagrad(AdagradFamily):
    r"""Row-wise Adagrad: one accumulator per row of a table, for embedding tables too big
    for a full one (Mudigere et al. 2021; FBGEMM ``EXACT_ROWWISE_ADAGRAD``, TorchRec
    ``RowWiseAdagrad``), :ref:`algo-rowwise`.

    For a parameter with ndim ≥ 2, rows along the first dimension, row r of width D::

        t    ← t + 1 ;  lr_t = lr / (1 + (t-1)·lr_decay) ;  g ← -g if maximize
        g'_r = g_r + wd·θ_r                       (L2, the default; g' = g otherwise)
        G_r  ← G_r + mean_over_row(g'_r²)
        m_r  = lr_t / (sqrt(G_r) + ε)
        θ_r  ← θ_r - m_r·g'_r                     (L2 or no weight decay)
        θ_r  ← θ_r·(1 - lr_t·wd) - m_r·g_r        (decoupled_weight_decay=True)

    State: ``step`` and ``sum`` (G) of shape ``(rows,)``, 1/D of `adagrad.Adagrad`'s;
    float32 for fp16/bf16 parameters, else the parameter's dtype. A parameter with
    ndim < 2 is updated element-wise, as `adagrad.Adagrad` with ε outside (``sum`` has its
    shape): a row of width 1.

    Sparse gradients (``nn.Embedding(sparse=True)``, ``EmbeddingBag``; any sparse_dim) and
    the fused layers of `adagrad.nn` update the touched rows only: each row's duplicates
    are summed first, then :ref:`algo-rowwise` runs on it; untouched rows keep θ and G, as in FBGEMM
    (where G_r would not change anyway: a zero row adds nothing to it). Weight decay with
    sparse gradients needs ``sparse_weight_decay`` (:ref:`algo-sparse`).

    Args:
      params: parameters or parameter groups.
      lr: learning rate (≥ 0). Default 1e-2.
      lr_decay: inverse-time decay of the learning rate on the per-tensor step. Default 0.
      weight_decay: ``wd`` (≥ 0). Default 0.
      initial_accumulator_value: G₀ of every row (≥ 0). Default: the convention's (0).
      eps: ε, added to ``sqrt(G_r)`` (≥ 0). Default: the convention's (1e-10; FBGEMM 1e-8).
      maximize: ascend instead of descend. Default False.
      decoupled_weight_decay: ``θ_r·(1 - lr_t·wd)`` instead of L2 added to ``g``, as
        FBGEMM's ``WeightDecayMode.DECOUPLE``. Default: the convention's (False).
      sparse_weight_decay: weight decay for sparse gradients: ``"touched"`` (the rule's
        own decay, L2 or decoupled as ``decoupled_weight_decay`` says, on the touched rows
        only: FBGEMM's ``WeightDecayMode.L2`` / ``DECOUPLE``; untouched rows do not decay,
        so it is not dense) or ``"lazy"`` (decoupled whatever ``decoupled_weight_decay``
        says: each row is caught up on the decay it missed, ``Π(1 - lr_s·wd)``, when next
        touched, looked up by a fused layer or `flush()`-ed; equals dense decoupled
        row-wise Adagrad, since a zero gradient row only decays θ_r). Default None:
        sparse gradients with weight_decay raise, as in torch.
      convention: ``"torch"`` (the default; TorchRec's defaults too) or ``"fbgemm"``
        (ε = 1e-8): sets eps, initial_accumulator_value and decoupled_weight_decay as
        those libraries do; explicit arguments win. Conventions with ε inside the square
        root (optax, Keras) or without a row-wise Adagrad (TensorFlow) are refused.

    Complex parameters are refused (FBGEMM and TorchRec have no complex tables).

    Example:
        One accumulator per row of a table:

        >>> import torch, adagrad
        >>> table = torch.nn.Parameter(torch.zeros(4, 3))
        >>> optimizer = adagrad.RowWiseAdagrad([table], lr=0.1)
        >>> table.grad = torch.ones(4, 3)
        >>> optimizer.step()
        >>> optimizer.state[table]["sum"]
        tensor([1., 1., 1., 1.])
    """

    _float64_state = (PARAM_DECAY.clock, PARAM_DECAY.snapshots)
    _checkpoint_group_keys = ("lr", "lr_decay", "eps", "weight_decay",
                              "initial_accumulator_value", "maximize")

    def __init__(self, params: ParamsT, lr: float | Tensor = 1e-2, lr_decay: float = 0,
                 weight_decay: float = 0, initial_accumulator_value: float | None = None,
                 eps: float | None = None, *, maximize: bool = False,
                 decoupled_weight_decay: bool | None = None,
                 sparse_weight_decay: str | None = None, convention: str | None = None) -> None:
        chosen = _resolve_convention(convention, eps=eps,
                                     initial_accumulator_value=initial_accumulator_value,
                                     decoupled_weight_decay=decoupled_weight_decay)
        # differentiable: torch.optim's step decorator reads it; always False here.
        defaults = dict(lr=lr, lr_decay=lr_decay, eps=chosen["eps"], weight_decay=weight_decay,
                        initial_accumulator_value=chosen["initial_accumulator_value"],
                        maximize=maximize,
                        decoupled_weight_decay=chosen["decoupled_weight_decay"],
                        sparse_weight_decay=sparse_weight_decay, differentiable=False)
        _check_hyperparameters(defaults)
        super().__init__(params, defaults)

    def _check_new_group(self, group: dict[str, Any]) -> None:
        _check_hyperparameters(group)
        for param in group["params"]:
            _check_real(param)

    # -- state ----------------------------------------------------------------------

    def _init_state(self, param: Tensor, group: dict[str, Any]) -> dict[str, Tensor]:
        value, dtype = group["initial_accumulator_value"], self.state_dtype(param, group)
        if param.dim() < 2:
            initial = torch.full_like(param, value, dtype=dtype,
                                      memory_format=torch.preserve_format)
        else:
            initial = param.new_full((param.shape[0],), value, dtype=dtype)
        return {"step": self._new_step(), "sum": initial}

    def _state_shapes(self, param: Tensor) -> dict[str, tuple[int, ...]]:
        return {"sum": (param.shape[0],) if param.dim() >= 2 else tuple(param.shape)}

    def flush(self) -> None:
        """Apply every row's pending lazy weight decay (``sparse_weight_decay="lazy"``), so
        that parameters equal dense decoupled row-wise Adagrad's: call it before exporting
        a model trained on torch's own sparse layers. Checkpoints do not need it."""
        for param, _ in self._params_with_groups():
            state = self.state.get(param)
            if state and PARAM_DECAY.snapshots in state:
                table, sums = _table(param), state["sum"].view(-1, 1)
                kernels.flush_rows_(table, sums, _row_clocks(state))

    @torch.no_grad()
    def catch_up_rows(self, param: Tensor, rows: Tensor) -> None:
        """Apply the pending lazy decay of ``rows`` (may repeat), so that a fused layer's
        lookup reads them as dense decoupled Adagrad would."""
        state = self.state.get(param)
        if state and PARAM_DECAY.snapshots in state:
            kernels.catch_up_rows_(_table(param), state["sum"].view(-1, 1), rows.reshape(-1),
                                   _row_clocks(state))

    # -- checkpoints ----------------------------------------------------------------

    def _check_group(self, group: dict[str, Any]) -> None:
        foreign = [key for key in _ADAGRAD_ONLY_KEYS if key in group]
        if foreign:
            raise ValueError(f"its groups hold {', '.join(map(repr, foreign))}, options of "
                             f"adagrad.Adagrad that RowWiseAdagrad does not have: it is not a "
                             f"checkpoint of RowWiseAdagrad")
        _check_hyperparameters(group)

    def _check_saved_state(self, label: str, param: Tensor, saved: dict[str, Any]) -> None:
        """The lazy-decay clock: both keys or neither, a finite 0-d clock and one
        snapshot per row (:ref:`algo-sparse`)."""
        keys = (PARAM_DECAY.clock, PARAM_DECAY.snapshots)
        present = [key in saved for key in keys]
        if any(present) and not all(present):
            raise ValueError(f"state_dict does not fit {label}: its state has only one of "
                             f"'{keys[0]}' and '{keys[1]}'")
        if all(present):
            clock, snapshots = saved[keys[0]], saved[keys[1]]
            checkpoint.check_clock(label, keys[0], clock,
                                   isinstance(clock, Tensor) and clock.dim() == 0)
            checkpoint.check_clock(label, keys[1], snapshots,
                                   isinstance(snapshots, Tensor) and snapshots.dim() == 1
                                   and snapshots.numel() == _rows(param))

    # -- stepping -------------------------------------------------------------------

    def _check_grad(self, param: Tensor, group: dict[str, Any]) -> None:
        _check_real(param)
        super()._check_grad(param, group)

    def _check_sparse(self, sparse: SparseGrad, group: dict[str, Any]) -> None:
        check_rows(sparse)
        check_sparse_weight_decay(group, "the rule's decay on the touched rows, as FBGEMM")

    @torch.no_grad()
    def step_rows(self, param: Tensor, sparse: SparseGrad) -> None:
        """As `AdagradFamily.step_rows`; the table must have one row per accumulator entry
        (the first dimension's rows for ndim ≥ 2)."""
        if sparse.table.shape[0] != _rows(param):
            raise ValueError(f"a row gradient of RowWiseAdagrad needs the table as "
                             f"({_rows(param)}, -1) rows, got {tuple(sparse.table.shape)}")
        super().step_rows(param, sparse)

    def _step_dense_one(self, param: Tensor, grad: Tensor, state: dict[str, Tensor],
                        group: dict[str, Any]) -> None:
        if PARAM_DECAY.snapshots in state:  # pending lazy decay first, as dense has it
            kernels.flush_rows_(_table(param), state["sum"].view(-1, 1), _row_clocks(state))
        state["step"] += 1
        rule = _step_rule(group, state["step"].item(), group["weight_decay"],
                          bool(group["decoupled_weight_decay"]))
        if param.dim() < 2:  # element-wise: :ref:`algo-adagrad` with ε outside
            kernels.dense_adagrad_(param, grad, state["sum"], rule)
        else:
            kernels.dense_rowwise_adagrad_(param, grad, state["sum"], rule)

    @staticmethod
    def _row_gradient(param: Tensor, grad: Tensor) -> SparseGrad:
        return _row_gradient(param, grad)

    def _step_sparse(self, param: Tensor, sparse: SparseGrad, group: dict[str, Any]) -> None:
        state = self._state_for(param, group)
        mode, weight_decay = group["sparse_weight_decay"], group["weight_decay"]
        rule = _step_rule(group, state["step"].item() + 1,
                          weight_decay if mode == "touched" else 0.0,
                          bool(group["decoupled_weight_decay"]))
        lazy_factor = 1 - rule.lr * weight_decay if mode == "lazy" else 1.0
        clocks = _advance_clock(state, lazy_factor, sparse.table.shape[0], param.device)
        kernels.sparse_rowwise_adagrad_(sparse.table, state["sum"].view(-1), sparse.indices,
                                        sparse.values, rule, clocks, sparse.value_of,
                                        sparse.scale)
        state["step"] += 1
        if PARAM_DECAY.clock in state:
            state[PARAM_DECAY.clock].fill_(clocks.param_log)


# ------------------------------------------------------------------ helpers


def _rows(param: Tensor) -> int:
    """The number of accumulator entries: rows of the first dimension (ndim ≥ 2), else
    elements."""
    return param.shape[0] if param.dim() >= 2 else param.numel()


def _table(param: Tensor) -> Tensor:
    """``param`` as the ``(rows, D)`` table of its accumulator entries."""
    width = math.prod(param.shape[1:]) if param.dim() >= 2 else 1
    return param.detach().view(_rows(param), width)


def _row_gradient(param: Tensor, grad: Tensor) -> SparseGrad:
    """A sparse COO ``grad`` of ``param`` as a row gradient of `_table(param)`. A
    gradient with sparse_dim > 1 on a parameter with ndim ≥ 2 indexes parts of rows:
    its entries are gathered into the rows they belong to."""
    sparse = sparse_rows(param, grad)
    if param.dim() < 2 or grad.sparse_dim() == 1:
        return sparse
    table = _table(param)
    parts = sparse.table.shape[0] // max(param.shape[0], 1)  # sub-rows per row
    rows, inverse = torch.unique(sparse.indices // max(parts, 1), return_inverse=True)
    dtype = torch.promote_types(sparse.values.dtype, torch.float32)
    values = sparse.values.new_zeros((rows.numel(), parts, sparse.values.shape[1]), dtype=dtype)
    values.index_put_((inverse, sparse.indices % max(parts, 1)), sparse.values.to(dtype),
                      accumulate=True)
    return SparseGrad(table, rows, values.view(rows.numel(), table.shape[1]))


def _advance_clock(state: dict[str, Tensor], factor: float, rows: int,
                   device: torch.device) -> RowClocks:
    """This step's lazy-decay clock (:ref:`algo-sparse`), not yet stored: the pair is
    created on first need (a factor other than 1)."""
    if factor != 1 and PARAM_DECAY.clock not in state:
        state[PARAM_DECAY.clock] = torch.tensor(0.0, dtype=torch.float64)
        state[PARAM_DECAY.snapshots] = torch.zeros(rows, dtype=torch.float64,
                                                   device=clock_device(device))
    if PARAM_DECAY.clock not in state:
        return RowClocks()
    return RowClocks(state[PARAM_DECAY.clock].item() + math.log(factor),
                     state[PARAM_DECAY.snapshots])


def _row_clocks(state: dict[str, Tensor]) -> RowClocks:
    return RowClocks(state[PARAM_DECAY.clock].item(), state[PARAM_DECAY.snapshots])


def _step_rule(group: dict[str, Any], step: float, weight_decay: float,
               decoupled: bool) -> StepRule:
    lr = float(group["lr"])
    return StepRule(lr=lr / (1 + (step - 1) * group["lr_decay"]), eps=group["eps"],
                    maximize=group["maximize"], weight_decay=weight_decay,
                    decoupled=decoupled)


def _resolve_convention(convention: str | None, **given: object) -> dict[str, object]:
    name = "torch" if convention is None else convention
    if name not in ROWWISE_CONVENTIONS:
        raise ValueError(
            f"Invalid convention value: {convention!r} (argument `convention` must be one of "
            f"{', '.join(map(repr, ROWWISE_CONVENTIONS))} for RowWiseAdagrad: row-wise Adagrad "
            f"is FBGEMM's and TorchRec's rule, with ε outside the square root; 'optax' and "
            f"'keras' put ε inside it, and TensorFlow has no row-wise Adagrad)")
    values = conventions.resolve(name, eps_placement=None, **given)
    del values["eps_placement"]  # "outside" for both
    return values


def _check_real(param: Tensor) -> None:
    if param.is_complex():
        raise ValueError(f"RowWiseAdagrad does not support complex parameters (got one of "
                         f"dtype {param.dtype}); FBGEMM and TorchRec have none either")


def _check_hyperparameters(group: dict[str, Any]) -> None:
    for name in ("lr", "lr_decay", "weight_decay", "initial_accumulator_value", "eps"):
        check_non_negative(name, group[name])
    check_choice("sparse_weight_decay", group["sparse_weight_decay"], SPARSE_WEIGHT_DECAY_MODES)
    if group.get("differentiable"):
        raise ValueError("Invalid differentiable value: True (argument `differentiable`: "
                         "RowWiseAdagrad has no differentiable step)")
