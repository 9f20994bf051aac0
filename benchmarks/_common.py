"""Shared helpers for the benchmarks: thread setup, alternating timing, tables, JSON.

Not part of the package or the test suite. Every speed is reported as a ratio against an
anchor timed in the same process, alternating candidates round by round, medians of
>= 10 repetitions after warm-up (the machines are shared and noisy).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def set_threads(n: int, wait_policy: str = "passive") -> None:
    """Pin torch, OpenMP and numba to ``n`` threads. Call before torch/numba are imported.

    ``wait_policy`` sets OMP_WAIT_POLICY ("passive", "active", or "default" to leave it
    unset). On a shared, oversubscribed machine the default (spinning) policy makes every
    small parallel torch op wait for a descheduled OpenMP worker: measured here, four ops on
    65k int64 ids took 64 ms with 2 threads (0.2 ms with 1 thread, 0.35 ms with PASSIVE),
    which would make any candidate with many small ops (torch.optim.Adagrad's sparse path)
    look far slower than it is. PASSIVE is therefore the benchmarks' default.
    """
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = str(n)
    if wait_policy != "default":
        os.environ["OMP_WAIT_POLICY"] = wait_policy.upper()
    import torch

    torch.set_num_threads(n)


def add_thread_args(parser) -> None:
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--omp-wait-policy", choices=("passive", "active", "default"),
                        default="passive", help="OMP_WAIT_POLICY (see _common.set_threads)")


def machine_info(threads: int) -> dict:
    import numpy
    import torch

    info = {
        "date": _dt.datetime.now().isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu_name(),
        "logical_cpus": os.cpu_count(),
        "threads": threads,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset)"),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
    }
    try:
        import numba

        info["numba"] = numba.__version__
    except ImportError:
        pass
    try:
        import importlib.metadata as md

        info["fbgemm_gpu_cpu"] = md.version("fbgemm-gpu-cpu")
    except Exception:
        pass
    try:
        import adagrad

        info["adagrad"] = getattr(adagrad, "__version__", "?")
    except Exception:
        pass
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def time_alternating(
    candidates: dict[str, Callable[[int], None]],
    reps: int,
    warmup: int,
    log: bool = True,
) -> dict[str, list[float]]:
    """Time each candidate ``reps`` times, alternating; returns seconds per call.

    ``candidates[name](i)`` runs one repetition with index ``i`` (the candidate chooses its
    batch from ``i`` so every candidate sees the same sequence of batches). Warm-up calls
    (negative indices are not used: warm-up reuses indices 0..warmup-1) are not recorded.
    The order of candidates is shuffled every round (seeded, so a run can be repeated), so
    that no candidate always runs right after the same neighbour (a rotation would keep
    each one's predecessor: a candidate that leaves the caches or the memory allocator in a
    bad state would always slow the same next one).
    """
    names = list(candidates)
    shuffle = random.Random(0).shuffle
    for w in range(warmup):
        for name in names:
            candidates[name](w)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(reps):
        order = list(names)
        shuffle(order)
        for name in order:
            t0 = time.perf_counter()
            candidates[name](r)
            times[name].append(time.perf_counter() - t0)
        if log:
            print(f"  round {r + 1}/{reps}: "
                  + ", ".join(f"{n}={times[n][-1] * 1e3:.1f}" for n in names),
                  file=sys.stderr, flush=True)
    return times


def median_ms(ts: list[float]) -> float:
    return statistics.median(ts) * 1e3


def paired_ratio(num: list[float], den: list[float]) -> float:
    """Median over rounds of num[i]/den[i]: robust to slow drifts of machine load."""
    return statistics.median(a / b for a, b in zip(num, den))


def format_table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in rows]
    return "\n".join([line, sep, *body])


def write_json(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    return path


def state_bytes(optimizer) -> int:
    """Bytes held by an optimizer's per-parameter state tensors."""
    import torch

    total = 0
    for st in optimizer.state.values():
        for v in st.values():
            if isinstance(v, torch.Tensor):
                total += v.numel() * v.element_size()
    return total
