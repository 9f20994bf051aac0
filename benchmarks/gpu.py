"""GPU: parity of every CUDA path against the float64 reference, then speed as ratios
(issue 13). One command, torch + Triton + numpy only (no FBGEMM, no installs):

    python benchmarks/gpu.py            # on a CUDA machine, under 5 minutes
    python benchmarks/gpu.py --smoke    # tiny sizes on the CPU, to know it runs end to end

1. Parity, on the device: one step of `adagrad.Adagrad` per dense path (torch's fused
   kernel, the Triton kernel, the foreach fallback) × option × float32/bfloat16/float16,
   and of `ProximalAdagrad`, `AdagradDA` and `FTRL` per dtype, on tensors of sizes 0, 1
   and odd, against `adagrad.reference`; the sparse optimizer
   path and the fused `adagrad.nn.EmbeddingBag` over three steps with duplicate ids, lazy
   decoupled decay and ρ < 1, against the reference after `flush()`. The table says which
   kernel each case took (from the dispatch itself) and its worst error in units of the
   tolerance (≤ 1 passes).
2. Dense speed: 10 × 1M float32 and a transformer-like set of 200 tensors (≈100M
   parameters); `step()` only, gradients set once. Ours in torch's configuration and with
   each extra option against `torch.optim.Adagrad(fused=True)` and `(foreach=True)` on the
   same tensors, as ``anchor time / our time``; ours also as a fraction of the bandwidth
   limit: bytes moved (θ and G read and written, g read) ÷ time ÷ the copy bandwidth
   (``dst.copy_(src)``) measured in the same run. Targets: torch's configuration ≥ 0.95×
   torch fused; extras ≥ 0.9× torch fused and ≥ 3× torch foreach on the 200-tensor set.
3. Sparse speed: a 10M × 128 float32 table, 65,536 bags × 4 ids, uniform and Zipf(1.05),
   the full training step (forward, backward, step): ours as optimizer (torch's sparse
   `EmbeddingBag` + `adagrad.Adagrad`) and as fused layer (`adagrad.nn.EmbeddingBag`
   updating in backward), against `torch.optim.Adagrad` on torch's sparse layer. Target:
   fused ≥ 5× torch.

Candidates alternate round by round (benchmarks/_common.py); each repetition runs
``--steps`` steps between two device synchronisations; medians of ``--reps``. Writes
``benchmarks/results/gpu.json`` and ``gpu.md`` (``gpu-smoke.*`` with --smoke).

--smoke runs everything at tiny sizes on the CPU with the dispatch seeing CPU tensors as
CUDA ones and Triton in its interpreter, as the tests do: its timings mean nothing.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

SMOKE = "--smoke" in sys.argv
if SMOKE:  # before anything imports triton
    os.environ.setdefault("TRITON_INTERPRET", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from _common import (  # noqa: E402
    RESULTS,
    format_table,
    machine_info,
    median_ms,
    paired_ratio,
    time_alternating,
    write_json,
)

import adagrad  # noqa: E402
from adagrad import reference as ref  # noqa: E402
from adagrad.kernels.engine import cuda_dispatch  # noqa: E402
from adagrad.optim.adagrad import group_rule  # noqa: E402
from adagrad.nn import EmbeddingBag  # noqa: E402

LR = 0.01
DENSE_OPTIONS = {  # name: (adagrad.Adagrad keywords, parameter dtype)
    "torch config": ({}, torch.float32),
    "eps inside": ({"eps_placement": "inside"}, torch.float32),
    "decoupled wd": ({"weight_decay": 0.01, "decoupled_weight_decay": True}, torch.float32),
    "rho 0.9": ({"accumulator_decay": 0.9}, torch.float32),
    "maximize": ({"maximize": True}, torch.float32),
    "bf16, f32 state": ({}, torch.bfloat16),
}
RTOL = {torch.float32: 2e-6, torch.bfloat16: 2 ** -7, torch.float16: 2 ** -10}
ATOL = 1e-6
FULL = dict(big=[1_000_000] * 10, width=720, layers=16, extra_vectors=8,
            table=(10_000_000, 128), bags=65_536, ids_per_bag=4)
TINY = dict(big=[1000] * 3, width=8, layers=2, extra_vectors=2, table=(500, 8), bags=16,
            ids_per_bag=4)


def transformer_shapes(width: int, layers: int, extra_vectors: int) -> list[tuple[int, ...]]:
    """A GPT-like block's 12 tensors per layer (qkv, projection, two norms, MLP), plus
    some vectors: 16 layers of width 720 and 8 vectors are 200 tensors, 99.7M parameters."""
    d = width
    block = [(3 * d, d), (3 * d,), (d, d), (d,), (d,), (d,), (4 * d, d), (4 * d,),
             (d, 4 * d), (d,), (d,), (d,)]
    return block * layers + [(d,)] * extra_vectors


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _check(actual: torch.Tensor, expected: np.ndarray, dtype: torch.dtype) -> float:
    """Worst error of ``actual`` in units of the tolerance (≤ 1 passes)."""
    if actual.numel() == 0:
        return 0.0
    got = actual.detach().double().cpu().numpy()
    return float(np.max(np.abs(got - expected) / (ATOL + RTOL[dtype] * np.abs(expected))))


# -- 1. parity -------------------------------------------------------------------------


def _dense_case(device, options, dtype):
    """One step of ours on small tensors; (path taken, worst error / tolerance)."""
    shapes = [(0,), (1,), (1025,), (33, 7)]
    params = [torch.nn.Parameter(torch.randn(s, device=device).to(dtype)) for s in shapes]
    for p in params:
        p.grad = torch.randn(p.shape, device=device).to(dtype)
    optimizer = adagrad.Adagrad(params, **{"lr": 0.1, "lr_decay": 0.01, "weight_decay": 0.02,
                                           **options})
    group = optimizer.param_groups[0]
    expected = [ref.adagrad(p.detach().double().cpu().numpy(),
                            p.grad.double().cpu().numpy(), ref.adagrad_init(np.zeros(p.shape)),
                            lr=0.1, lr_decay=0.01, weight_decay=group["weight_decay"],
                            eps=group["eps"], eps_placement=group["eps_placement"],
                            decoupled_weight_decay=group["decoupled_weight_decay"],
                            accumulator_decay=group["accumulator_decay"],
                            maximize=group["maximize"]) for p in params]
    optimizer.step()
    errors = [max(_check(p, theta, dtype), _check(optimizer.state[p]["sum"], state["sum"],
                                                   torch.float32))
              for p, (theta, state) in zip(params, expected)]
    probe = params[2]
    path = cuda_dispatch.dense_path(probe, probe.grad, optimizer.state[probe]["sum"],
                                    group_rule(group))
    return path, max(errors)


def _sparse_case(device, fused: bool):
    """Three steps with duplicate ids, lazy decay and ρ; (kernel, worst error)."""
    options = dict(lr=0.1, weight_decay=0.05, sparse_weight_decay="lazy",
                   accumulator_decay=0.9)
    if fused:
        layer = EmbeddingBag(20, 5, mode="sum", device=device)
    else:
        layer = torch.nn.EmbeddingBag(20, 5, mode="sum", sparse=True, device=device)
    optimizer = adagrad.Adagrad(layer.parameters(), **options)
    if fused:
        layer.update_in_backward(optimizer)
    theta, state = layer.weight.detach().double().cpu().numpy(), None
    state = ref.adagrad_sparse_init(theta)
    for ids in ([3, 7, 3, 3, 19, 0, 7, 3], [7, 7, 1, 2, 3, 4, 5, 6], [0, 0, 0, 0, 9, 9, 9, 9]):
        ids_t = torch.tensor(ids, device=device)
        weights = torch.randn(2, 5, device=device)
        (layer(ids_t, torch.tensor([0, 4], device=device)) * weights).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
        values = np.repeat(weights.double().cpu().numpy(), 4, axis=0)
        theta, state = ref.adagrad_sparse(theta, ids, values, state, **options)
    optimizer.flush()
    theta, state = ref.adagrad_sparse_flush(theta, state, weight_decay=0.05,
                                            accumulator_decay=0.9, sparse_weight_decay="lazy")
    weight = layer.weight.detach()
    kernel = cuda_dispatch.sparse_kernel(weight, weight, weight).__name__.rsplit(".", 1)[-1]
    error = max(_check(weight, theta, torch.float32),
                _check(optimizer.state[layer.weight]["sum"], state["sum"], torch.float32))
    return kernel, error


MEMBERS = {  # name: (class, keywords, its reference's step from θ and g at step 1)
    "proximal": (adagrad.ProximalAdagrad, dict(lr=0.1, l1=0.01, l2=0.1),
                 lambda theta, g: ref.proximal_adagrad(theta, g, ref.proximal_adagrad_init(theta),
                                                       lr=0.1, l1=0.01, l2=0.1)),
    "dual averaging": (adagrad.AdagradDA, dict(lr=0.1, l1=0.01, l2=0.1),
                       lambda theta, g: ref.adagrad_da(theta, g, ref.adagrad_da_init(theta),
                                                       lr=0.1, l1=0.01, l2=0.1)),
    "ftrl": (adagrad.FTRL, dict(lr=0.1, l1=0.01, l2=0.1),
             lambda theta, g: ref.ftrl(theta, g, ref.ftrl_init(theta), lr=0.1, l1=0.01, l2=0.1)),
}


def _member_case(device, name, dtype):
    """One dense step of a family member on small tensors; (kernel, worst error)."""
    member, options, reference = MEMBERS[name]
    params = [torch.nn.Parameter(torch.randn(s, device=device).to(dtype))
              for s in [(0,), (1,), (2049,), (33, 7)]]
    for p in params:
        p.grad = torch.randn(p.shape, device=device).to(dtype)
    expected = [reference(p.detach().double().cpu().numpy(), p.grad.double().cpu().numpy())[0]
                for p in params]
    probe = params[2]
    on_triton = cuda_dispatch.triton_takes(probe, probe.grad, torch.zeros_like(probe.grad,
                                                                                dtype=torch.float32))
    member(params, **options).step()
    error = max(_check(p, theta, dtype) for p, theta in zip(params, expected))
    return "triton_members" if on_triton else "torch ops", error


def parity(device) -> list[dict]:
    rows = []
    for name in MEMBERS:
        for dtype in (torch.float32, torch.bfloat16, torch.float16):
            kernel, error = _member_case(device, name, dtype)
            rows.append(dict(case=f"dense {name}", dtype=str(dtype).split(".")[-1],
                             kernel=kernel, error=error))
    for name, (options, param_dtype) in DENSE_OPTIONS.items():
        if param_dtype != torch.float32:  # the dtypes are swept here
            continue
        for dtype in (torch.float32, torch.bfloat16, torch.float16):
            for force_foreach in (False, True):
                available = cuda_dispatch.triton_available
                if force_foreach:
                    cuda_dispatch.triton_available = lambda: False
                try:
                    path, error = _dense_case(device, options, dtype)
                finally:
                    cuda_dispatch.triton_available = available
                rows.append(dict(case=f"dense {name}", dtype=str(dtype).split(".")[-1],
                                 kernel=path, error=error))
    for fused in (False, True):
        kernel, error = _sparse_case(device, fused)
        rows.append(dict(case="sparse " + ("fused layer" if fused else "optimizer"),
                         dtype="float32", kernel=kernel, error=error))
    return rows


# -- 2. dense speed --------------------------------------------------------------------


def _tensors(shapes, dtype, device, seed=0):
    gen = torch.Generator(device=device).manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(s, device=device, generator=gen).to(dtype))
              for s in shapes]
    for p in params:
        p.grad = torch.randn(p.shape, device=device, generator=gen).to(dtype)
    return params


def _stepper(optimizer, device, steps):
    def run(_):
        for _ in range(steps):
            optimizer.step()
        synchronize(device)
    return run


def _bytes_per_element(dtype) -> int:
    size = torch.empty(0, dtype=dtype).element_size()
    return 2 * size + size + 2 * 4  # θ read and written, g read, float32 G read and written


def dense_speed(label, shapes, device, args) -> dict:
    """Ours per option and torch's anchors on copies of one tensor set, alternating."""
    candidates, anchors = {}, {}
    for dtype in (torch.float32, torch.bfloat16):
        for mode in ("fused", "foreach"):
            optimizer = torch.optim.Adagrad(_tensors(shapes, dtype, device), lr=LR,
                                            **{mode: True})
            name = f"torch {mode} {str(dtype).split('.')[-1]}"
            candidates[name], anchors[(mode, dtype)] = _stepper(optimizer, device, args.steps), name
    for name, (options, dtype) in DENSE_OPTIONS.items():
        optimizer = adagrad.Adagrad(_tensors(shapes, dtype, device), lr=LR, **options)
        candidates[f"ours {name}"] = _stepper(optimizer, device, args.steps)
    elements = sum(int(np.prod(s)) for s in shapes)
    source, target = torch.ones(elements, device=device), torch.empty(elements, device=device)

    def copy(_):
        for _ in range(args.steps):
            target.copy_(source)
        synchronize(device)
    candidates["copy"] = copy
    times = time_alternating(candidates, args.reps, args.warmup, log=False)
    bandwidth = 2 * 4 * elements * args.steps / (median_ms(times["copy"]) / 1e3)
    rows = []
    for name, (_, dtype) in DENSE_OPTIONS.items():
        ours = times[f"ours {name}"]
        moved = _bytes_per_element(dtype) * elements * args.steps
        rows.append(dict(
            set=label, option=name, ms_per_step=median_ms(ours) / args.steps,
            vs_torch_fused=paired_ratio(times[anchors[("fused", dtype)]], ours),
            vs_torch_foreach=paired_ratio(times[anchors[("foreach", dtype)]], ours),
            bandwidth_fraction=moved / (median_ms(ours) / 1e3) / bandwidth))
    return dict(rows=rows, copy_bandwidth_gb_s=bandwidth / 1e9,
                times_ms={k: [t * 1e3 for t in v] for k, v in times.items()})


