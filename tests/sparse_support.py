"""Helpers shared by the sparse-gradient tests (tests/test_sparse*.py).

Nothing here computes an Adagrad update: the oracles are `adagrad.reference` (float64),
`torch.optim.Adagrad` and closed forms written in the tests themselves.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import nn

from conftest import to64 as np64

from adagrad import reference

# Building COO tensors with out-of-range indices on purpose warns about disabled checks.
warnings.filterwarnings("ignore", message="Sparse invariant checks are implicitly disabled")


def coo(indices: Iterable[int] | torch.Tensor, values: torch.Tensor | np.ndarray,
        shape: tuple[int, ...], check: bool = False) -> torch.Tensor:
    """An *uncoalesced* COO row gradient (sparse_dim=1) with the given row indices."""
    idx = torch.as_tensor(indices, dtype=torch.int64).reshape(1, -1)
    vals = torch.as_tensor(values)
    return torch.sparse_coo_tensor(idx, vals, shape, check_invariants=check)


def rows_and_values(grad: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """The raw (uncoalesced) row indices and values of a COO gradient, as float64 numpy."""
    assert grad.is_sparse and grad.sparse_dim() == 1
    idx = grad._indices()[0].cpu().numpy().astype(np.int64)
    vals = grad._values().detach().to(torch.float64).cpu().numpy()
    return idx, vals


def densify64(grad: torch.Tensor) -> np.ndarray:
    """A sparse gradient as a dense float64 array (duplicates summed in float64)."""
    idx, vals = rows_and_values(grad)
    out = np.zeros(tuple(grad.shape), np.float64)
    np.add.at(out, idx, vals)
    return out


def random_row_grad(rows: int, width: int, nnz: int, *, dtype=torch.float32, id_range=None,
                    gen: torch.Generator | None = None) -> torch.Tensor:
    """A random uncoalesced row gradient; ``id_range`` < rows forces heavy duplication."""
    hi = rows if id_range is None else min(rows, id_range)
    idx = torch.randint(0, hi, (nnz,), generator=gen)
    vals = torch.randn(nnz, width, generator=gen).to(dtype)
    return coo(idx, vals, (rows, width))


class SparseRef:
    """Float64 reference run of :ref:`algo-sparse` (reference.adagrad_sparse) on one table."""

    def __init__(self, param: torch.Tensor | np.ndarray, initial_accumulator_value: float = 0.0,
                 **hp: Any) -> None:
        p = param if isinstance(param, np.ndarray) else np64(param)
        self.theta = np.array(p, np.float64)
        self.state = reference.adagrad_sparse_init(self.theta, initial_accumulator_value)
        self.hp = hp

    def step(self, grad: torch.Tensor | tuple[np.ndarray, np.ndarray], lr: float | None = None):
        idx, vals = rows_and_values(grad) if isinstance(grad, torch.Tensor) else grad
        hp = dict(self.hp)
        if lr is not None:
            hp["lr"] = lr
        self.theta, self.state = reference.adagrad_sparse(self.theta, idx, vals, self.state, **hp)

    def flush(self):
        hp = {k: self.hp[k] for k in ("weight_decay", "accumulator_decay", "sparse_weight_decay")
              if k in self.hp}
        self.theta, self.state = reference.adagrad_sparse_flush(self.theta, self.state, **hp)

    @property
    def sum(self) -> np.ndarray:
        return self.state["sum"]


class DenseRef:
    """Float64 reference run of :ref:`algo-adagrad` (reference.adagrad) fed densified sparse gradients."""

    def __init__(self, param: torch.Tensor | np.ndarray, initial_accumulator_value: float = 0.0,
                 **hp: Any) -> None:
        p = param if isinstance(param, np.ndarray) else np64(param)
        self.theta = np.array(p, np.float64)
        self.state = reference.adagrad_init(self.theta, initial_accumulator_value)
        self.hp = hp

    def step(self, grad: torch.Tensor | np.ndarray, lr: float | None = None):
        g = densify64(grad) if isinstance(grad, torch.Tensor) else grad
        hp = dict(self.hp)
        if lr is not None:
            hp["lr"] = lr
        self.theta, self.state = reference.adagrad(self.theta, g, self.state, **hp)

    @property
    def sum(self) -> np.ndarray:
        return self.state["sum"]


def run_opt(opt: torch.optim.Optimizer, param: torch.Tensor, grads: Iterable[torch.Tensor]):
    """Feed the given gradients to ``param`` one step each."""
    for g in grads:
        param.grad = g.clone()
        opt.step()


def torch_adagrad_replay(param0: torch.Tensor, grads: Iterable[torch.Tensor], **kw):
    """`torch.optim.Adagrad` fed the same gradients; returns (param, sum)."""
    p = param0.detach().clone().requires_grad_(True)
    opt = torch.optim.Adagrad([p], **kw)
    run_opt(opt, p, grads)
    return p.detach(), opt.state[p]["sum"]


def assert_close64(actual: torch.Tensor | np.ndarray, expected: np.ndarray, *, rtol: float,
                   atol: float, msg: str = "") -> None:
    a = np64(actual) if isinstance(actual, torch.Tensor) else np.asarray(actual, np.float64)
    np.testing.assert_allclose(a, expected, rtol=rtol, atol=atol, err_msg=msg)


def tol_for(dtype: torch.dtype) -> dict[str, float]:
    """Tolerances of a run in ``dtype`` against the float64 reference."""
    if dtype == torch.float64:
        return {"rtol": 1e-10, "atol": 1e-12}
    return {"rtol": 2e-6, "atol": 1e-6}


# ------------------------------------------------------------------ embedding workloads


class EmbeddingWorkload:
    """A tiny model with an Embedding/EmbeddingBag(sparse=True) and a nonlinear loss.

    ``grads(steps, ...)`` trains with the given optimizer factory and records every
    sparse gradient the optimizer saw (cloned, uncoalesced), plus the initial weight.
    """

    def __init__(self, kind: str = "embedding", mode: str = "sum", rows: int = 50,
                 width: int = 6, per_sample_weights: bool = False, index_dtype=torch.int64,
                 dtype=torch.float32, padding_idx: int | None = None) -> None:
        self.kind, self.mode, self.rows, self.width = kind, mode, rows, width
        self.psw, self.index_dtype, self.dtype = per_sample_weights, index_dtype, dtype
        torch.manual_seed(1234)
        if kind == "embedding":
            self.module = nn.Embedding(rows, width, sparse=True, padding_idx=padding_idx)
        else:
            self.module = nn.EmbeddingBag(rows, width, mode=mode, sparse=True,
                                          padding_idx=padding_idx)
        self.module.to(dtype)
        self.head = torch.randn(width, dtype=dtype)

    def batch(self, gen: torch.Generator):
        # Zipf-ish ids (products of small ints): duplicates are common, high rows never hit.
        raw = torch.randint(0, 8, (24,), generator=gen) * torch.randint(0, 5, (24,), generator=gen)
        ids = (raw % (self.rows - 3)).to(self.index_dtype)
        return ids

    def loss(self, module: nn.Module, ids: torch.Tensor, gen_state: torch.Tensor):
        if self.kind == "embedding":
            out = module(ids.view(6, 4))
            y = (out * self.head).sum(-1)
        else:
            offsets = torch.tensor([0, 3, 7, 7, 15], dtype=self.index_dtype)
            psw = None
            if self.psw:
                g = torch.Generator().manual_seed(int(ids.sum()))
                psw = torch.rand(ids.numel(), generator=g, dtype=torch.float64).to(self.dtype)
            out = module(ids, offsets, per_sample_weights=psw)
            y = (out * self.head).sum(-1)
        return ((y - 1.0) ** 2).sum() + (y ** 3).sum() * 0.1

    def train(self, make_opt, steps: int = 4):
        """Train a copy of the module with ``make_opt([weight])``.

        Returns ``(weight0, grads, optimizer, weight)``.
        """
        module = copy.deepcopy(self.module)
        weight = module.weight
        weight0 = weight.detach().clone()
        opt = make_opt([weight])
        gen = torch.Generator().manual_seed(7)
        grads = []
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            ids = self.batch(gen)
            self.loss(module, ids, None).backward()
            assert weight.grad.is_sparse
            grads.append(weight.grad.detach().clone())
            opt.step()
        return weight0, grads, opt, weight
