"""Memory: optimizer-state bytes per parameter and peak extra RSS during a step.

Each candidate runs in a fresh subprocess (so one candidate's allocator caches cannot hide
another's peak). In the child, the peak resident set size is reset (``echo 5 >
/proc/self/clear_refs``, then ``VmHWM`` from ``/proc/self/status``; where that is not
possible, ``resource.getrusage`` maxrss, which is monotone and only shows a new peak), and

  first  = peak RSS during the first step()  - RSS just before (includes lazily created state)
  steady = peak RSS during the second step() - RSS just before (temporaries only)

State bytes per parameter count the optimizer's state tensors (FBGEMM: its
``split_optimizer_states()``). ``tracemalloc`` is blind to tensors, hence RSS.

Cases:
  dense   10 float32 tensors x 1,000,000 elements (as dense_step.py), dense gradients set
          once; only optimizer.step() inside the measured region
  sparse  1,000,000 x 64 float32 EmbeddingBag(sparse=True), 16,384 bags x 4 uniform ids;
          "step" = optimizer.step() after forward+backward; "train step" = forward +
          backward + step (FBGEMM updates inside backward, so only this one applies to it);
          "ours-rowwise-fused" is adagrad.RowWiseAdagrad in the fused layer: one float32
          accumulator per row, 1/D of Adagrad's state (the "state vs ours" column)
  kernel-threads  our sparse row kernel (adagrad.kernels.sparse_adagrad_) alone on a
          1,000,000 x 16 float32 table with 1,000,000 uniform ids, at 1, 2 and 8 numba
          threads (one child each, ``--threads N`` pins NUMBA_NUM_THREADS in the child
          before numba loads): its scratch memory must not grow with the thread count

    bash benchmarks/setup_env.sh && .venv-bench/bin/python benchmarks/memory.py
    .venv/bin/python benchmarks/memory.py --case kernel-threads   # needs no FBGEMM
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import add_thread_args, format_table, machine_info, set_threads, write_json  # noqa: E402

MiB = 1024 * 1024
DENSE = ["torch-fused", "torch-foreach", "torch-default", "ours", "ours-eps-inside",
         "ours-decoupled", "ours-rho0.9", "torch-fused-bf16", "ours-bf16"]
SPARSE = ["torch", "ours", "ours-lazy", "ours-fused", "ours-rowwise-fused", "fbgemm", "fbgemm-rw",
          "fwd+bwd"]
CASES = {"dense": ("dense",), "sparse": ("sparse",), "kernel-threads": ("kernel-threads",),
         "both": ("dense", "sparse"), "all": ("dense", "sparse", "kernel-threads")}


# ----------------------------------------------------------------------------- RSS probes
def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class Peak:
    """Context manager: bytes of peak RSS above the RSS at entry."""

    def __enter__(self):
        self.exact = _reset_peak() and _status_kib("VmHWM") is not None
        self.rss0 = (_status_kib("VmRSS") or 0) * 1024
        self.maxrss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return self

    def __exit__(self, *exc):
        if self.exact:
            self.extra = max(0, _status_kib("VmHWM") * 1024 - self.rss0)
        else:
            self.extra = max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
                             - self.maxrss0)
        self.rss1 = (_status_kib("VmRSS") or 0) * 1024
        return False


# ----------------------------------------------------------------------------- children
def _state_bytes(opt) -> int:
    from _common import state_bytes

    return state_bytes(opt)


def child_dense(name: str, a) -> dict:
    import torch

    import_ours = name.startswith("ours")
    if import_ours:
        from adagrad import Adagrad as Ours
    bf16 = name.endswith("bf16")
    dtype = torch.bfloat16 if bf16 else torch.float32
    gen = torch.Generator().manual_seed(0)
    params = []
    for _ in range(a.tensors):
        p = torch.randn(a.numel, generator=gen).to(dtype).requires_grad_(True)
        p.grad = torch.randn(a.numel, generator=gen).to(dtype)
        params.append(p)
    lr = 0.01
    make = {
        "torch-fused": lambda: torch.optim.Adagrad(params, lr=lr, fused=True),
        "torch-foreach": lambda: torch.optim.Adagrad(params, lr=lr, foreach=True),
        "torch-default": lambda: torch.optim.Adagrad(params, lr=lr),
        "torch-fused-bf16": lambda: torch.optim.Adagrad(params, lr=lr, fused=True),
        "ours": lambda: Ours(params, lr=lr),
        "ours-eps-inside": lambda: Ours(params, lr=lr, eps_placement="inside"),
        "ours-decoupled": lambda: Ours(params, lr=lr, weight_decay=0.01,
                                       decoupled_weight_decay=True),
        "ours-rho0.9": lambda: Ours(params, lr=lr, accumulator_decay=0.9),
        "ours-bf16": lambda: Ours(params, lr=lr),
    }[name]
    opt = make()
    if import_ours:  # compile the numba kernels outside the measured region
        warm = [torch.zeros(8, dtype=dtype, requires_grad=True)]
        warm[0].grad = torch.ones(8, dtype=dtype)
        kw = {"ours-eps-inside": dict(eps_placement="inside"),
              "ours-decoupled": dict(weight_decay=0.01, decoupled_weight_decay=True),
              "ours-rho0.9": dict(accumulator_decay=0.9)}.get(name, {})
        Ours(warm, lr=lr, **kw).step()
    with Peak() as first:
        opt.step()
    with Peak() as steady:
        opt.step()
    n = a.tensors * a.numel
    return {"state_bytes_per_param": _state_bytes(opt) / n,
            "param_bytes": n * params[0].element_size(),
            "first_extra": first.extra, "steady_extra": steady.extra, "exact": first.exact}


def _updating_backward_peaks(layer, ids, offsets) -> dict:
    """Peak extra memory of two training steps of a layer that updates inside backward."""
    peaks = []
    for i in range(2):
        with Peak() as peak:
            layer(ids[i], offsets).sum().backward()
        peaks.append(peak)
    return {"train_first_extra": peaks[0].extra, "train_steady_extra": peaks[1].extra,
            "exact": peaks[0].exact}


def child_sparse(name: str, a) -> dict:
    import torch

    warnings.filterwarnings("ignore", message="Sparse invariant checks")
    V, D = a.rows, a.dim
    gen = torch.Generator().manual_seed(0)
    n = a.bags * a.ids_per_bag
    ids = [torch.randint(V, (n,), generator=gen) for _ in range(3)]
    offsets = torch.arange(0, n, a.ids_per_bag)
    offsets_full = torch.arange(0, n + 1, a.ids_per_bag)
    res = {"param_bytes": V * D * 4}
    if name.startswith("fbgemm"):
        from sparse_embedding import fbgemm_state_bytes, load_fbgemm

        make_tbe, err = load_fbgemm()
        if make_tbe is None:
            raise RuntimeError(err)
        tbe = make_tbe(V, D, name == "fbgemm-rw", torch.zeros(V, D))
        small = make_tbe(16, D, name == "fbgemm-rw", torch.zeros(16, D))  # warm code paths
        small(torch.tensor([1, 2]), torch.tensor([0, 1, 2])).sum().backward()
        res.update(_updating_backward_peaks(tbe, ids, offsets_full),
                   state_bytes_per_param=fbgemm_state_bytes(tbe) / (V * D))
        return res
    emb = torch.nn.EmbeddingBag(V, D, mode="sum", sparse=True)
    opt = None
    if name in ("ours-fused", "ours-rowwise-fused"):  # the update runs inside backward
        import adagrad.nn

        cls = adagrad.RowWiseAdagrad if name == "ours-rowwise-fused" else adagrad.Adagrad
        emb = adagrad.nn.EmbeddingBag(V, D, mode="sum")
        opt = cls(emb.parameters(), lr=0.01)
        emb.update_in_backward(opt)
        small = adagrad.nn.EmbeddingBag(16, D, mode="sum")  # compile outside the measure
        small.update_in_backward(cls(small.parameters(), lr=0.01))
        small(torch.tensor([1, 2]), torch.tensor([0])).sum().backward()
        res.update(_updating_backward_peaks(emb, ids, offsets),
                   state_bytes_per_param=_state_bytes(opt) / (V * D))
        return res
    if name == "torch":
        opt = torch.optim.Adagrad(emb.parameters(), lr=0.01)
    elif name.startswith("ours"):
        from adagrad import Adagrad as Ours

        kw = dict(weight_decay=0.01, sparse_weight_decay="lazy") if name == "ours-lazy" else {}
        opt = Ours(emb.parameters(), lr=0.01, **kw)
        # compile the kernels on a small table outside the measured region
        e2 = torch.nn.EmbeddingBag(16, D, mode="sum", sparse=True)
        o2 = Ours(e2.parameters(), lr=0.01, **kw)
        e2(torch.tensor([1, 2]), torch.tensor([0])).sum().backward()
        o2.step()
    step_peaks, train_peaks = [], []
    for i in range(2):
        with Peak() as tp:
            if opt is not None:
                opt.zero_grad(set_to_none=True)
            else:
                emb.weight.grad = None
            emb(ids[i], offsets).sum().backward()
            if opt is not None:
                with Peak() as sp:
                    opt.step()
                step_peaks.append(sp)
        train_peaks.append(tp)
    res.update(state_bytes_per_param=(_state_bytes(opt) if opt is not None else 0) / (V * D),
               train_first_extra=train_peaks[0].extra, train_steady_extra=train_peaks[1].extra,
               exact=train_peaks[0].exact)
    if step_peaks:
        res.update(step_first_extra=step_peaks[0].extra, step_steady_extra=step_peaks[1].extra)
    return res


def child_kernel_threads(a) -> dict:
    """Peak extra RSS of our sparse row kernel alone, at the numba thread count that
    ``--threads`` pinned: table, state, ids and gradient all exist before the measure."""
    import numba
    import torch

    from adagrad import kernels
    from adagrad.kernels import RowClocks, StepRule
    from adagrad.kernels.engine.elementwise import PARALLEL_MIN_ELEMENTS

    V, D, n = a.kernel_rows, a.kernel_dim, a.kernel_ids
    gen = torch.Generator().manual_seed(0)
    param, state_sum = torch.randn(V, D, generator=gen), torch.zeros(V, D)
    ids = [torch.randint(V, (n,), generator=gen) for _ in range(2)]
    values = torch.randn(n, D, generator=gen)
    rule = StepRule(lr=0.01, eps=1e-10)
    warm = -(-PARALLEL_MIN_ELEMENTS // D)  # compile the parallel kernel, start the threads
    kernels.sparse_adagrad_(torch.zeros(16, D), torch.zeros(16, D), torch.randint(16, (warm,)),
                            torch.ones(warm, D), rule, RowClocks())
    peaks = []
    for i in range(2):
        with Peak() as peak:
            kernels.sparse_adagrad_(param, state_sum, ids[i], values, rule, RowClocks())
        peaks.append(peak)
    return {"numba_threads": numba.get_num_threads(), "first_extra": peaks[0].extra,
            "steady_extra": peaks[1].extra, "exact": peaks[0].exact}


# ----------------------------------------------------------------------------- driver
def parse_args(argv=None):
    p = argparse.ArgumentParser(description="optimizer memory benchmark")
    p.add_argument("--child", nargs=2, metavar=("CASE", "NAME"), help=argparse.SUPPRESS)
    add_thread_args(p)
    p.add_argument("--tensors", type=int, default=10)
    p.add_argument("--numel", type=int, default=1_000_000)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--bags", type=int, default=16_384)
    p.add_argument("--ids-per-bag", type=int, default=4)
    p.add_argument("--kernel-rows", type=int, default=1_000_000)
    p.add_argument("--kernel-dim", type=int, default=16)
    p.add_argument("--kernel-ids", type=int, default=1_000_000)
    p.add_argument("--kernel-threads", default="1,2,8",
                   help="numba thread counts of the kernel-threads case")
    p.add_argument("--case", choices=tuple(CASES), default="all",
                   help="both = dense + sparse; all = both + kernel-threads")
    p.add_argument("--json", default="memory", help="results/NAME.json ('' = none)")
    return p.parse_args(argv)


def run_child(case: str, name: str, argv: list[str]) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", case, name, *argv]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return {"error": tail}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _state_vs_ours(r: dict, ours: dict | None) -> str:
    """A candidate's state bytes over adagrad.Adagrad's ("ours"): 1/D for row-wise."""
    if not ours or "error" in ours or not ours["state_bytes_per_param"]:
        return "-"
    return f"{r['state_bytes_per_param'] / ours['state_bytes_per_param']:.4f}"


def mib(x) -> str:
    return "-" if x is None else f"{x / MiB:.1f}"


def kernel_threads_table(a, pass_on: list[str]) -> dict:
    """Run the kernel-threads case at each thread count (a child each); print its table."""
    rows, res = [], {}
    for threads in [int(t) for t in a.kernel_threads.split(",")]:
        r = run_child("kernel-threads", str(threads), [*pass_on, "--threads", str(threads)])
        res[threads] = r
        if "error" in r:
            rows.append([str(threads), "-", "-", "-", r["error"][:60]])
            continue
        rows.append([str(threads), str(r["numba_threads"]), mib(r["first_extra"]),
                     mib(r["steady_extra"]), f"{r['steady_extra'] / a.kernel_ids:.1f}"])
    print(f"\n## kernel-threads: adagrad.kernels.sparse_adagrad_ alone, {a.kernel_rows:,} x "
          f"{a.kernel_dim} float32 table, {a.kernel_ids:,} uniform ids (gradient "
          f"{a.kernel_ids * a.kernel_dim * 4 / MiB:.0f} MiB, made before the measure)")
    print(format_table(["threads", "numba threads", "first step extra MiB",
                        "steady step extra MiB", "steady extra B/id"], rows))
    return res


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    a = parse_args(argv)
    if a.child:
        set_threads(a.threads, a.omp_wait_policy)
        case, name = a.child
        child = {"dense": child_dense, "sparse": child_sparse,
                 "kernel-threads": lambda name, a: child_kernel_threads(a)}[case]
        out = child(name, a)
        print(json.dumps(out))
        return 0

    pass_on = [x for x in argv if x not in ("--case", a.case, "--json", a.json)]
    info = machine_info(a.threads)
    results = {"config": vars(a), "machine": info}
    print(f"# Memory: peak extra RSS in a fresh process per candidate; {info['date']}, "
          f"torch {info['torch']}")
    if "dense" in CASES[a.case]:
        rows, res = [], {}
        for name in DENSE:
            r = run_child("dense", name, pass_on)
            res[name] = r
            if "error" in r:
                rows.append([name, "-", "-", "-", r["error"][:60]])
                continue
            rows.append([name, f"{r['state_bytes_per_param']:.2f}", mib(r["first_extra"]),
                         mib(r["steady_extra"]),
                         f"{r['steady_extra'] / (a.numel * 4):.2f}"])
        print(f"\n## dense: {a.tensors} x {a.numel:,} elements "
              f"({a.tensors * a.numel * 4 / MiB:.0f} MiB of float32 params; one tensor "
              f"{a.numel * 4 / MiB:.1f} MiB)")
        print(format_table(["candidate", "state B/param", "first step() extra MiB",
                            "steady step() extra MiB", "steady extra / one fp32 tensor"], rows))
        results["dense"] = res
    if "sparse" in CASES[a.case]:
        rows, res = [], {}
        for name in SPARSE:
            r = run_child("sparse", name, pass_on)
            res[name] = r
            if "error" in r:
                rows.append([name, "-", "-", "-", "-", "-", "-", r["error"][:60]])
                continue
            rows.append([name, f"{r['state_bytes_per_param']:.3f}",
                         _state_vs_ours(r, res.get("ours")),
                         mib(r.get("step_first_extra")), mib(r.get("step_steady_extra")),
                         mib(r["train_first_extra"]), mib(r["train_steady_extra"]), ""])
        print(f"\n## sparse: EmbeddingBag {a.rows:,} x {a.dim} float32 "
              f"({a.rows * a.dim * 4 / MiB:.0f} MiB), {a.bags:,} bags x {a.ids_per_bag} "
              f"uniform ids")
        print(format_table(["candidate", "state B/param", "state vs ours", "step() first MiB",
                            "step() steady MiB", "train step first MiB",
                            "train step steady MiB", "note"], rows))
        results["sparse"] = res
    if "kernel-threads" in CASES[a.case]:
        results["kernel-threads"] = kernel_threads_table(a, pass_on)
    print("\nfirst = includes state created lazily on the first step (ours; torch creates it "
          "in __init__); steady = the second step, temporaries only.")
    if a.json:
        path = write_json(a.json, results)
        print(f"(results written to {os.path.relpath(path)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
