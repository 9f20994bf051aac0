"""The fast paths: interchangeable implementations of the reference rules.

Each kernel takes the tensors of one parameter and a `StepRule` and updates in place:

- `dense_adagrad_(param, grad, state_sum, rule)`: ALGORITHMS.md §1.
- `sparse_adagrad_(param, state_sum, indices, values, rule, clocks, value_of, scale)`: §2
  on a ``(rows, D)`` table, duplicates summed, lazy decay caught up through `RowClocks`.
- `catch_up_rows_(param, state_sum, rows, clocks)`: §2's lazy decay of some rows brought
  up to date, as a fused layer's lookup needs; `flush_rows_` does it for every row.
- `dense_ftrl_(param, grad, z, n, rule)` and `sparse_ftrl_(param, z, n, indices, values,
  rule, value_of, scale)`: FTRL-Proximal, §6 (`FtrlRule`), dense and on table rows.
- `dense_rowwise_adagrad_(param, grad, state_sum, rule)` and
  `sparse_rowwise_adagrad_(param, state_sum, indices, values, rule, clocks, value_of,
  scale)`: row-wise Adagrad (§3), one accumulator per row.

The dispatchers here pick the numba CPU kernel (`dense_cpu`, `sparse_cpu`) where it
applies and the torch-ops kernel (`portable`) everywhere else (CUDA, fp16, autograd). Both
are public so that tests can hold each to the reference.
"""

from __future__ import annotations

from torch import Tensor

from adagrad.kernels import (
    catch_up_cpu,
    dense_cpu,
    ftrl_cpu,
    ftrl_portable,
    portable,
    rowwise_cpu,
    rowwise_portable,
    sparse_cpu,
)
from adagrad.kernels.clocks import RowClocks
from adagrad.kernels.rule import FtrlRule, StepRule

__all__ = ["FtrlRule", "RowClocks", "StepRule", "catch_up_rows_", "dense_adagrad_",
           "dense_ftrl_", "dense_rowwise_adagrad_", "flush_rows_", "sparse_adagrad_",
           "sparse_ftrl_", "sparse_rowwise_adagrad_"]

flush_rows_ = portable.flush_rows_


def dense_adagrad_(param: Tensor, grad: Tensor, state_sum: Tensor, rule: StepRule) -> None:
    """One dense Adagrad step, in place, on the fastest kernel that fits."""
    if dense_cpu.supports(param, grad, state_sum):
        dense_cpu.dense_adagrad_(param, grad, state_sum, rule)
    else:
        portable.dense_adagrad_(param, grad, state_sum, rule)


def sparse_adagrad_(param: Tensor, state_sum: Tensor, indices: Tensor, values: Tensor,
                    rule: StepRule, clocks: RowClocks, value_of: Tensor | None = None,
                    scale: Tensor | None = None) -> None:
    """One sparse Adagrad step on a ``(rows, D)`` table, in place, on the fastest kernel.

    Position ``k`` adds ``scale[k]·values[value_of[k]]`` to row ``indices[k]`` (see
    `portable.sparse_adagrad_`). Indices must lie in ``[0, rows)`` (the optimizer checks
    them before any write).
    """
    kernel = sparse_cpu if sparse_cpu.supports(param, state_sum, values) else portable
    kernel.sparse_adagrad_(param, state_sum, indices, values, rule, clocks, value_of, scale)


def catch_up_rows_(param: Tensor, state_sum: Tensor, rows: Tensor, clocks: RowClocks) -> None:
    """Bring ``rows`` (may repeat) of a ``(rows, D)`` table up to date on their pending
    lazy decay, in place, on the fastest kernel."""
    kernel = catch_up_cpu if catch_up_cpu.supports(param, state_sum, rows) else portable
    kernel.catch_up_rows_(param, state_sum, rows, clocks)


def dense_ftrl_(param: Tensor, grad: Tensor, z: Tensor, n: Tensor, rule: FtrlRule) -> None:
    """One dense FTRL-Proximal step (§6), in place, on the fastest kernel that fits."""
    kernel = ftrl_cpu if ftrl_cpu.supports(param, grad, z, n) else ftrl_portable
    kernel.dense_ftrl_(param, grad, z, n, rule)


def sparse_ftrl_(param: Tensor, z: Tensor, n: Tensor, indices: Tensor, values: Tensor,
                 rule: FtrlRule, value_of: Tensor | None = None,
                 scale: Tensor | None = None) -> None:
    """One sparse FTRL-Proximal step on a ``(rows, D)`` table (duplicates summed, then §6
    on the touched rows), in place, on the fastest kernel. Indices must lie in
    ``[0, rows)``."""
    kernel = ftrl_cpu if ftrl_cpu.supports_rows(param, z, n, values) else ftrl_portable
    kernel.sparse_ftrl_(param, z, n, indices, values, rule, value_of, scale)


def dense_rowwise_adagrad_(param: Tensor, grad: Tensor, state_sum: Tensor,
                           rule: StepRule) -> None:
    """One dense row-wise Adagrad step (§3) of ``param`` (rows along dim 0, one
    accumulator each in ``state_sum``), in place, on the fastest kernel that fits."""
    if rowwise_cpu.supports(param, grad, state_sum):
        rowwise_cpu.dense_rowwise_adagrad_(param, grad, state_sum, rule)
    else:
        rowwise_portable.dense_rowwise_adagrad_(param, grad, state_sum, rule)


def sparse_rowwise_adagrad_(param: Tensor, state_sum: Tensor, indices: Tensor, values: Tensor,
                            rule: StepRule, clocks: RowClocks, value_of: Tensor | None = None,
                            scale: Tensor | None = None) -> None:
    """One sparse row-wise Adagrad step (§2-3) on a ``(rows, D)`` table with one
    accumulator per row, in place, on the fastest kernel (see
    `rowwise_portable.sparse_rowwise_adagrad_`)."""
    kernel = (rowwise_cpu if rowwise_cpu.sparse_supports(param, state_sum, values)
              else rowwise_portable)
    kernel.sparse_rowwise_adagrad_(param, state_sum, indices, values, rule, clocks, value_of,
                                   scale)
