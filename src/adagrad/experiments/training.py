"""One training run: a model, an optimizer, a seed; loss curves and effective-step traces."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from adagrad.experiments.data import REGRESSION, TabularData, TextData, TextSplit
from adagrad.experiments.effective_lr import EffectiveLR, active_median, effective_lr
from adagrad.experiments.models import SparseLinearText, TabularNet
from adagrad.experiments.optimizers import ADAGRAD, OptimizerSpec

#: Relative tolerance when checking that a coordinate's effective rate never grew.
MONOTONE_RTOL = 1e-6
#: A warm-up starts at this fraction of the learning rate and rises linearly to it.
WARMUP_START = 0.1


@dataclass(frozen=True)
class TrainSettings:
    """How long and in what batches to train."""

    epochs: int
    batch_size: int
    snapshots_per_epoch: int = 4


@dataclass
class StepTrace:
    """The median effective step over time (active coordinates of the traced parameters).

    ``increases``/``compared`` count coordinates whose rate grew (beyond a 1e-6 relative
    tolerance) between consecutive snapshots, among those active at both.
    """

    steps: list[int] = field(default_factory=list)
    median: list[float] = field(default_factory=list)
    increases: int = 0
    compared: int = 0
    max_relative_increase: float = 0.0


@dataclass
class RunOutcome:
    """What one run measured. Metrics are on the validation and test splits at the end."""

    optimizer: str
    lr: float | None  # None for a learning-rate-free optimizer
    seed: int
    epochs: list[int]
    train_loss: list[float]
    val_loss: list[float]
    val_metric: float
    test_metric: float
    diverged: bool
    seconds: float
    trace: StepTrace
    word_rate: np.ndarray | None = None
    coordinate_rate: np.ndarray | None = None

    # ``trace``, ``word_rate`` and ``coordinate_rate`` are recorded only for the runs of the
    # learning-rate grid (seed 0), where the chosen one becomes the reported trace.


Progress = Callable[[], None]


class _Tracer:
    """Snapshots of the effective step of the traced parameters."""

    def __init__(self, optimizer: torch.optim.Optimizer, params: list[torch.Tensor],
                 enabled: bool = True, check_monotone: bool = True):
        self.optimizer = optimizer
        self.params = params
        self.enabled = enabled
        self.check_monotone = check_monotone
        self.trace = StepTrace()
        self._previous: list[EffectiveLR] | None = None

    def current(self) -> list[EffectiveLR] | None:
        eff = [effective_lr(self.optimizer, p) for p in self.params]
        if any(e is None for e in eff):
            return None
        return eff  # type: ignore[return-value]

    def snapshot(self, step: int) -> None:
        if not self.enabled:
            return
        eff = self.current()
        if eff is None:
            return
        self.trace.steps.append(step)
        self.trace.median.append(active_median(eff))
        if not self.check_monotone:
            return
        if self._previous is not None:
            for now, before in zip(eff, self._previous):
                both = now.active & before.active
                grew = (now.rate > before.rate * (1 + MONOTONE_RTOL)) & both
                self.trace.compared += int(both.sum())
                self.trace.increases += int(grew.sum())
                rel = torch.where(both, now.rate / before.rate - 1, torch.zeros_like(now.rate))
                if rel.numel():
                    self.trace.max_relative_increase = max(self.trace.max_relative_increase,
                                                           float(rel.max()))
        self._previous = eff

    def reset_reference(self) -> None:
        """Forget the previous snapshot (after a deliberate reset of the accumulators)."""
        self._previous = None


# --- text ------------------------------------------------------------------------------------

def bags(split: TextSplit, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """EmbeddingBag inputs (ids, offsets, per-word weights) for documents ``rows``."""
    starts = split.offsets[rows]
    lengths = split.offsets[rows + 1] - starts
    offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    ids = split.ids[np.repeat(starts - offsets, lengths) + np.arange(int(lengths.sum()))]
    weights = np.repeat(1.0 / np.sqrt(np.maximum(lengths, 1)), lengths).astype(np.float32)
    return torch.from_numpy(ids), torch.from_numpy(offsets), torch.from_numpy(weights)


def _text_eval(model: SparseLinearText, split: TextSplit, bags) -> tuple[float, float]:
    with torch.no_grad():
        logits = model(*bags)
        labels = torch.from_numpy(split.labels)
        loss = nn.functional.cross_entropy(logits, labels).item()
        acc = (logits.argmax(1) == labels).double().mean().item()
    return loss, acc


@dataclass
class _Curves:
    epochs: list[int]
    train_loss: list[float]
    val_loss: list[float]
    diverged: bool = False


def _averager(spec: OptimizerSpec, model: nn.Module):
    """DoG's authors' iterate averaging (``dog.PolynomialDecayAverager``) for a spec that
    asks for it, else None."""
    if not spec.average_iterates:
        return None
    from dog import PolynomialDecayAverager

    return PolynomialDecayAverager(model)


def _fit(optimizer: torch.optim.Optimizer, spec: OptimizerSpec, settings: TrainSettings,
         n: int, rng: np.random.Generator, batch_loss: Callable[[np.ndarray], torch.Tensor],
         evaluate: Callable[[], tuple[float, float]], tracer: _Tracer,
         progress: Progress | None, too_large: float = math.inf, averager=None) -> _Curves:
    """The training loop both tasks share: shuffled mini-batches of ``n`` examples,
    ``evaluate()`` (train and validation loss) after every epoch, the spec's reset, the
    tracer's snapshots, the ``averager``'s step after every optimizer step; stops at a
    non-finite (or ``too_large``) loss."""
    steps_per_epoch = math.ceil(n / settings.batch_size)
    every = max(1, steps_per_epoch // settings.snapshots_per_epoch)
    warmup = (torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=WARMUP_START,
                                                total_iters=spec.warmup_epochs * steps_per_epoch)
              if spec.warmup_epochs else None)
    train0, val0 = evaluate()
    curves = _Curves([0], [train0], [val0])
    step = 0
    for epoch in range(1, settings.epochs + 1):
        order = rng.permutation(n)
        for b in range(steps_per_epoch):
            optimizer.zero_grad(set_to_none=True)
            batch_loss(order[b * settings.batch_size:(b + 1) * settings.batch_size]).backward()
            optimizer.step()
            if averager is not None:
                averager.step()
            if warmup is not None:
                warmup.step()
            step += 1
            if step % every == 0:
                tracer.snapshot(step)
        if spec.reset_every_epoch and epoch < settings.epochs:
            optimizer.reset_state()  # type: ignore[attr-defined]
            tracer.reset_reference()
        train_loss, val_loss = evaluate()
        curves.epochs.append(epoch)
        curves.train_loss.append(train_loss)
        curves.val_loss.append(val_loss)
        if progress is not None:
            progress()
        if not (math.isfinite(train_loss) and math.isfinite(val_loss)) or train_loss > too_large:
            curves.diverged = True
            if progress is not None:
                for _ in range(settings.epochs - epoch):
                    progress()
            break
    return curves


def train_text(data: TextData, spec: OptimizerSpec, lr: float | None, seed: int,
               settings: TrainSettings, progress: Progress | None = None,
               keep_rates: bool = False) -> RunOutcome:
    """Train the sparse linear text classifier; metric: accuracy (validation and test)."""
    start = time.perf_counter()
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = SparseLinearText(len(data.vocab), len(data.classes), sparse=spec.sparse)
    optimizer = spec.build(model.parameters(), lr)
    tracer = _Tracer(optimizer, [model.words.weight], enabled=keep_rates,
                     check_monotone=spec.role == ADAGRAD)
    full = {name: bags(split, np.arange(len(split)))
            for name, split in (("train", data.train), ("val", data.val), ("test", data.test))}
    labels = torch.from_numpy(data.train.labels)

    averager = _averager(spec, model)
    scored = averager.averaged_model if averager is not None else model

    def batch_loss(rows: np.ndarray) -> torch.Tensor:
        return nn.functional.cross_entropy(model(*bags(data.train, rows)), labels[rows])

    def evaluate() -> tuple[float, float]:
        return (_text_eval(scored, data.train, full["train"])[0],
                _text_eval(scored, data.val, full["val"])[0])

    curves = _fit(optimizer, spec, settings, len(data.train), np.random.default_rng(seed),
                  batch_loss, evaluate, tracer, progress, averager=averager)
    diverged = curves.diverged
    if diverged:
        val_acc = test_acc = float("nan")
    else:
        _, val_acc = _text_eval(scored, data.val, full["val"])
        _, test_acc = _text_eval(scored, data.test, full["test"])
    word_rate = coordinate_rate = None
    if keep_rates and not diverged:
        eff = effective_lr(optimizer, model.words.weight)
        if eff is not None:
            word_rate = eff.rate.mean(dim=1).numpy()
            coordinate_rate = eff.rate[eff.active].numpy()
    return RunOutcome(spec.key, lr, seed, curves.epochs, curves.train_loss, curves.val_loss,
                      val_acc, test_acc, diverged, time.perf_counter() - start, tracer.trace,
                      word_rate, coordinate_rate)


# --- dense tabular data ---------------------------------------------------------------------

def _tabular_eval(model: TabularNet, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Loss and metric: MSE and RMSE (standardised units) or cross-entropy and accuracy."""
    with torch.no_grad():
        out = model(x)
        if model.outputs == 1:
            mse = nn.functional.mse_loss(out, y).item()
            return mse, math.sqrt(mse)
        return (nn.functional.cross_entropy(out, y).item(),
                (out.argmax(1) == y).double().mean().item())


