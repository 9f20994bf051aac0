"""What the first `step()` of each member costs in a fresh process: cold (an empty numba
cache: every kernel the step runs is compiled) and warm (the cache filled by the cold run).

    python benchmarks/cold_start.py                     # every member, dense and sparse
    python benchmarks/cold_start.py --members Adagrad FTRL --reps 3

For each member and gradient kind, one child process per measurement, with
``NUMBA_CACHE_DIR`` pointing to a folder of its own (empty for the cold run, then reused for
the warm runs): it imports torch and adagrad, builds the model (dense: a 1,000 × 64 fp32
parameter; sparse: ``nn.Embedding(1000, 64, sparse=True)`` looked up with 256 ids;
FullMatrixAdagrad with ``block_size=64``), and
times the first ``step()`` (wall and CPU time: on a shared machine the CPU time, all
threads, is the figure to read) and then the second (the steady state). The import time
and the CPU time of the whole child (user + sys) are reported with them. Results go to
``benchmarks/results/cold_start.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS  # noqa: E402

MEMBERS = ("Adagrad", "RowWiseAdagrad", "ProximalAdagrad", "AdagradDA", "FTRL", "AdagradNorm",
           "FullMatrixAdagrad", "DoGAdagrad")
KINDS = ("dense", "sparse")

CHILD = r"""
import sys, time, json
start = time.perf_counter()
import torch
import adagrad
imported = time.perf_counter() - start
torch.manual_seed(0)
name, kind = sys.argv[1], sys.argv[2]
if kind == "dense":
    weight = torch.nn.Parameter(torch.randn(1000, 64))
    loss_of = lambda: (weight * weight).sum()
    params = [weight]
else:
    table = torch.nn.Embedding(1000, 64, sparse=True)
    ids = torch.randint(0, 1000, (256,))
    loss_of = lambda: table(ids).pow(2).sum()
    params = list(table.parameters())
try:
    options = {"block_size": 64} if name == "FullMatrixAdagrad" else {}  # 64x64 blocks
    optimizer = getattr(adagrad, name)(params, lr=0.01, **options)
except AttributeError:
    print(json.dumps({"error": f"adagrad has no {name}"}))
    sys.exit(0)
times, cpu = [], []
for _ in range(2):
    optimizer.zero_grad()
    loss_of().backward()
    start, start_cpu = time.perf_counter(), time.process_time()
    try:
        optimizer.step()
    except RuntimeError as exc:
        print(json.dumps({"error": str(exc).splitlines()[0][:120]}))
        sys.exit(0)
    times.append(time.perf_counter() - start)
    cpu.append(time.process_time() - start_cpu)
print(json.dumps({"import_s": imported, "first_step_s": times[0], "second_step_s": times[1],
                  "first_step_cpu_s": cpu[0]}))
"""


def child(name: str, kind: str, cache: str) -> dict:
    env = {**os.environ, "NUMBA_CACHE_DIR": cache}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHILD, name, kind], env=env, capture_output=True,
                          text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1][:160]}
    result = json.loads(done.stdout.strip().splitlines()[-1])
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return {**result, "process_wall_s": wall, "process_cpu_s": cpu}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--members", nargs="+", default=list(MEMBERS))
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--reps", type=int, default=1, help="warm runs after the cold one")
    parser.add_argument("--json", default="cold_start")
    args = parser.parse_args()
    rows = []
    print("| member | gradient | first step cold: wall s / CPU s | first step warm: wall s / "
          "CPU s | steady step ms | process cold: wall s / CPU s | import s |")
    print("|---|---|---|---|---|---|---|")
    for name in args.members:
        for kind in args.kinds:
            with tempfile.TemporaryDirectory(prefix="numba-cold-") as cache:
                cold = child(name, kind, cache)
                warm = [child(name, kind, cache) for _ in range(args.reps)]
            row = {"member": name, "gradient": kind, "cold": cold, "warm": warm}
            rows.append(row)
            if "error" in cold:
                print(f"| {name} | {kind} | {cold['error']} | | | | |", flush=True)
                continue
            warm_wall = statistics.median(w["first_step_s"] for w in warm) if warm else float("nan")
            warm_cpu = (statistics.median(w["first_step_cpu_s"] for w in warm) if warm
                        else float("nan"))
            print(f"| {name} | {kind} | {cold['first_step_s']:.2f} / {cold['first_step_cpu_s']:.2f} | "
                  f"{warm_wall:.3f} / {warm_cpu:.3f} | "
                  f"{cold['second_step_s'] * 1e3:.2f} | {cold['process_wall_s']:.1f} / "
                  f"{cold['process_cpu_s']:.1f} | {cold['import_s']:.2f} |", flush=True)
    if args.json:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"{args.json}.json").write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
