"""The family, one description per member: the one place that says what a member is.

Everything that lists members derives its list from `MEMBERS`: the public names of
`adagrad` and `adagrad.optim`, the estimators' ``optimizer=`` names and which engine runs
each (`adagrad.linear`), ``adagrad fit --optimizer``, the distributed checks, `compare`'s
member rows and the tests' member lists. Adding a member is its optimizer module, its kernel
package, its reference rule, its tests, and one `Member` here.

This module imports neither torch nor numba (the command line reads it to build its
parser); the classes and kernels are named by dotted path and imported where used.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any


@dataclass(frozen=True)
class Member:
    """What one member of the family is and what it supports.

    Attributes:
      name: the class name, public as ``adagrad.<name>``.
      key: the snake-case name (``optimizer=`` of the estimators, ``adagrad fit
        --optimizer``) and the name of its float64 rule in `adagrad.reference`.
      module: the module of its optimizer class.
      kernels: its kernel package; ``paths`` names the modules in it (``cpu``: numba,
        ``torch_ops``: any device, ``triton``: CUDA).
      paths: the kernel modules the package holds.
      defaults: the constructor's defaults, as a group holds them once resolved (what the
        estimators' online engine must use to step like the optimizer does).
      sparse_rows: takes sparse (COO) gradients as row updates.
      fused_layers: `adagrad.nn`'s layers can run its update in backward.
      l1: has a proximal L1 step (``l1`` / ``l2`` in its own rule).
      online: the estimators' one-example-a-step kernel (`adagrad.linear.online`) runs it.
      shardable: a step of a DTensor's local shard alone is the step of the whole.
      lr_free: ``lr`` is a multiplier of a step size the member finds itself (its default,
        not a tuned rate, is the place to start).
    """

    name: str
    key: str
    module: str
    kernels: str
    paths: tuple[str, ...]
    defaults: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))
    sparse_rows: bool = True
    fused_layers: bool = True
    l1: bool = False
    online: bool = False
    shardable: bool = True
    lr_free: bool = False

    @property
    def reference(self) -> str:
        """The dotted path of its float64 rule."""
        return f"adagrad.reference.{self.key}"

    def load(self) -> type:
        """The optimizer class (imports torch)."""
        return getattr(importlib.import_module(self.module), self.name)


def _frozen(**defaults: Any) -> MappingProxyType:
    return MappingProxyType(defaults)


MEMBERS: tuple[Member, ...] = (
    Member("Adagrad", "adagrad", "adagrad.optim.adagrad", "adagrad.kernels.adagrad",
           ("cpu", "torch_ops", "foreach", "triton", "triton_sparse"),
           _frozen(lr=1e-2, eps=1e-10, initial_accumulator_value=0.0), online=True),
    Member("RowWiseAdagrad", "rowwise_adagrad", "adagrad.optim.rowwise",
           "adagrad.kernels.rowwise", ("cpu", "torch_ops"),
           _frozen(lr=1e-2, eps=1e-10, initial_accumulator_value=0.0)),
    Member("ProximalAdagrad", "proximal_adagrad", "adagrad.optim.proximal",
           "adagrad.kernels.proximal", ("cpu", "torch_ops"),
           _frozen(lr=1e-2, eps=0.0, initial_accumulator_value=0.1), l1=True, online=True),
    Member("AdagradDA", "adagrad_da", "adagrad.optim.dual_averaging",
           "adagrad.kernels.dual_averaging", ("cpu", "torch_ops"),
           _frozen(lr=1e-2, initial_accumulator_value=0.1), l1=True),
    Member("FTRL", "ftrl", "adagrad.optim.ftrl", "adagrad.kernels.ftrl", ("cpu", "torch_ops"),
           _frozen(lr=1e-2, beta=1.0, initial_accumulator_value=0.0), l1=True, online=True),
    Member("AdagradNorm", "adagrad_norm", "adagrad.optim.norm", "adagrad.kernels.norm",
           ("cpu", "torch_ops"), _frozen(lr=1e-2, eps=1e-10, initial_accumulator_value=0.0),
           shardable=False),
    Member("FullMatrixAdagrad", "full_matrix_adagrad", "adagrad.optim.full_matrix",
           "adagrad.kernels.full_matrix", ("torch_ops",), _frozen(lr=1e-2, eps=1e-6),
           sparse_rows=False, fused_layers=False, shardable=False),
    Member("DoGAdagrad", "dog_adagrad", "adagrad.optim.dog", "adagrad.kernels.dog",
           ("cpu", "torch_ops"), _frozen(lr=1.0, reps_rel=1e-4, eps=1e-8), shardable=False,
           lr_free=True),
)

BY_NAME = MappingProxyType({member.name: member for member in MEMBERS})
BY_KEY = MappingProxyType({member.key: member for member in MEMBERS})


def names(**wanted: bool) -> tuple[str, ...]:
    """The class names of the members whose capabilities match ``wanted``, in `MEMBERS`'
    order: ``names(l1=True)`` are those with an L1 step."""
    return tuple(m.name for m in MEMBERS if all(getattr(m, k) == v for k, v in wanted.items()))


def keys(**wanted: bool) -> tuple[str, ...]:
    """The snake-case keys of the members matching ``wanted`` (see `names`)."""
    return tuple(m.key for m in MEMBERS if all(getattr(m, k) == v for k, v in wanted.items()))
