"""The dispatchers of `adagrad.kernels` (re-exported there): each picks the fastest kernel
that fits its tensors (see the package docstring)."""

from __future__ import annotations

from torch import Tensor

from adagrad.kernels.adagrad import cpu as _adagrad_cpu
from adagrad.kernels.adagrad import torch_ops as _adagrad_ops
from adagrad.kernels.dual_averaging import cpu as _dual_averaging_cpu
from adagrad.kernels.dual_averaging import torch_ops as _dual_averaging_ops
from adagrad.kernels.engine import catch_up_cpu as _catch_up_cpu
from adagrad.kernels.engine import cuda_dispatch as _cuda_dispatch
from adagrad.kernels.engine import sparse_cpu as _sparse_cpu
from adagrad.kernels.ftrl import cpu as _ftrl_cpu
from adagrad.kernels.ftrl import torch_ops as _ftrl_ops
from adagrad.kernels.proximal import cpu as _proximal_cpu
from adagrad.kernels.proximal import torch_ops as _proximal_ops
from adagrad.kernels.rowwise import cpu as _rowwise_cpu
from adagrad.kernels.rowwise import torch_ops as _rowwise_ops
from adagrad.kernels.engine.clocks import RowClocks
from adagrad.kernels.engine.rule import DualAveragingRule, FtrlRule, ProximalRule, StepRule

__all__ = ["DualAveragingRule", "FtrlRule", "ProximalRule", "RowClocks", "StepRule",
           "catch_up_proximal_rows_", "catch_up_rows_", "dense_adagrad_",
           "dense_dual_averaging_", "dense_ftrl_", "dense_proximal_", "dense_rowwise_adagrad_",
           "dual_averaging_weights_", "dual_averaging_weights_of_rows_", "flush_rows_",
           "sparse_adagrad_", "sparse_dual_averaging_", "sparse_ftrl_", "sparse_proximal_",
           "sparse_rowwise_adagrad_"]

flush_rows_ = _adagrad_ops.flush_rows_


def dense_adagrad_(param: Tensor, grad: Tensor, state_sum: Tensor, rule: StepRule) -> None:
    """One dense Adagrad step, in place, on the fastest kernel that fits."""
    if _cuda_dispatch.triton_takes(param, grad, state_sum):  # imports Triton: only then
        from adagrad.kernels.adagrad import triton as _adagrad_triton
        _adagrad_triton.dense_adagrad_([param], [grad], [state_sum], rule)
    elif _adagrad_cpu.supports(param, grad, state_sum):
        _adagrad_cpu.dense_adagrad_(param, grad, state_sum, rule)
    else:
        _adagrad_ops.dense_adagrad_(param, grad, state_sum, rule)


def sparse_adagrad_(param: Tensor, state_sum: Tensor, indices: Tensor, values: Tensor,
                    rule: StepRule, clocks: RowClocks, value_of: Tensor | None = None,
                    scale: Tensor | None = None) -> None:
    """One sparse Adagrad step on a ``(rows, D)`` table, in place, on the fastest kernel.

    Position ``k`` adds ``scale[k]·values[value_of[k]]`` to row ``indices[k]`` (see
    `portable.sparse_adagrad_`). Indices must lie in ``[0, rows)`` (the optimizer checks
    them before any write).
    """
    kernel = _cuda_dispatch.sparse_kernel(param, state_sum, values)  # None on the CPU
    if kernel is None:
        kernel = _sparse_cpu if _sparse_cpu.supports(param, state_sum, values) else _adagrad_ops
    kernel.sparse_adagrad_(param, state_sum, indices, values, rule, clocks, value_of, scale)


def catch_up_rows_(param: Tensor, state_sum: Tensor, rows: Tensor, clocks: RowClocks) -> None:
    """Bring ``rows`` (may repeat) of a ``(rows, D)`` table up to date on their pending
    lazy decay, in place, on the fastest kernel."""
    kernel = _catch_up_cpu if _catch_up_cpu.supports(param, state_sum, rows) else _adagrad_ops
    kernel.catch_up_rows_(param, state_sum, rows, clocks)


def dense_ftrl_(param: Tensor, grad: Tensor, z: Tensor, n: Tensor, rule: FtrlRule) -> None:
    """One dense FTRL-Proximal step (:ref:`algo-ftrl`), in place, on the fastest kernel that fits."""
    kernel = _cuda_dispatch.member_kernel("ftrl", param, grad, z, n)
    if kernel is None:
        kernel = _ftrl_cpu if _ftrl_cpu.supports(param, grad, z, n) else _ftrl_ops
    kernel.dense_ftrl_(param, grad, z, n, rule)


def sparse_ftrl_(param: Tensor, z: Tensor, n: Tensor, indices: Tensor, values: Tensor,
                 rule: FtrlRule, value_of: Tensor | None = None,
                 scale: Tensor | None = None) -> None:
    """One sparse FTRL-Proximal step on a ``(rows, D)`` table (duplicates summed, then :ref:`algo-ftrl`
    on the touched rows), in place, on the fastest kernel. Indices must lie in
    ``[0, rows)``."""
    kernel = _ftrl_cpu if _ftrl_cpu.supports_rows(param, z, n, values) else _ftrl_ops
    kernel.sparse_ftrl_(param, z, n, indices, values, rule, value_of, scale)


def dense_rowwise_adagrad_(param: Tensor, grad: Tensor, state_sum: Tensor,
                           rule: StepRule) -> None:
    """One dense row-wise Adagrad step (:ref:`algo-rowwise`) of ``param`` (rows along dim 0, one
    accumulator each in ``state_sum``), in place, on the fastest kernel that fits."""
    if _rowwise_cpu.supports(param, grad, state_sum):
        _rowwise_cpu.dense_rowwise_adagrad_(param, grad, state_sum, rule)
    else:
        _rowwise_ops.dense_rowwise_adagrad_(param, grad, state_sum, rule)


