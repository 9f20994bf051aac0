"""
Distributed training, killed and resumed
========================================

A sparse embedding model trained data-parallel with adagrad.Adagrad, checkpointed with
torch.distributed.checkpoint, killed and resumed::

    torchrun --nproc-per-node 2 examples/distributed_embedding.py --kill-at 30
    torchrun --nproc-per-node 2 examples/distributed_embedding.py      # resumes at 30

The model is a fused `adagrad.nn.EmbeddingBag` (the optimizer's update runs inside
backward; with ``process_group`` every rank applies the global batch's update) and two
dense layers under `DistributedDataParallel`. Every ``--checkpoint-every`` steps all ranks
write a DCP checkpoint (`adagrad.distributed.save_checkpoint`: one shard file per rank, in
a temporary directory renamed once complete); on start the latest complete one is loaded
(`load_checkpoint`). ``--kill-at K`` makes every rank exit abruptly after step K, as a
killed job would. Batches are a function of the step alone, so the resumed run reproduces
the uninterrupted one: the final line's checksum is the same either way (run once with
``--fresh`` and no ``--kill-at`` to compare). CPU and gloo; the same code runs on GPUs
with ``--backend nccl``.
"""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import adagrad
import adagrad.nn
from adagrad.distributed import ignore_fused_tables, load_checkpoint, save_checkpoint

ROWS, DIM, BAGS, IDS_PER_BAG = 100_000, 32, 512, 8


class ClickModel(nn.Module):
    """Mean of a sample's item embeddings, then an MLP to a click logit."""

    def __init__(self) -> None:
        super().__init__()
        self.items = adagrad.nn.EmbeddingBag(ROWS, DIM, mode="mean")
        self.mlp = nn.Sequential(nn.Linear(DIM, 64), nn.ReLU(), nn.Linear(64, 1))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.items(ids)).squeeze(1)


def batch(step: int, rank: int, world: int) -> tuple[torch.Tensor, torch.Tensor]:
    """This rank's share of the global batch of ``step`` (Zipf-like ids, a click that
    depends on them)."""
    generator = torch.Generator().manual_seed(step)
    ids = (torch.rand(BAGS * world, IDS_PER_BAG, generator=generator) ** 3 * ROWS).long()
    clicked = ((ids % 7 == 0).float().mean(1) > 0.1).float()
    return ids[rank * BAGS:(rank + 1) * BAGS], clicked[rank * BAGS:(rank + 1) * BAGS]


def latest_checkpoint(directory: Path) -> tuple[int, Path | None]:
    steps = [int(p.name.split("-")[1]) for p in directory.glob("step-*") if p.is_dir()]
    return (max(steps), directory / f"step-{max(steps)}") if steps else (0, None)


def save(directory: Path, step: int, model: nn.Module, optimizer: adagrad.Adagrad) -> None:
    """All ranks write into a temporary directory, which rank 0 renames once all are done,
    so a kill mid-write leaves no checkpoint that looks complete."""
    partial = directory / f"partial-{step}"
    save_checkpoint(str(partial), model, optimizer)
    dist.barrier()
    if dist.get_rank() == 0:
        partial.rename(directory / f"step-{step}")
    dist.barrier()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--checkpoint-every", type=int, default=10)
    parser.add_argument("--checkpoint-dir", type=Path, default=Path("distributed-checkpoints"))
    parser.add_argument("--kill-at", type=int, default=None)
    parser.add_argument("--fresh", action="store_true", help="delete old checkpoints first")
    parser.add_argument("--backend", default="gloo")
    args = parser.parse_args()

    dist.init_process_group(args.backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    if args.fresh and rank == 0:
        shutil.rmtree(args.checkpoint_dir, ignore_errors=True)
    dist.barrier()
    args.checkpoint_dir.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(0)  # the same initial model everywhere (DDP also broadcasts it)
    net = ClickModel()
    optimizer = adagrad.Adagrad(net.parameters(), lr=0.05)
    net.items.update_in_backward(optimizer, process_group=dist.group.WORLD)
    ignore_fused_tables(net)  # the table averages its own gradients
    model = DistributedDataParallel(net)

    start, path = latest_checkpoint(args.checkpoint_dir)
    if path is not None:
        load_checkpoint(str(path), net, optimizer)
        if rank == 0:
            print(f"resumed from {path} at step {start}")

    for step in range(start, args.steps):
        ids, clicked = batch(step, rank, world)
        optimizer.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(model(ids), clicked)
        loss.backward()  # the table is updated here
        optimizer.step()  # the dense layers
        done = step + 1
        if rank == 0 and done % 10 == 0:
            print(f"step {done}: loss {loss.item():.4f}")
        if done % args.checkpoint_every == 0:
            save(args.checkpoint_dir, done, net, optimizer)
        if args.kill_at is not None and done == args.kill_at:
            print(f"rank {rank}: killed after step {done}", flush=True)
            os._exit(1)

    checksum = sum(float(p.detach().double().sum()) for p in net.parameters())
    if rank == 0:
        print(f"finished {args.steps} steps on {world} ranks; parameter checksum {checksum!r}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
