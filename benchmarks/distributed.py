"""Data-parallel training steps per second on 1 and 2 processes (issue 12).

A bag table V x D (default 500,000 x 64, mean pooling) and a dense head (D -> 64 -> 1),
B bags x L ids per rank (default 2,048 x 8, Zipf-like ids), one full step (forward,
backward, update) timed for:

  torch  DistributedDataParallel over nn.EmbeddingBag(sparse=True) and the head,
         torch.optim.Adagrad (DDP all-reduces the sparse gradient)
  ours   adagrad.nn.EmbeddingBag updated inside backward with
         process_group=WORLD (ids and output gradients all-gathered, the union of rows
         updated once), the head under DDP, adagrad.Adagrad

Each rank runs one thread (gloo on loopback); with 2 processes each takes B bags, so a
step processes twice the samples. Candidates alternate round by round in the same
processes; medians of --reps rounds of --steps steps after warm-up; the anchor is torch
at the same world size. On a 2-core machine 2 processes have one core each and share it
with anything else running: read the 2-process figures as what the collectives cost, not
as a scaling curve.

    python benchmarks/distributed.py [--quick] [--json NAME]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import set_threads  # noqa: E402

set_threads(1)

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402

import adagrad  # noqa: E402
import adagrad.nn  # noqa: E402
from adagrad.distributed import ignore_fused_tables  # noqa: E402

CANDIDATES = ("torch", "ours")


class Net(nn.Module):
    def __init__(self, table: nn.Module, dim: int) -> None:
        super().__init__()
        self.table = table
        self.head = nn.Sequential(nn.Linear(dim, 64), nn.ReLU(), nn.Linear(64, 1))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.table(ids)).squeeze(1)


def build(kind: str, rows: int, dim: int) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    if kind == "torch":
        net = Net(nn.EmbeddingBag(rows, dim, mode="mean", sparse=True), dim)
        return DistributedDataParallel(net), torch.optim.Adagrad(net.parameters(), lr=0.05)
    net = Net(adagrad.nn.EmbeddingBag(rows, dim, mode="mean"), dim)
    optimizer = adagrad.Adagrad(net.parameters(), lr=0.05)
    net.table.update_in_backward(optimizer, process_group=dist.group.WORLD)
    ignore_fused_tables(net)
    return DistributedDataParallel(net), optimizer


def batches(args: argparse.Namespace, rank: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(rank)
    return [((torch.rand(args.bags, args.ids_per_bag, generator=generator) ** 3
              * args.rows).long(), torch.rand(args.bags, generator=generator))
            for _ in range(8)]


def step(model: nn.Module, optimizer: torch.optim.Optimizer, ids: torch.Tensor,
         target: torch.Tensor) -> None:
    optimizer.zero_grad()
    nn.functional.mse_loss(model(ids), target).backward()
    optimizer.step()


def rank_main(rank: int, world: int, port: int, args: argparse.Namespace, out: str) -> None:
    """One rank: build both candidates, alternate them round by round; rank 0 writes the
    median seconds per step of each to ``out``."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    runs = {kind: build(kind, args.rows, args.dim) for kind in CANDIDATES}
    data = batches(args, rank)
    times: dict[str, list[float]] = {kind: [] for kind in CANDIDATES}
    for round_ in range(args.warmup + args.reps):
        for kind, (model, optimizer) in runs.items():
            dist.barrier()
            start = time.perf_counter()
            for i in range(args.steps):
                step(model, optimizer, *data[(round_ * args.steps + i) % len(data)])
            dist.barrier()
            if round_ >= args.warmup:
                times[kind].append((time.perf_counter() - start) / args.steps)
    if rank == 0:
        Path(out).write_text(json.dumps({k: statistics.median(t) for k, t in times.items()}))
    dist.destroy_process_group()


def measure(world: int, args: argparse.Namespace) -> dict[str, float]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        out = f"{tmp}/seconds.json"
        mp.spawn(rank_main, args=(world, port, args, out), nprocs=world)
        return json.loads(Path(out).read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--bags", type=int, default=2048)
    parser.add_argument("--ids-per-bag", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5, help="steps per timed round")
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", default="distributed", help="results/NAME.json ('' for none)")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.bags, args.reps, args.warmup, args.steps = 20_000, 256, 3, 1, 2
    results = {}
    print(f"table {args.rows:,} x {args.dim}, {args.bags} bags x {args.ids_per_bag} ids per "
          f"rank, 1 thread per rank, {os.cpu_count()} logical CPUs")
    print(f"{'processes':>9} {'candidate':>9} {'steps/s':>8} {'samples/s':>10} {'vs torch':>8}")
    for world in (1, 2):
        seconds = measure(world, args)
        for kind in CANDIDATES:
            ratio = seconds["torch"] / seconds[kind]
            print(f"{world:>9} {kind:>9} {1 / seconds[kind]:>8.1f} "
                  f"{world * args.bags / seconds[kind]:>10.0f} {ratio:>8.2f}")
        results[world] = seconds
    if args.json:
        from _common import RESULTS, machine_info

        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"{args.json}.json").write_text(json.dumps(
            {"machine": machine_info(1), "args": vars(args),
             "seconds_per_step": results}, indent=2))


if __name__ == "__main__":
    main()