# -- 3. sparse speed -------------------------------------------------------------------


def zipf_ids(count: int, rows: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Zipf(exponent) ranks within ``[0, rows)`` (resampled beyond), scattered over the
    table by a fixed permutation-like hash so that hot rows are not neighbours."""
    ids = np.empty(0, dtype=np.int64)
    while ids.size < count:
        draw = rng.zipf(exponent, size=2 * count)
        ids = np.concatenate([ids, draw[draw <= rows] - 1])
    return (ids[:count] * 2_654_435_761) % rows


def _batches(dist, args, sizes, device, count=4):
    rows, bags, per_bag = sizes["table"][0], sizes["bags"], sizes["ids_per_bag"]
    rng = np.random.default_rng(0)
    out = []
    for _ in range(count):
        ids = (rng.integers(0, rows, bags * per_bag) if dist == "uniform"
               else zipf_ids(bags * per_bag, rows, 1.05, rng))
        offsets = torch.arange(0, bags * per_bag, per_bag, device=device)
        weights = torch.randn(bags, sizes["table"][1], device=device)
        out.append((torch.from_numpy(ids).to(device), offsets, weights))
    return out


def _training_step(layer, optimizer, batches, device, steps):
    def run(i):
        for k in range(steps):
            ids, offsets, weights = batches[(i + k) % len(batches)]
            (layer(ids, offsets) * weights).sum().backward()
            if optimizer is not None:
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        synchronize(device)
    return run


def sparse_speed(dist, sizes, device, args) -> dict:
    rows, width = sizes["table"]
    batches = _batches(dist, args, sizes, device)
    torch_layer = torch.nn.EmbeddingBag(rows, width, mode="sum", sparse=True, device=device)
    ours_layer = torch.nn.EmbeddingBag(rows, width, mode="sum", sparse=True, device=device)
    fused_layer = EmbeddingBag(rows, width, mode="sum", device=device)
    fused_layer.update_in_backward(adagrad.Adagrad(fused_layer.parameters(), lr=LR))
    candidates = {
        "torch": _training_step(torch_layer, torch.optim.Adagrad(torch_layer.parameters(),
                                                                 lr=LR), batches, device,
                                args.steps),
        "ours optimizer": _training_step(ours_layer, adagrad.Adagrad(ours_layer.parameters(),
                                                                     lr=LR), batches, device,
                                         args.steps),
        "ours fused layer": _training_step(fused_layer, None, batches, device, args.steps),
    }
    times = time_alternating(candidates, args.reps, args.warmup, log=False)
    result = [dict(dist=dist, candidate=name, ms_per_step=median_ms(t) / args.steps,
                   vs_torch=paired_ratio(times["torch"], t)) for name, t in times.items()]
    del torch_layer, ours_layer, fused_layer, candidates
    return dict(rows=result)


# -- report ----------------------------------------------------------------------------


def markdown(payload: dict) -> str:
    info = payload["machine"]
    lines = [f"# GPU benchmark ({info['gpu']}, {info['date']})", "",
             "Ratios are anchor time / our time (above 1: ours faster).", "", "## Parity", ""]
    lines.append(format_table(["case", "dtype", "kernel", "error / tolerance", "ok"], [
        [r["case"], r["dtype"], r["kernel"], f"{r['error']:.3f}", "yes" if r["error"] <= 1
         else "NO"] for r in payload["parity"]]))
    lines += ["", f"## Dense (copy bandwidth {payload['dense'][0]['copy_bandwidth_gb_s']:.0f}"
              " GB/s)", ""]
    lines.append(format_table(
        ["set", "option", "ms/step", "vs torch fused", "vs torch foreach", "of bandwidth"],
        [[r["set"], r["option"], f"{r['ms_per_step']:.3f}", f"{r['vs_torch_fused']:.2f}",
          f"{r['vs_torch_foreach']:.2f}", f"{r['bandwidth_fraction']:.2f}"]
         for part in payload["dense"] for r in part["rows"]]))
    lines += ["", "## Sparse (full training step)", ""]
    lines.append(format_table(["ids", "candidate", "ms/step", "vs torch"], [
        [r["dist"], r["candidate"], f"{r['ms_per_step']:.3f}", f"{r['vs_torch']:.2f}"]
        for part in payload["sparse"] for r in part["rows"]]))
    return "\n".join(lines) + "\n"


def _smoke_device() -> torch.device:
    """CPU tensors, seen as CUDA by the dispatch (Triton in its interpreter)."""
    cuda_dispatch.device_type = lambda tensor: "cuda"
    return torch.device("cpu")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU")
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=10, help="steps per repetition")
    args = parser.parse_args()
    if args.smoke:
        device, sizes = _smoke_device(), TINY
        args.reps, args.warmup, args.steps = 2, 1, 1
    elif torch.cuda.is_available():
        device, sizes = torch.device("cuda"), FULL
    else:
        print("no CUDA device: run with --smoke for a CPU check", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    info = machine_info(torch.get_num_threads())
    info["gpu"] = torch.cuda.get_device_name(device) if device.type == "cuda" else "none (smoke)"
    info["triton"] = _triton_version()
    payload = dict(machine=info, parity=parity(device))
    shapes = transformer_shapes(sizes["width"], sizes["layers"], sizes["extra_vectors"])
    payload["dense"] = [dense_speed("10 x 1M", [(n,) for n in sizes["big"]], device, args),
                        dense_speed(f"{len(shapes)} mixed", shapes, device, args)]
    payload["sparse"] = [sparse_speed(dist, sizes, device, args)
                         for dist in ("uniform", "zipf 1.05")]
    name = "gpu-smoke" if args.smoke else "gpu"
    path = write_json(name, payload)
    text = markdown(payload)
    (RESULTS / f"{name}.md").write_text(text)
    print(text)
    print(f"wrote {path} and {RESULTS / (name + '.md')}", file=sys.stderr)
    failed = [r for r in payload["parity"] if r["error"] > 1]
    return 1 if failed else 0


def _triton_version() -> str:
    try:
        import triton
        return triton.__version__
    except ImportError:
        return "not installed"


if __name__ == "__main__":
    sys.exit(main())
