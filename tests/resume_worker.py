"""Checkpoint-and-resume runs for tests/test_resume.py, shared by the test process and
the fresh process that resumes the checkpoints.

Importable without pytest (``from resume_worker import ...``) and runnable as a script::

    python tests/resume_worker.py MANIFEST.json

The manifest lists jobs ``{"config": name, "checkpoint": path or null, "start": k,
"output": path}``: each job builds the configuration's model and optimizer exactly as the
test process does, loads the checkpoint (a ``{"model", "optimizer"}`` dict written with
`torch.save`) if there is one, trains steps ``start .. steps-1`` and saves `capture()` of
the result to ``output``. ``adagrad`` is imported as installed (no path manipulation).
Both processes run torch on one thread (`ONE_THREAD`): the same arithmetic on both sides,
and on a busy 2-core machine tiny ops are ~10x faster than with a second OpenMP thread.

Every batch is a deterministic function of the step index (its own seeded generator) and
the loss goes through the model, so gradients depend on the parameters: a run that
diverges anywhere stays diverged.
"""

from __future__ import annotations

import io
import json
import sys
import warnings
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

import adagrad.nn
from adagrad import Adagrad

warnings.filterwarnings("ignore", message="Sparse invariant checks")

BAGS, IDS_PER_BAG, SEQ = 16, 4, 3   # per step: 16 bags of 4 ids; Embedding: 16 × 3 ids
ONE_THREAD = 1                      # torch's intra-op threads in both processes


@dataclass(frozen=True)
class Config:
    """One checkpointed run: a model path, optimizer options and the run's length."""

    name: str
    path: str                      # "dense", "torch_bag", "fused_bag", "fused_emb"
    options: dict[str, Any] = field(default_factory=dict)
    dtype: torch.dtype = torch.float32
    rows: int = 200
    dim: int = 8
    steps: int = 12                # N: the uninterrupted run's length
    checkpoint_at: int = 5         # k: steps before the checkpoint
    lr: float = 0.1
    seed: int = 0


_WD = dict(weight_decay=0.05)
_SPARSE_OPTIONS = {
    "plain": {},
    "lazy_wd": dict(_WD, sparse_weight_decay="lazy"),
    "touched_wd": dict(_WD, sparse_weight_decay="touched"),
    "rho0.95": dict(accumulator_decay=0.95),
    "lr_decay": dict(lr_decay=0.1),
    "lazy_wd+rho+lr_decay": dict(_WD, sparse_weight_decay="lazy", accumulator_decay=0.95,
                                 lr_decay=0.1),
    "touched_wd+rho": dict(_WD, sparse_weight_decay="touched", accumulator_decay=0.95),
}
_DENSE_OPTIONS = {
    "plain": {},
    "l2_wd": dict(_WD),
    "decoupled_wd": dict(_WD, decoupled_weight_decay=True),
    "rho0.95": dict(accumulator_decay=0.95),
    "lr_decay": dict(lr_decay=0.1),
    "wd+rho+lr_decay": dict(_WD, accumulator_decay=0.95, lr_decay=0.1),
}


def _configs() -> dict[str, Config]:
    out: list[Config] = []
    for option, kwargs in _DENSE_OPTIONS.items():
        out.append(Config(f"dense-{option}", "dense", kwargs))
    out.append(Config("dense-bf16", "dense", {}, torch.bfloat16))
    out.append(Config("dense-bf16+wd+rho", "dense", dict(_WD, accumulator_decay=0.95),
                      torch.bfloat16))
    for path in ("torch_bag", "fused_bag", "fused_emb"):
        for option, kwargs in _SPARSE_OPTIONS.items():
            out.append(Config(f"{path}-{option}", path, kwargs))
        out.append(Config(f"{path}-bf16", path, {}, torch.bfloat16))
        out.append(Config(f"{path}-bf16+lazy_wd+rho", path,
                          dict(_WD, sparse_weight_decay="lazy", accumulator_decay=0.95),
                          torch.bfloat16))
        out.append(Config(f"{path}-bf16+touched_wd", path,
                          dict(_WD, sparse_weight_decay="touched"), torch.bfloat16))
    # The measured configuration of the issue (fault 6): 500 × 6 sum bags under a Linear,
    # lazy decay 0.01, ρ = 0.95, lr 0.05, 20 steps, the checkpoint at step 9.
    issue = dict(weight_decay=0.01, sparse_weight_decay="lazy", accumulator_decay=0.95)
    for path in ("torch_bag", "fused_bag"):
        out.append(Config(f"issue-{path}-500x6-lazy-rho0.95", path, issue, rows=500, dim=6,
                          steps=20, checkpoint_at=9, lr=0.05))
    return {c.name: c for c in out}


CONFIGS = _configs()


# -- model, batches, steps -----------------------------------------------------------

