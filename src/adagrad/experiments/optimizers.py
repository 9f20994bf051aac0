"""The optimizers `adagrad compare` trains, with their learning-rate grids.

One `OptimizerSpec` per line of `REGISTRY`; adding an optimizer is one line here. Each
optimizer's learning rate is chosen on the validation split from its own grid (`lr_grid`;
`--quick` uses `quick_grid`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

import adagrad
from adagrad.experiments.data import CLASSIFICATION, REGRESSION

Params = Iterable[torch.nn.Parameter]
Factory = Callable[[Params, float], torch.optim.Optimizer]

BOTH = frozenset({CLASSIFICATION, REGRESSION})
TEXT = frozenset({CLASSIFICATION})

#: Roles used by the claims: the Adagrad runs whose step size should shrink, and the remedies.
ADAGRAD = "adagrad"
REMEDY = "remedy"
BASELINE = "baseline"


@dataclass(frozen=True)
class OptimizerSpec:
    """One compared optimizer.

    Attributes:
      key: stable identifier used in metrics.json and file names.
      label: display name.
      factory: ``(params, lr) -> optimizer``; None while the class is not available.
      lr_grid: learning rates tried per task (``"classification"``, ``"regression"``).
      quick_grid: the smaller grid of ``--quick``.
      sparse: accepts sparse gradients (gets the ``EmbeddingBag(sparse=True)`` text model).
      role: ``"adagrad"`` (plain Adagrad, step should shrink), ``"remedy"`` (a fix for the
        shrinking step) or ``"baseline"``.
      tasks: the tasks it runs on.
      reset_every_epoch: call ``optimizer.reset_state()`` at the end of every epoch.
      note: one line for the report.
    """

    key: str
    label: str
    factory: Factory | None
    lr_grid: dict[str, tuple[float, ...]]
    quick_grid: dict[str, tuple[float, ...]]
    sparse: bool
    role: str
    tasks: frozenset[str] = BOTH
    reset_every_epoch: bool = False
    note: str = ""

    @property
    def available(self) -> bool:
        """True when the optimizer exists in the installed packages."""
        return self.factory is not None

    def build(self, params: Params, lr: float) -> torch.optim.Optimizer:
        """A fresh optimizer over ``params`` with learning rate ``lr``."""
        if self.factory is None:
            raise RuntimeError(f"optimizer {self.key} is not available in this version")
        return self.factory(params, lr)


def _ours(name: str, **kwargs: object) -> Factory | None:
    """A factory for ``adagrad.<name>(params, lr=lr, **kwargs)``, or None if it does not exist."""
    cls = getattr(adagrad, name, None)
    if cls is None:
        return None
    return lambda params, lr: cls(params, lr=lr, **kwargs)


def _grid(text: tuple[float, ...], regression: tuple[float, ...]) -> dict[str, tuple[float, ...]]:
    return {CLASSIFICATION: text, REGRESSION: regression}


def _torch(cls: type[torch.optim.Optimizer], **kwargs: object) -> Factory:
    return lambda params, lr: cls(params, lr=lr, **kwargs)


REGISTRY: tuple[OptimizerSpec, ...] = (
    OptimizerSpec("adagrad-founding", "Adagrad (founding: ε inside √)",
                  _ours("Adagrad", eps_placement="inside"),
                  _grid((0.03, 0.1, 0.3, 1.0), (0.03, 0.1, 0.3, 1.0)),
                  _grid((0.1, 0.3), (0.1, 0.3)), sparse=True, role=ADAGRAD,
                  note="adagrad.Adagrad(eps_placement='inside'): θ -= lr·g/sqrt(G+ε), G₀ = 0"),
    OptimizerSpec("adagrad-torch", "Adagrad (torch convention)", _ours("Adagrad"),
                  _grid((0.03, 0.1, 0.3, 1.0), (0.03, 0.1, 0.3, 1.0)),
                  _grid((0.1, 0.3), (0.1, 0.3)), sparse=True, role=ADAGRAD,
                  note="adagrad.Adagrad defaults: θ -= lr·g/(sqrt(G)+1e-10), G₀ = 0"),
    OptimizerSpec("adagrad-optax", "Adagrad (optax preset: G₀=0.1)",
                  _ours("Adagrad", convention="optax"),
                  _grid((0.3, 1.0, 3.0, 10.0), (0.03, 0.1, 0.3, 1.0)),
                  _grid((1.0, 3.0), (0.1, 0.3)), sparse=True, role=ADAGRAD,
                  note="adagrad.Adagrad(convention='optax'): ε = 1e-7 inside the root, G₀ = 0.1"),
    OptimizerSpec("adagrad-decay", "Adagrad ρ=0.99 (accumulator_decay)",
                  _ours("Adagrad", accumulator_decay=0.99),
                  _grid((0.01, 0.03, 0.1, 0.3), (0.01, 0.03, 0.1, 0.3)),
                  _grid((0.03, 0.1), (0.03, 0.1)), sparse=True, role=REMEDY,
                  note="G ← 0.99·G + g² on the touched coordinates: the sum forgets"),
    OptimizerSpec("adagrad-reset", "Adagrad, sum reset every epoch", _ours("Adagrad"),
                  _grid((0.01, 0.03, 0.1, 0.3), (0.003, 0.01, 0.03, 0.1)),
                  _grid((0.03, 0.1), (0.01, 0.03)), sparse=True, role=REMEDY,
                  reset_every_epoch=True,
                  note="adagrad.Adagrad with reset_state() after every epoch (the seed's remedy)"),
    OptimizerSpec("rowwise-adagrad", "RowWiseAdagrad", _ours("RowWiseAdagrad"),
                  _grid((0.03, 0.1, 0.3, 1.0), ()), _grid((0.1, 0.3), ()), sparse=True,
                  role=BASELINE, tasks=TEXT, note="one accumulator per embedding row"),
    OptimizerSpec("ftrl", "FTRL-Proximal", _ours("FTRL"),
                  _grid((1.0, 3.0, 10.0, 30.0), ()), _grid((3.0, 10.0), ()), sparse=True,
                  role=BASELINE, tasks=TEXT, note="McMahan et al. 2013, per-coordinate rates"),
    OptimizerSpec("sgd", "SGD (torch.optim)", _torch(torch.optim.SGD),
                  _grid((1.0, 3.0, 10.0, 30.0), (0.01, 0.03, 0.1, 0.3)),
                  _grid((3.0, 10.0), (0.03, 0.1)), sparse=True, role=BASELINE,
                  note="plain SGD, no momentum: one rate for every parameter"),
    OptimizerSpec("rmsprop", "RMSprop (torch.optim)", _torch(torch.optim.RMSprop),
                  _grid((0.001, 0.003, 0.01, 0.03), (0.001, 0.003, 0.01, 0.03)),
                  _grid((0.003, 0.01), (0.003, 0.01)), sparse=False, role=REMEDY,
                  note="moving average of g² (α=0.99); dense gradients (refuses sparse)"),
    OptimizerSpec("adadelta", "Adadelta (torch.optim)", _torch(torch.optim.Adadelta),
                  _grid((1.0, 3.0, 10.0, 30.0), (1.0, 3.0, 10.0, 30.0)),
                  _grid((3.0, 10.0), (3.0, 10.0)), sparse=False, role=REMEDY,
                  note="moving averages of g² and of the updates; dense gradients (refuses sparse)"),
    OptimizerSpec("adam", "Adam (torch.optim)", _torch(torch.optim.Adam),
                  _grid((0.001, 0.003, 0.01, 0.03), (0.003, 0.01, 0.03, 0.1)),
                  _grid((0.003, 0.01), (0.01, 0.03)), sparse=False, role=REMEDY,
                  note="bias-corrected moving averages of g and g²; dense gradients (refuses sparse)"),
)


def optimizers_for(task: str) -> list[OptimizerSpec]:
    """The available optimizers that run on ``task``, in registry order."""
    return [s for s in REGISTRY if s.available and task in s.tasks and s.lr_grid.get(task)]


def unavailable() -> list[OptimizerSpec]:
    """Registered optimizers this version of the package does not have yet."""
    return [s for s in REGISTRY if not s.available]
