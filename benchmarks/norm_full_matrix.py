"""AdagradNorm and FullMatrixAdagrad steps, as ratios against torch's Adagrad in the same run.

Three tables (only ``step()`` is timed; gradients are set once beforehand):

  dense     ten float32 tensors of 1,000,000 elements. Anchor torch.optim.Adagrad(fused=True).
            Rows: AdagradNorm scope="tensor" / "group" (numba ||g||², addcmul_ update), the
            same with the reduction forced onto the torch-ops path (float64 vector_norm, what
            other devices run), and torch's float32 vector_norm + add_ (context: the
            reduction AdagradNorm does not use, for its accuracy).
  sparse    a 100,000 × 64 float32 table, 16,384 uniform ids a step (COO, uncoalesced).
            Anchor torch.optim.Adagrad's sparse step. Row: AdagradNorm.
  full      one 64 × 64 float32 parameter (d = 4096). Anchor torch.optim.Adagrad(fused=True)
            on it (context only: another method). Rows: FullMatrixAdagrad with
            block_size 1024, 256 and 64, and block 256 with
            precondition_every=10 (one block of 4096 takes ~40 s a step here: not run).

    .venv/bin/python benchmarks/norm_full_matrix.py [--threads 2] [--reps 10] [--quick]
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    add_thread_args,
    format_table,
    machine_info,
    median_ms,
    paired_ratio,
    set_threads,
    time_alternating,
    write_json,
)


def _dense_candidates(torch, adagrad, numel, tensors):
    gen = torch.Generator().manual_seed(0)
    start = [torch.randn(numel, generator=gen) for _ in range(tensors)]
    grads = [torch.randn(numel, generator=gen) for _ in range(tensors)]

    def stepper(make):
        params = [p.clone().requires_grad_() for p in start]
        for p, g in zip(params, grads):
            p.grad = g.clone()
        opt = make(params)
        return lambda i: opt.step()

    def torch_norm(params):
        class Plain:
            def __init__(self):
                self.b2 = [torch.zeros(()) for _ in params]

            def step(self):
                with torch.no_grad():
                    for p, b2 in zip(params, self.b2):
                        b2.add_(torch.linalg.vector_norm(p.grad).square())
                        p.add_(p.grad, alpha=-0.01 / (math.sqrt(b2.item()) + 1e-10))
        return Plain()

    from adagrad.kernels.norm import cpu as norm_cpu

    def forced_torch_ops(params):
        opt = adagrad.AdagradNorm(params, lr=0.01)

        class Forced:
            def step(self):
                with mock.patch.object(norm_cpu, "supports", lambda grad: False):
                    opt.step()
        return Forced()

    return {
        "torch-fused-adagrad": stepper(lambda ps: torch.optim.Adagrad(ps, lr=0.01, fused=True)),
        "norm-tensor": stepper(lambda ps: adagrad.AdagradNorm(ps, lr=0.01)),
        "norm-group": stepper(lambda ps: adagrad.AdagradNorm(ps, lr=0.01, scope="group")),
        "norm-tensor-torch-ops": stepper(forced_torch_ops),
        "torch-f32-vector-norm": stepper(torch_norm),
    }


def _sparse_candidates(torch, adagrad, rows, width, ids, steps):
    gen = torch.Generator().manual_seed(1)
    start = torch.randn(rows, width, generator=gen)
    batches = []
    for _ in range(steps):
        index = torch.randint(0, rows, (1, ids), generator=gen)
        batches.append(torch.sparse_coo_tensor(index, torch.randn(ids, width, generator=gen),
                                               (rows, width)))

    def stepper(make):
        table = start.clone().requires_grad_()
        opt = make([table])

        def step(i):
            table.grad = batches[i % steps]
            opt.step()
        return step

    return {"torch-sparse-adagrad": stepper(lambda ps: torch.optim.Adagrad(ps, lr=0.01)),
            "norm-sparse": stepper(lambda ps: adagrad.AdagradNorm(ps, lr=0.01))}


def _full_candidates(torch, adagrad):
    gen = torch.Generator().manual_seed(2)
    start = torch.randn(64, 64, generator=gen)
    grad = torch.randn(64, 64, generator=gen)

    def stepper(make):
        param = start.clone().requires_grad_()
        param.grad = grad.clone()
        opt = make([param])
        return lambda i: opt.step()

    out = {"torch-fused-adagrad": stepper(lambda ps: torch.optim.Adagrad(ps, lr=0.01, fused=True))}
    for block in (1024, 256, 64):
        out[f"full-block{block}"] = stepper(
            lambda ps, b=block: adagrad.FullMatrixAdagrad(ps, lr=0.01, block_size=b))
    out["full-block256-every10"] = stepper(
        lambda ps: adagrad.FullMatrixAdagrad(ps, lr=0.01, block_size=256, precondition_every=10))
    return out


def _report(title, times, anchor):
    rows = [[name, f"{median_ms(ts):.3f}", f"{paired_ratio(times[anchor], ts):.3f}"]
            for name, ts in times.items()]
    print(f"\n{title} (anchor {anchor}; speed = anchor time / row time, median of rounds)")
    print(format_table(["row", "median ms", "speed vs anchor"], rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_thread_args(parser)
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", default="norm_full_matrix")
    args = parser.parse_args()
    set_threads(args.threads, args.omp_wait_policy)
    import torch

    import adagrad

    numel = 100_000 if args.quick else 1_000_000
    results = {"machine": machine_info(args.threads), "tables": {}}
    for title, candidates, anchor in (
        ("dense", _dense_candidates(torch, adagrad, numel, 10), "torch-fused-adagrad"),
        ("sparse", _sparse_candidates(torch, adagrad, 100_000, 64, 16_384, 8),
         "torch-sparse-adagrad"),
        ("full", _full_candidates(torch, adagrad), "torch-fused-adagrad"),
    ):
        times = time_alternating(candidates, args.reps, args.warmup, log=False)
        _report(title, times, anchor)
        results["tables"][title] = times
    if args.json:
        print(f"\nwrote {write_json(args.json, results)}")


if __name__ == "__main__":
    main()
