"""Dense step (shared/BENCHMARKS.md, issue 2, item 7).

Ten float32 tensors of 1,000,000 elements with dense gradients (set once beforehand); only
``optimizer.step()`` is timed. Anchor: ``torch.optim.Adagrad(fused=True)``. Rows:

  torch-fused      anchor, torch.optim.Adagrad(fused=True)
  torch-foreach    torch.optim.Adagrad(foreach=True), context
  torch-default    torch.optim.Adagrad() (single-tensor path on CPU), context
  ours             adagrad.Adagrad() default, target: speed vs fused >= 0.95
  ours-eps-inside  eps_placement="inside"                       } each within 1.25x of
  ours-decoupled   decoupled_weight_decay=True, weight_decay=0.01} torch fused
  ours-rho0.9      accumulator_decay=0.9                          } (speed >= 0.80)
  torch-fused-bf16 torch fused on bf16 parameters, context (its bf16 `sum` stalls at 256)
  ours-bf16        bf16 parameters, float32 state (our default for bf16), within 1.25x of
                   torch fused as BENCHMARKS.md asks; it moves 14 B/element against the
                   float32 anchor's 20 and torch-fused-bf16's 10

Candidates alternate round by round; medians of --reps after --warmup.

    bash benchmarks/setup_env.sh && .venv-bench/bin/python benchmarks/dense_step.py

(also runs in the project's .venv: it needs no FBGEMM).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    add_thread_args,
    format_table,
    machine_info,
    median_ms,
    paired_ratio,
    set_threads,
    state_bytes,
    time_alternating,
    write_json,
)

LR = 0.01


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Dense Adagrad step benchmark")
    p.add_argument("--tensors", type=int, default=10)
    p.add_argument("--numel", type=int, default=1_000_000)
    p.add_argument("--reps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    add_thread_args(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-single-tensor", action="store_true",
                   help="skip torch's slow single-tensor path (context only)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", default="dense_step", help="results/NAME.json ('' = none)")
    a = p.parse_args(argv)
    if a.quick:
        a.numel, a.reps, a.warmup = 100_000, 10, 2
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    set_threads(a.threads, a.omp_wait_policy)
    import torch

    gen = torch.Generator().manual_seed(a.seed)
    base_p = [torch.randn(a.numel, generator=gen) for _ in range(a.tensors)]
    base_g = [torch.randn(a.numel, generator=gen) for _ in range(a.tensors)]

    def params(dtype=torch.float32):
        ps = []
        for p0, g0 in zip(base_p, base_g):
            p = p0.to(dtype).clone().requires_grad_(True)
            p.grad = g0.to(dtype).clone()
            ps.append(p)
        return ps

    try:
        import adagrad

        Ours, ours_err = adagrad.Adagrad, None
    except Exception as exc:
        Ours, ours_err = None, f"{type(exc).__name__}: {exc}"
        print(f"note: ours not benchmarked: {ours_err}", file=sys.stderr)

    # name -> (optimizer factory, anchor name, target speed ratio or None, description)
    specs = {
        "torch-fused": (lambda: torch.optim.Adagrad(params(), lr=LR, fused=True),
                        None, None, "torch.optim.Adagrad(fused=True), anchor"),
        "torch-foreach": (lambda: torch.optim.Adagrad(params(), lr=LR, foreach=True),
                          "torch-fused", None, "torch.optim.Adagrad(foreach=True)"),
    }
    if not a.no_single_tensor:
        specs["torch-default"] = (lambda: torch.optim.Adagrad(params(), lr=LR),
                                  "torch-fused", None,
                                  "torch.optim.Adagrad() (single-tensor on CPU)")
    if Ours is not None:
        specs.update({
            "ours": (lambda: Ours(params(), lr=LR), "torch-fused", 0.95,
                     "adagrad.Adagrad() default"),
            "ours-eps-inside": (lambda: Ours(params(), lr=LR, eps_placement="inside"),
                                "torch-fused", 0.8, 'eps_placement="inside"'),
            "ours-decoupled": (lambda: Ours(params(), lr=LR, weight_decay=0.01,
                                            decoupled_weight_decay=True),
                               "torch-fused", 0.8, "decoupled_weight_decay, wd=0.01"),
            "ours-rho0.9": (lambda: Ours(params(), lr=LR, accumulator_decay=0.9),
                            "torch-fused", 0.8, "accumulator_decay=0.9"),
        })
    specs["torch-fused-bf16"] = (
        lambda: torch.optim.Adagrad(params(torch.bfloat16), lr=LR, fused=True),
        "torch-fused", None, "torch fused, bf16 params (bf16 state), context")
    if Ours is not None:
        specs["ours-bf16"] = (lambda: Ours(params(torch.bfloat16), lr=LR),
                              "torch-fused", 0.8, "bf16 params, float32 state")

    opts, errors = {}, {}
    for name, (make, *_rest) in specs.items():
        try:
            opts[name] = make()
        except Exception as exc:
            errors[name] = f"{type(exc).__name__}: {exc}"
            print(f"note: {name} unavailable: {errors[name]}", file=sys.stderr)
    for name, opt in opts.items():  # one step so lazily created state exists (and JIT warms)
        try:
            opt.step()
        except Exception as exc:
            errors[name] = f"{type(exc).__name__}: {exc}"
            print(f"note: {name} failed: {errors[name]}", file=sys.stderr)
    opts = {n: o for n, o in opts.items() if n not in errors}

    info = machine_info(a.threads)
    n_el = a.tensors * a.numel
    print(f"# Dense step: {a.tensors} tensors x {a.numel:,} elements, only step() timed; "
          f"{a.threads} threads (OMP_WAIT_POLICY={info['omp_wait_policy']}); medians of "
          f"{a.reps} reps after {a.warmup} warm-up, alternating")
    print(f"# {info['date']}  {info['cpu']}  torch {info['torch']}  numba {info.get('numba', '-')}")
    times = time_alternating({n: (lambda i, o=o: o.step()) for n, o in opts.items()},
                             a.reps, a.warmup)
    med = {n: median_ms(t) for n, t in times.items()}

    rows, res_rows = [], {}
    for name, opt in opts.items():
        _, anchor, target, desc = specs[name]
        anchor = anchor or name
        speed = med[anchor] / med[name]
        paired = paired_ratio(times[anchor], times[name])
        hits = (speed >= (target or 0)) + (paired >= (target or 0))
        verdict = "" if target is None else ("MISS", "borderline", "PASS")[hits]
        nbytes = state_bytes(opt) / n_el
        rows.append([name, desc, f"{med[name]:.2f}", f"{n_el / med[name] / 1e6:.2f}",
                     anchor if anchor != name else "-", f"{speed:.2f}", f"{paired:.2f}",
                     "-" if target is None else f">= {target:.2f} {verdict}", f"{nbytes:.2f}"])
        res_rows[name] = {"description": desc, "median_ms": med[name], "anchor": anchor,
                          "speed_vs_anchor": speed, "paired_speed_vs_anchor": paired,
                          "target": target, "verdict": verdict, "state_bytes_per_param": nbytes,
                          "times_s": times[name]}
    print()
    print(format_table(["name", "what", "ms", "G el/s", "anchor", "anchor/x (speed)",
                        "paired", "target", "state B/param"], rows))
    print("\nspeed = anchor median / candidate median (>1 = faster than the anchor); "
          "'paired' = median over rounds of the same ratio; >= 0.80 means within 1.25x; "
          "PASS needs both estimates to meet the target, 'borderline' one.")
    if errors:
        print("unavailable: " + "; ".join(f"{k}: {v}" for k, v in errors.items()))
    if a.json:
        path = write_json(a.json, {"config": vars(a), "machine": info, "rows": res_rows,
                                   "errors": errors})
        print(f"(results written to {os.path.relpath(path)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
