"""The optimizers `adagrad compare` trains, and the learning-rate lattice they are tuned on.

One `OptimizerSpec` per line of `REGISTRY`; adding an optimizer is one line here. A tuned
optimizer starts from a few rates of `LATTICE` (half-decades, the same density for every
optimizer, so that usable ranges can be compared) and the grid grows until the best rate is
interior (`experiment.search_grid`); a learning-rate-free optimizer runs once per seed with
its defaults.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

import adagrad
from adagrad.experiments.data import REGRESSION, TABULAR_KIND, TEXT_KIND

Params = Iterable[torch.nn.Parameter]
Factory = Callable[[Params, float | None], torch.optim.Optimizer]

#: The dataset kinds a spec runs on (`data.DatasetInfo.kind`; ``"regression"``: tabular
#: regression only).
TEXT = TEXT_KIND
TABULAR = TABULAR_KIND
REGRESSION_ONLY = REGRESSION
ALL_KINDS = frozenset({TEXT, TABULAR})

#: Roles used by the claims.
ADAGRAD = "adagrad"          # plain Adagrad: its step should only shrink
REMEDY = "remedy"            # a fix for the shrinking step
BASELINE = "baseline"        # everything else that is grid-tuned
LR_FREE = "learning-rate-free"

#: The optimizers whose usable learning-rate range the claim ``no-manual-tuning`` compares:
#: their grids grow until the range is closed on both sides, the others' until the best
#: rate is interior.
USABLE_RANGE_MEASURED = ("adagrad-founding", "sgd")

#: Learning rates are tuned on 10^(k/2): two points per decade for every optimizer.
POINTS_PER_DECADE = 2
LATTICE_MIN, LATTICE_MAX = -12, 6   # 1e-6 … 1e3


def lattice(k: int) -> float:
    """The k-th rate of the lattice, 10^(k/2) to three significant digits."""
    return float(f"{10 ** (k / POINTS_PER_DECADE):.3g}")


def lattice_index(lr: float) -> int:
    """The index of ``lr`` on the lattice (the nearest point)."""
    return round(POINTS_PER_DECADE * math.log10(lr))


def rates(lo: int, hi: int) -> tuple[float, ...]:
    """The lattice rates from index ``lo`` to ``hi`` inclusive."""
    return tuple(lattice(k) for k in range(lo, hi + 1))


@dataclass(frozen=True)
class OptimizerSpec:
    """One compared optimizer.

    Attributes:
      key: stable identifier (run id) used in metrics.json and file names.
      label: display name.
      factory: ``(params, lr) -> optimizer`` (``lr`` is None for a learning-rate-free one);
        None while its class or package is not installed.
      start: the starting grid per dataset kind (``"text"``, ``"tabular"``), lattice indices
        ``(lo, hi)``; None for a learning-rate-free optimizer.
      sparse: accepts sparse gradients (gets the ``EmbeddingBag(sparse=True)`` text model).
      role: ``"adagrad"``, ``"remedy"``, ``"baseline"`` or ``"learning-rate-free"``.
      kinds: the dataset kinds it runs on (``"regression"`` alone: tabular regression only).
      reset_every_epoch: call ``optimizer.reset_state()`` at the end of every epoch.
      warmup_epochs: the learning rate rises linearly from a tenth of ``lr`` over this many
        epochs (0: no warm-up).
      average_iterates: evaluate the polynomial-decay average of the iterates (γ = 8,
        Shamir & Zhang 2013), as DoG's authors advise (``dog.PolynomialDecayAverager``).
      note: one line for the report.
      missing: why the factory is None (for the report).
    """

    key: str
    label: str
    factory: Factory | None
    start: dict[str, tuple[int, int]] | None
    sparse: bool
    role: str
    kinds: frozenset[str] = ALL_KINDS
    reset_every_epoch: bool = False
    warmup_epochs: int = 0
    average_iterates: bool = False
    note: str = ""
    missing: str = ""

    @property
    def available(self) -> bool:
        """True when the optimizer exists in the installed packages."""
        return self.factory is not None

    @property
    def tuned(self) -> bool:
        """True when its learning rate is chosen on a grid."""
        return self.start is not None

    def start_grid(self, kind: str, quick: bool) -> tuple[float, ...]:
        """The rates tried first on a dataset of ``kind`` (``--quick``: only the middle one)."""
        if self.start is None:
            return ()
        lo, hi = self.start[TEXT if kind == TEXT else TABULAR]
        if quick:
            lo = hi = (lo + hi) // 2
        return rates(lo, hi)

    def build(self, params: Params, lr: float | None) -> torch.optim.Optimizer:
        """A fresh optimizer over ``params`` with learning rate ``lr``."""
        if self.factory is None:
            raise RuntimeError(f"optimizer {self.key} is not available: {self.missing}")
        return self.factory(params, lr)


def _adagrad_member(name: str, **kwargs: object) -> Factory | None:
    """A factory for ``adagrad.<name>(params, lr=lr, **kwargs)``, or None if it does not exist."""
    cls = getattr(adagrad, name, None)
    if cls is None:
        return None
    return lambda params, lr: cls(params, lr=lr, **kwargs)


def _torch(cls: type[torch.optim.Optimizer], **kwargs: object) -> Factory:
    return lambda params, lr: cls(params, lr=lr, **kwargs)


def _learning_rate_free(module: str, name: str) -> Factory | None:
    """A factory for ``module.name(params)`` with its defaults (the rate is ignored), or None."""
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None
    return lambda params, lr: cls(params)


def _grids(text: tuple[int, int], tabular: tuple[int, int]) -> dict[str, tuple[int, int]]:
    return {TEXT: text, TABULAR: tabular}


_LR_FREE_CLASS = adagrad.members.names(lr_free=True)[0]  # the family's DoGAdagrad
_DADAPT = "dadaptation==3.2"
_DOG = "dog-optimizer==1.0.3"

REGISTRY: tuple[OptimizerSpec, ...] = (
    OptimizerSpec("adagrad-founding", "Adagrad (textbook: ε inside √)",
                  _adagrad_member("Adagrad", eps_placement="inside"), _grids((-1, 1), (-3, -1)),
                  sparse=True, role=ADAGRAD,
                  note="adagrad.Adagrad(eps_placement='inside'): θ -= lr·g/sqrt(G+ε), G₀ = 0"),
    OptimizerSpec("adagrad-torch", "Adagrad (torch convention)", _adagrad_member("Adagrad"),
                  _grids((-1, 1), (-3, -1)), sparse=True, role=ADAGRAD,
                  note="adagrad.Adagrad defaults: θ -= lr·g/(sqrt(G)+1e-10), G₀ = 0"),
    OptimizerSpec("adagrad-optax", "Adagrad (optax preset: G₀=0.1)",
                  _adagrad_member("Adagrad", convention="optax"), _grids((2, 4), (-3, -1)),
                  sparse=True, role=ADAGRAD,
                  note="adagrad.Adagrad(convention='optax'): ε = 1e-7 inside the root, G₀ = 0.1"),
    OptimizerSpec("adagrad-decay", "Adagrad ρ=0.99 (accumulator_decay)",
                  _adagrad_member("Adagrad", accumulator_decay=0.99), _grids((-2, 0), (-3, -1)),
                  sparse=True, role=REMEDY,
                  note="G ← 0.99·G + g² on the touched coordinates: the sum forgets"),
    OptimizerSpec("adagrad-reset", "Adagrad, sum reset every epoch", _adagrad_member("Adagrad"),
                  _grids((-3, -1), (-4, -2)), sparse=True, role=REMEDY, reset_every_epoch=True,
                  note="adagrad.Adagrad with reset_state() after every epoch (the seed's remedy)"),
    OptimizerSpec("adagrad-warmup", "Adagrad, warm-up over epoch 1",
                  _adagrad_member("Adagrad", eps_placement="inside"), _grids((-1, 1), (-2, 0)),
                  sparse=True, role=REMEDY, warmup_epochs=1,
                  note="the textbook formula with lr rising linearly from lr/10 over the first "
                       "epoch (the common advice of a 'smaller learning rate at the start')"),
    OptimizerSpec("rowwise-adagrad", "RowWiseAdagrad", _adagrad_member("RowWiseAdagrad"),
                  _grids((-1, 1), (-1, 1)), sparse=True, role=BASELINE, kinds=frozenset({TEXT}),
                  note="one accumulator per embedding row (FBGEMM's EXACT_ROWWISE_ADAGRAD)"),
    OptimizerSpec("proximal-adagrad", "ProximalAdagrad (l1 = 0)",
                  _adagrad_member("ProximalAdagrad", sparse_catch_up=True),
                  _grids((2, 4), (-3, -1)), sparse=True, role=BASELINE,
                  note="FOBOS with Adagrad's rates, G₀ = 0.1; l1 = 0 here (examples/l1_sparsity.py "
                       "measures L1)"),
    OptimizerSpec("adagrad-da", "AdagradDA (l1 = 0)",
                  _adagrad_member("AdagradDA", sparse_catch_up=True), _grids((2, 4), (-2, 0)),
                  sparse=True, role=BASELINE,
                  note="dual averaging: θ recomputed from the gradient sum, G₀ = 0.1"),
    OptimizerSpec("ftrl", "FTRL-Proximal", _adagrad_member("FTRL"), _grids((2, 4), (-2, 0)),
                  sparse=True, role=BASELINE, kinds=frozenset({TEXT}),
                  note="McMahan et al. 2013, per-coordinate rates"),
    OptimizerSpec("adagrad-norm", "AdagradNorm (one step per tensor)",
                  _adagrad_member("AdagradNorm"), _grids((2, 4), (-1, 1)), sparse=True,
                  role=BASELINE, note="Ward, Wu, Bottou 2019: b² += ||g||², θ -= lr·g/b"),
    OptimizerSpec("full-matrix-adagrad", "FullMatrixAdagrad",
                  _adagrad_member("FullMatrixAdagrad"), _grids((-2, 0), (-2, 0)), sparse=False,
                  role=BASELINE, kinds=frozenset({REGRESSION_ONLY}),
                  note="the full-matrix rule G = Σ g gᵀ, θ -= lr·G^(-1/2)·g (small models only)"),
    OptimizerSpec("sgd", "SGD (torch.optim)", _torch(torch.optim.SGD), _grids((1, 3), (-2, 0)),
                  sparse=True, role=BASELINE,
                  note="plain SGD, no momentum: one rate for every parameter"),
    OptimizerSpec("rmsprop", "RMSprop (torch.optim)", _torch(torch.optim.RMSprop, foreach=True),
                  _grids((-4, -2), (-5, -3)), sparse=False, role=REMEDY,
                  note="moving average of g² (α=0.99); dense gradients (refuses sparse)"),
    OptimizerSpec("adadelta", "Adadelta (torch.optim)", _torch(torch.optim.Adadelta, foreach=True),
                  _grids((3, 5), (1, 3)), sparse=False, role=REMEDY,
                  note="moving averages of g² and of the updates; dense gradients (refuses sparse)"),
    OptimizerSpec("adam", "Adam (torch.optim)", _torch(torch.optim.Adam, fused=True),
                  _grids((-3, -1), (-4, -2)), sparse=False, role=REMEDY,
                  note="bias-corrected moving averages of g and g² (torch's fused CPU kernel); "
                       "dense gradients (refuses sparse)"),
    OptimizerSpec("adagrad-lr-free", "DoGAdagrad (no learning rate)",
                  _learning_rate_free("adagrad", _LR_FREE_CLASS), None, sparse=True, role=LR_FREE,
                  note="adagrad.DoGAdagrad with its defaults: Adagrad scaled by the distance "
                       "travelled from the start (docs/algorithms.md, algo-dog)",
                  missing=f"adagrad.{_LR_FREE_CLASS} is not in this version"),
    OptimizerSpec("dadapt-adagrad", "D-Adaptation AdaGrad (dadaptation)",
                  _learning_rate_free("dadaptation", "DAdaptAdaGrad"), None, sparse=True,
                  role=LR_FREE, note=f"{_DADAPT} DAdaptAdaGrad with its defaults",
                  missing=f"pip install {_DADAPT}"),
    OptimizerSpec("dog", "DoG (dog-optimizer)", _learning_rate_free("dog", "DoG"), None,
                  sparse=False, role=LR_FREE, note=f"{_DOG} DoG with its defaults",
                  missing=f"pip install {_DOG}"),
    OptimizerSpec("ldog", "L-DoG (dog-optimizer)", _learning_rate_free("dog", "LDoG"), None,
                  sparse=False, role=LR_FREE, note=f"{_DOG} LDoG with its defaults",
                  missing=f"pip install {_DOG}"),
    OptimizerSpec("dog-avg", "DoG + iterate averaging", _learning_rate_free("dog", "DoG"), None,
                  sparse=False, role=LR_FREE, average_iterates=True,
                  note=f"{_DOG} DoG with its defaults, evaluated at its PolynomialDecayAverager "
                       f"(γ = 8) average, as its authors advise",
                  missing=f"pip install {_DOG}"),
    OptimizerSpec("ldog-avg", "L-DoG + iterate averaging", _learning_rate_free("dog", "LDoG"),
                  None, sparse=False, role=LR_FREE, average_iterates=True,
                  note=f"{_DOG} LDoG with its defaults, evaluated at its PolynomialDecayAverager "
                       f"(γ = 8) average, as its authors advise",
                  missing=f"pip install {_DOG}"),
)

BY_KEY = {spec.key: spec for spec in REGISTRY}


def runs_on(spec: OptimizerSpec, kind: str, task: str) -> bool:
    """True when ``spec`` applies to a dataset of ``kind`` and ``task``."""
    if kind == TEXT:
        return TEXT in spec.kinds
    return TABULAR in spec.kinds or (REGRESSION_ONLY in spec.kinds and task == REGRESSION)


def optimizers_for(kind: str, task: str) -> list[OptimizerSpec]:
    """The available optimizers that run on a dataset of ``kind``/``task``, in registry order."""
    return [s for s in REGISTRY if s.available and runs_on(s, kind, task)]


def unavailable() -> list[OptimizerSpec]:
    """Registered optimizers whose class or package is not installed."""
    return [s for s in REGISTRY if not s.available]