class _BagModel(nn.Module):
    def __init__(self, table: nn.EmbeddingBag, head: nn.Linear) -> None:
        super().__init__()
        self.table, self.head = table, head

    def forward(self, ids: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        return self.head(self.table(ids, offsets))


class _SeqModel(nn.Module):
    def __init__(self, table: nn.Embedding, head: nn.Linear) -> None:
        super().__init__()
        self.table, self.head = table, head

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.table(ids).flatten(1))


def build(config: Config) -> tuple[nn.Module, Adagrad]:
    """The configuration's model (seeded initial weights) and its optimizer, fused layers
    already handing their update to it."""
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        if config.path == "dense":
            model = nn.Sequential(nn.Linear(config.dim, 16), nn.Tanh(), nn.Linear(16, 2))
        elif config.path == "torch_bag":
            model = _BagModel(nn.EmbeddingBag(config.rows, config.dim, mode="sum", sparse=True),
                              nn.Linear(config.dim, 2))
        elif config.path == "fused_bag":
            model = _BagModel(adagrad.nn.EmbeddingBag(config.rows, config.dim, mode="sum"),
                              nn.Linear(config.dim, 2))
        elif config.path == "fused_emb":
            model = _SeqModel(adagrad.nn.Embedding(config.rows, config.dim),
                              nn.Linear(SEQ * config.dim, 2))
        else:
            raise ValueError(config.path)
    model = model.to(config.dtype)
    optimizer = Adagrad(model.parameters(), lr=config.lr, **config.options)
    if config.path.startswith("fused"):
        model.table.update_in_backward(optimizer)
    return model, optimizer


def batch(config: Config, step: int) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    """Step ``step``'s inputs and targets: a function of the step index alone."""
    gen = torch.Generator().manual_seed(7919 * (step + 1))
    targets = torch.randn(BAGS, 2, generator=gen).to(config.dtype)
    if config.path == "dense":
        return (torch.randn(BAGS, config.dim, generator=gen).to(config.dtype),), targets
    if config.path == "fused_emb":
        return (torch.randint(0, config.rows, (BAGS, SEQ), generator=gen),), targets
    ids = torch.randint(0, config.rows, (BAGS * IDS_PER_BAG,), generator=gen)
    offsets = torch.arange(0, BAGS * IDS_PER_BAG, IDS_PER_BAG)
    return (ids, offsets), targets


def train_step(config: Config, model: nn.Module, optimizer: Adagrad, step: int) -> None:
    inputs, targets = batch(config, step)
    optimizer.zero_grad()
    loss = nn.functional.mse_loss(model(*inputs), targets)
    loss.backward()
    optimizer.step()


def train(config: Config, model: nn.Module, optimizer: Adagrad, start: int, stop: int) -> None:
    for step in range(start, stop):
        train_step(config, model, optimizer, step)


# -- checkpoints and what a run ends with ---------------------------------------------

def checkpoint(model: nn.Module, optimizer: Adagrad) -> dict[str, Any]:
    """What the user saves: ``{"model": model.state_dict(), "optimizer": ...}``."""
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict()}


def _roundtrip(obj: Any) -> Any:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


def capture(model: nn.Module, optimizer: Adagrad) -> dict[str, Any]:
    """A run's end, detached from the live objects: first its live parameters and optimizer
    state (``optimizer.state`` as it is, before any ``state_dict()``), then the model's and
    optimizer's ``state_dict()``, taken as the user takes a checkpoint."""
    params = list(model.parameters())
    live = {
        "params": {name: p.detach().clone() for name, p in model.named_parameters()},
        "state": {index: {key: (value.clone() if isinstance(value, torch.Tensor) else value)
                          for key, value in optimizer.state[p].items()}
                  for index, p in enumerate(params)},
    }
    live = _roundtrip(live)
    return {"live": live, "state_dict": _roundtrip(checkpoint(model, optimizer))}


def resume(config: Config, checkpoint_path: str | None, start: int) -> dict[str, Any]:
    """Build anew, load the checkpoint (if any), train to the end, capture."""
    model, optimizer = build(config)
    if checkpoint_path is not None:
        saved = torch.load(checkpoint_path, weights_only=False)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
    train(config, model, optimizer, start, config.steps)
    return capture(model, optimizer)


def main(argv: list[str]) -> int:
    torch.set_num_threads(ONE_THREAD)
    with open(argv[1]) as f:
        jobs = json.load(f)
    failures = 0
    for job in jobs:
        try:
            result = resume(CONFIGS[job["config"]], job["checkpoint"], job["start"])
        except Exception as error:  # noqa: BLE001 - reported to the test, per job
            failures += 1
            result = {"error": f"{type(error).__name__}: {error}"}
        torch.save(result, job["output"])
    print(f"resume_worker: {len(jobs)} jobs, {failures} raised")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