def sparse_rowwise_adagrad_(param: Tensor, state_sum: Tensor, indices: Tensor, values: Tensor,
                            rule: StepRule, clocks: RowClocks, value_of: Tensor | None = None,
                            scale: Tensor | None = None) -> None:
    """One sparse row-wise Adagrad step (:ref:`algo-sparse`, :ref:`algo-rowwise`) on a ``(rows, D)`` table with one
    accumulator per row, in place, on the fastest kernel (see
    `rowwise_portable.sparse_rowwise_adagrad_`)."""
    kernel = (_rowwise_cpu if _rowwise_cpu.sparse_supports(param, state_sum, values)
              else _rowwise_ops)
    kernel.sparse_rowwise_adagrad_(param, state_sum, indices, values, rule, clocks, value_of,
                                   scale)


# -- :ref:`algo-proximal` proximal Adagrad --------------------------------------------------------------


def dense_proximal_(param: Tensor, grad: Tensor, state_sum: Tensor, rule: ProximalRule) -> None:
    """One dense proximal Adagrad step, in place, on the fastest kernel that fits."""
    kernel = _cuda_dispatch.member_kernel("proximal_adagrad", param, grad, state_sum)
    if kernel is None:
        on_cpu = _adagrad_cpu.supports(param, grad, state_sum)
        kernel = _proximal_cpu if on_cpu else _proximal_ops
    kernel.dense_proximal_(param, grad, state_sum, rule)


def sparse_proximal_(table: Tensor, state_sum: Tensor, indices: Tensor, values: Tensor,
                     rule: ProximalRule, step: int, row_step: Tensor | None = None,
                     value_of: Tensor | None = None, scale: Tensor | None = None) -> None:
    """Step ``step`` of proximal Adagrad on the touched rows of a ``(rows, D)`` table,
    in place, on the fastest kernel (see `portable_proximal.sparse_proximal_`)."""
    on_cpu = _sparse_cpu.supports(table, state_sum, values)
    kernel = _proximal_cpu if on_cpu else _proximal_ops
    kernel.sparse_proximal_(table, state_sum, indices, values, rule, step, row_step, value_of,
                            scale)


def catch_up_proximal_rows_(table: Tensor, state_sum: Tensor, rows: Tensor, row_step: Tensor,
                            up_to: int, rule: ProximalRule) -> None:
    """Apply the pending zero-gradient steps of ``rows`` (may repeat) up to step
    ``up_to``, in place, on the fastest kernel."""
    if rows.numel() == 0:
        return
    on_cpu = _catch_up_cpu.supports(table, state_sum, rows)
    kernel = _proximal_cpu if on_cpu else _proximal_ops
    kernel.catch_up_rows_(table, state_sum, rows, row_step, up_to, rule)


# -- :ref:`algo-dual-averaging` Adagrad with dual averaging ---------------------------------------------------


def dense_dual_averaging_(param: Tensor, grad: Tensor, grad_sum: Tensor, state_sum: Tensor,
                          rule: DualAveragingRule) -> None:
    """One dense dual-averaging step, in place, on the fastest kernel that fits."""
    kernel = _cuda_dispatch.member_kernel("adagrad_da", param, grad, grad_sum, state_sum)
    if kernel is None:
        on_cpu = _dual_averaging_cpu.supports(param, grad, grad_sum, state_sum)
        kernel = _dual_averaging_cpu if on_cpu else _dual_averaging_ops
    kernel.dense_dual_averaging_(param, grad, grad_sum, state_sum, rule)


def sparse_dual_averaging_(table: Tensor, grad_sum: Tensor, state_sum: Tensor, indices: Tensor,
                           values: Tensor, rule: DualAveragingRule,
                           value_of: Tensor | None = None, scale: Tensor | None = None) -> None:
    """One dual-averaging step on the touched rows of a ``(rows, D)`` table, in place, on
    the fastest kernel (see `portable_dual_averaging.sparse_dual_averaging_`)."""
    on_cpu = _dual_averaging_cpu.sparse_supports(table, grad_sum, state_sum, values)
    kernel = _dual_averaging_cpu if on_cpu else _dual_averaging_ops
    kernel.sparse_dual_averaging_(table, grad_sum, state_sum, indices, values, rule, value_of,
                                  scale)


def dual_averaging_weights_(param: Tensor, grad_sum: Tensor, state_sum: Tensor,
                            rule: DualAveragingRule) -> None:
    """Recompute all of θ from its sums at the rule's step, in place, on the fastest
    kernel (the dense kernel's arithmetic on the CPU)."""
    on_cpu = _dual_averaging_cpu.supports(param, param, grad_sum, state_sum)
    kernel = _dual_averaging_cpu if on_cpu else _dual_averaging_ops
    kernel.recompute_weights_(param, grad_sum, state_sum, rule)


def dual_averaging_weights_of_rows_(table: Tensor, grad_sum: Tensor, state_sum: Tensor,
                                    rows: Tensor, row_step: Tensor,
                                    rule: DualAveragingRule) -> None:
    """Recompute θ of ``rows`` (may repeat) from their sums at the rule's step, skipping
    those ``row_step`` says are computed at that step already, in place, on the fastest
    kernel."""
    if rows.numel() == 0:
        return
    on_cpu = (_catch_up_cpu.supports(table, state_sum, rows) and grad_sum.is_contiguous()
              and grad_sum.dtype == state_sum.dtype)
    kernel = _dual_averaging_cpu if on_cpu else _dual_averaging_ops
    kernel.weights_of_rows_(table, grad_sum, state_sum, rows, row_step, rule)