def train_tabular(data: TabularData, spec: OptimizerSpec, lr: float | None, seed: int,
                  settings: TrainSettings, progress: Progress | None = None,
                  keep_rates: bool = False) -> RunOutcome:
    """Train the house-price example's small network: MSE on the standardised target (metric:
    RMSE in the target's unit) or cross-entropy over the classes (metric: accuracy)."""
    start = time.perf_counter()
    regression = data.task == REGRESSION
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = TabularNet(data.x_train.shape[1], 1 if regression else len(data.classes))
    optimizer = spec.build(model.parameters(), lr)
    params = list(model.parameters())
    tracer = _Tracer(optimizer, params, enabled=keep_rates, check_monotone=spec.role == ADAGRAD)
    xt, yt = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    xv, yv = torch.from_numpy(data.x_val), torch.from_numpy(data.y_val)
    xs, ys = torch.from_numpy(data.x_test), torch.from_numpy(data.y_test)
    loss_fn = nn.functional.mse_loss if regression else nn.functional.cross_entropy

    averager = _averager(spec, model)
    scored = averager.averaged_model if averager is not None else model

    def batch_loss(rows: np.ndarray) -> torch.Tensor:
        rows = torch.from_numpy(rows)
        return loss_fn(model(xt[rows]), yt[rows])

    curves = _fit(optimizer, spec, settings, len(yt), np.random.default_rng(seed), batch_loss,
                  lambda: (_tabular_eval(scored, xt, yt)[0], _tabular_eval(scored, xv, yv)[0]),
                  tracer, progress, too_large=1e6, averager=averager)
    diverged = curves.diverged
    scale = data.y_std if regression else 1.0
    if diverged:
        val_metric = test_metric = float("nan")
    else:
        val_metric = _tabular_eval(scored, xv, yv)[1] * scale
        test_metric = _tabular_eval(scored, xs, ys)[1] * scale
    coordinate_rate = None
    if keep_rates and not diverged:
        eff = [effective_lr(optimizer, p) for p in params]
        if all(e is not None for e in eff):
            coordinate_rate = torch.cat([e.rate[e.active] for e in eff]).numpy()  # type: ignore[union-attr]
    return RunOutcome(spec.key, lr, seed, curves.epochs, curves.train_loss, curves.val_loss,
                      val_metric, test_metric, diverged, time.perf_counter() - start, tracer.trace,
                      None, coordinate_rate)


def train(data: TextData | TabularData, spec: OptimizerSpec, lr: float | None, seed: int,
          settings: TrainSettings, progress: Progress | None = None,
          keep_rates: bool = False) -> RunOutcome:
    """Dispatch to the text or the tabular trainer."""
    if isinstance(data, TextData):
        return train_text(data, spec, lr, seed, settings, progress, keep_rates)
    return train_tabular(data, spec, lr, seed, settings, progress, keep_rates)
