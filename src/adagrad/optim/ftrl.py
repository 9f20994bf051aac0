"""`FTRL`: FTRL-Proximal with per-coordinate Adagrad rates (:ref:`algo-ftrl`), dense and
sparse, on the numba and torch-ops kernels and in the fused `adagrad.nn` layers."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.optim.optimizer import ParamsT

from adagrad import kernels
from adagrad.kernels import FtrlRule
from adagrad.kernels.ftrl import torch_ops as ftrl_portable
from adagrad.optim.base import AdagradFamily, SparseGrad, as_real
from adagrad.optim.validation import check_non_negative, check_positive, check_state_dtype


def _check_hyperparameters(group: dict[str, Any]) -> None:
    check_positive("lr", group["lr"])
    for name in ("beta", "l1", "l2", "initial_accumulator_value"):
        check_non_negative(name, group[name])
    check_state_dtype(group["state_dtype"])


class FTRL(AdagradFamily):
    r"""FTRL-Proximal (McMahan et al., "Ad Click Prediction: a View from the Trenches",
    KDD 2013, Algorithm 1), per coordinate, :ref:`algo-ftrl`, with α = ``lr``,
    β = ``beta``, λ1 = ``l1``, λ2 = ``l2``::

        σ = (sqrt(n + g²) - sqrt(n)) / α
        z ← z + g - σ·θ ;  n ← n + g²
        θ = 0                                              if |z| ≤ λ1
        θ = -(z - sign(z)·λ1) / ((β + sqrt(n))/α + λ2)     otherwise

    State per parameter: ``step``, ``z`` (the linear term, any sign) and ``n`` (the sum
    of squared gradients, from ``initial_accumulator_value``), each the parameter's size;
    float32 for fp16/bf16 parameters (``state_dtype``). After a coordinate's first step θ
    is the closed form of (z, n): the starting θ only enters through σ·θ of that step. L1
    gives exact zeros, wherever ``|z| ≤ λ1``.

    Sparse gradients (``nn.Embedding(sparse=True)``, ``EmbeddingBag``, the fused
    `adagrad.nn` layers): the duplicates of a row are summed, the touched rows get the
    formula and the others keep θ, z and n (TensorFlow's ``SparseApplyFtrl``). A zero
    gradient gives σ = 0, so z and n do not change and the dense formula gives back the
    same θ: from θ = 0 (the paper's w₁ = 0) the sparse run equals the dense one on every
    row, bit for bit on one kernel. From another start it does on the rows of the first
    step only: a dense step sets every coordinate without gradient to the closed form of
    (0, n₀), which is 0, where the sparse step keeps the starting θ (an embedding's
    initialisation, say) until the row's first gradient, whose σ·θ then starts from it
    (TensorFlow's dense and sparse ops differ in the same way).

    Kernels: dense, numba on the CPU for float32/float64/bf16 parameters with
    float32/float64 state, torch ops otherwise (CUDA, fp16, half-precision state,
    ``differentiable=True``); sparse, numba's row kernel for such tables with
    float32/float64 gradient rows, torch ops otherwise (fp16 tables, bf16 gradient rows).

    Against TensorFlow (``tf.raw_ops.ApplyFtrl`` / ``SparseApplyFtrl``, Keras ``Ftrl``;
    ``accum`` is n, ``linear`` is z), with TF's default ``lr_power=-0.5``:

    - TF's denominator is ``sqrt(n)/lr + 2·l2`` (no β; Keras 3 adds ``β/lr``): TF's
      ``ApplyFtrl(lr, l1, l2)`` with accumulators starting at ``a`` is
      ``FTRL(lr=lr, beta=0, l1=l1, l2=2*l2, initial_accumulator_value=a)`` (Keras 3's
      ``Ftrl(beta=b)``: ``beta=b``). Their σ, z and the ``|z| ≤ λ1`` test are ours.
    - TF starts n at 0.1 (``initial_accumulator_value``); ours at 0, the paper's.
      Keras's default lr is 1e-3, ours 1e-2.
    - Not supported: ``lr_power`` other than -0.5, ``l2_shrinkage`` (``ApplyFtrlV2``,
      ``g + 2·λ·θ`` in z but not in n), ``multiply_linear_by_lr`` (z scaled by α: the
      same update, rounded otherwise).

    Args:
      params: parameters or parameter groups, as for `torch.optim.Optimizer`.
      lr: α, > 0 (it divides). Default 1e-2.
      beta: β, >= 0; larger β damps the first steps of a coordinate. Default 1.0.
      l1: λ1, >= 0: coordinates with ``|z| ≤ λ1`` are exactly 0. Default 0.0.
      l2: λ2, >= 0 (TF's ``2·l2``). Default 0.0.
      initial_accumulator_value: n₀, >= 0 (TF's default is 0.1). Default 0.0.
      state_dtype: dtype of ``z`` and ``n``. Default: float32 for fp16/bf16 parameters,
        else the parameter's.
      differentiable: record the dense step for autograd (torch ops; as in
        `torch.optim`); not with sparse gradients.

    Example:
        >>> import torch, adagrad
        >>> w = torch.nn.Parameter(torch.zeros(2))
        >>> optimizer = adagrad.FTRL([w], lr=0.1, l1=0.5)
        >>> w.grad = torch.tensor([0.2, 2.0])
        >>> optimizer.step()
        >>> bool(w[0] == 0), bool(w[1] < 0)
        (True, True)
    """

    _accumulators = ("z", "n")
    _signed_state = ("z",)
    _checkpoint_group_keys = ("lr", "beta", "l1", "l2", "initial_accumulator_value")

    def __init__(self, params: ParamsT, lr: float | Tensor = 1e-2, beta: float = 1.0,
                 l1: float = 0.0, l2: float = 0.0, initial_accumulator_value: float = 0.0, *,
                 state_dtype: torch.dtype | None = None, differentiable: bool = False) -> None:
        defaults = dict(lr=lr, beta=beta, l1=l1, l2=l2,
                        initial_accumulator_value=initial_accumulator_value,
                        state_dtype=state_dtype, differentiable=differentiable)
        _check_hyperparameters(defaults)
        super().__init__(params, defaults)

    # -- state ----------------------------------------------------------------------

    def _state_shapes(self, param: Tensor) -> dict[str, tuple[int, ...]]:
        return {"z": tuple(param.shape), "n": tuple(param.shape)}

    _validate = staticmethod(_check_hyperparameters)

    # -- stepping -------------------------------------------------------------------

    def _check_sparse(self, sparse: SparseGrad, group: dict[str, Any]) -> None:
        super()._check_sparse(sparse, group)
        if group["differentiable"]:
            raise RuntimeError("FTRL with differentiable=True does not support sparse "
                               "gradients")

    def _step_dense_one(self, param: Tensor, grad: Tensor, state: dict[str, Tensor],
                        group: dict[str, Any]) -> None:
        kernel = ftrl_portable if group["differentiable"] else kernels
        state["step"] += 1
        kernel.dense_ftrl_(*as_real(param, grad, state["z"], state["n"]), _rule(group))

    def _step_sparse(self, param: Tensor, sparse: SparseGrad, group: dict[str, Any]) -> None:
        state = self._state_for(param, group)
        kernels.sparse_ftrl_(sparse.table, sparse.view(state["z"]), sparse.view(state["n"]),
                             sparse.indices, sparse.values, _rule(group), sparse.value_of,
                             sparse.scale)
        state["step"] += 1


def _rule(group: dict[str, Any]) -> FtrlRule:
    return FtrlRule(lr=float(group["lr"]), beta=float(group["beta"]), l1=float(group["l1"]),
                    l2=float(group["l2"]))
