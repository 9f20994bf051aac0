"""Sparse embedding step, the headline benchmark (targets: benchmarks/README.md, "Targets"; issue 3).

Table V x D float32 (default 1,000,000 x 64), a batch of B bags x L ids (16,384 x 4), sum
pooling, loss = sum of the outputs; ids (a) uniform, (b) Zipf(1.05) over a random permutation
of the rows. One full training step (forward + backward + optimizer update) is timed for:

  torch      torch.optim.Adagrad on nn.EmbeddingBag(sparse=True)
  fbgemm     FBGEMM CPU TBE EXACT_ADAGRAD (update inside backward)
  fbgemm-rw  FBGEMM CPU TBE EXACT_ROWWISE_ADAGRAD (a different, cheaper algorithm)
  fwd+bwd    forward + backward of the EmbeddingBag alone, no update (a floor)
  ours       adagrad.Adagrad on nn.EmbeddingBag(sparse=True)
  ours-lazy  adagrad.Adagrad with weight_decay=0.01, sparse_weight_decay="lazy"
  ours-fused adagrad.nn.EmbeddingBag with adagrad.Adagrad's update inside backward
  ours-rowwise-fused  adagrad.nn.EmbeddingBag with adagrad.RowWiseAdagrad's update inside
             backward (the row-wise algorithm: its anchor is fbgemm-rw)
  ftrl-fused, prox-fused, da-fused  the same with adagrad.FTRL, ProximalAdagrad (l1, l2)
             and AdagradDA (l1, l2); -cu: with sparse_catch_up=True (untouched rows caught
             up at lookup); dog-fused: DoGAdagrad (no learning rate; the distance terms
             summed in the same pass). Their anchor is torch.

Candidates alternate round by round; medians of --reps repetitions after --warmup; the same
pre-generated batches (rep i uses batch i mod --batches) for every candidate; id generation
is outside the timed region. Also: a correctness check (ours, and FBGEMM EXACT_ADAGRAD, vs
torch.optim.Adagrad after one step from the same non-trivial state; ours-rowwise-fused vs
FBGEMM EXACT_ROWWISE_ADAGRAD likewise) and optimizer-state bytes per parameter.

Run (from the repository root, in the benchmark environment):

    bash benchmarks/setup_env.sh && .venv-bench/bin/python benchmarks/sparse_embedding.py

Options: --quick (small table, few reps: a smoke test), --reps, --warmup, --threads,
--rows, --dim, --bags, --ids-per-bag, --no-fbgemm, --json NAME, --only NAMES (a subset of
the candidates), --isolate (one process per candidate: the default from 4M rows, so that
--rows 16000000 fits in 24 GB).

The physical limit: a copy of a --copy-mib buffer (larger than the caches) is timed
alternating with the candidates and gives the memory bandwidth under the same load; the
bytes each step must move (`step_bytes`: rows read by the forward, rows and state read and
written by the update, ids, offsets, output and its gradient) over it is the candidate's
limit, and its time is printed as a multiple of it.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import statistics
import subprocess
import sys
import warnings
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
OURS = ("ours-fused", "ours", "ours-rowwise-fused")  # the ratios are taken against these
# (name, anchor, threshold[, distributions]): "anchor / name >= threshold" on each id
# distribution (or only on those named)
TARGETS = (("ours-fused", "torch", 4.0), ("ours-fused", "fbgemm", 2.0),
           ("ours-fused", "fbgemm", 4.0, ("zipf",)), ("ours", "torch", 4.0),
           ("ours", "fbgemm", 2.0), ("ours-rowwise-fused", "fbgemm-rw", 2.5),
           ("ftrl-fused", "torch", 2.0), ("prox-fused", "torch", 2.0),
           ("prox-fused-cu", "torch", 2.0), ("da-fused", "torch", 2.0),
           ("da-fused-cu", "torch", 2.0))
# the reference each candidate's one-step result is compared with
REFERENCE_OF = {"ours": "torch", "ours-fused": "torch", "fbgemm": "torch",
                "ours-rowwise-fused": "fbgemm-rw"}
L1, L2 = 1e-4, 1e-4  # the proximal members' regularisation
EPS = 1e-10  # torch's default; FBGEMM is given the same so its result is comparable
WD = 0.01
ISOLATE_ROWS = 4_000_000
ISOLATED_DEFAULT = ("torch", "fbgemm", "fbgemm-rw", "ours-fused", "ours-rowwise-fused")
COPY = "memory copy"  # the bandwidth probe, timed alternating with the candidates


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--bags", type=int, default=16_384)
    p.add_argument("--ids-per-bag", type=int, default=4)
    p.add_argument("--zipf", type=float, default=1.05)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batches", type=int, default=8, help="distinct pre-generated batches")
    add_thread_args(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-fbgemm", action="store_true")
    p.add_argument("--no-ours", action="store_true")
    p.add_argument("--only", default="", help="comma-separated candidate names to time "
                   "(default: all; with --isolate, " + ",".join(ISOLATED_DEFAULT) + ")")
    p.add_argument("--isolate", action=argparse.BooleanOptionalAction, default=None,
                   help="one child process per candidate, each building only its own table "
                   f"(default: on from {ISOLATE_ROWS:,} rows, where all tables at once do "
                   "not fit in memory); no one-step correctness check, ratios of medians")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--copy-mib", type=int, default=256,
                   help="size of the buffer whose copy measures the memory bandwidth")
    p.add_argument("--quick", action="store_true", help="small smoke run")
    p.add_argument("--json", default="sparse_embedding", help="results/NAME.json ('' = none)")
    a = p.parse_args(argv)
    if a.quick:
        a.rows, a.bags, a.reps, a.warmup, a.batches = 100_000, 2048, 10, 2, 3
    return a


# ----------------------------------------------------------------------------- ids
def make_batches(dist: str, a, gen_seed: int):
    """Pre-generate ``a.batches`` batches of ids (int64) for one distribution."""
    import numpy as np
    import torch

    rng = np.random.default_rng(gen_seed)
    n = a.bags * a.ids_per_bag
    out = []
    if dist == "zipf":
        # finite Zipf over ranks 1..V: p(k) ~ k^-s, sampled by inverse CDF, then mapped
        # through a random permutation so hot rows are scattered over the table
        k = np.arange(1, a.rows + 1, dtype=np.float64)
        cdf = np.cumsum(k ** -a.zipf)
        cdf /= cdf[-1]
        perm = rng.permutation(a.rows)
    for _ in range(a.batches):
        if dist == "uniform":
            ids = rng.integers(0, a.rows, size=n, dtype=np.int64)
        else:
            rank = np.searchsorted(cdf, rng.random(n), side="right")
            ids = perm[np.minimum(rank, a.rows - 1)].astype(np.int64)
        out.append(torch.from_numpy(ids))
    offsets = torch.arange(0, n, a.ids_per_bag, dtype=torch.int64)  # EmbeddingBag: B starts
    offsets_full = torch.arange(0, n + 1, a.ids_per_bag, dtype=torch.int64)  # TBE: B + 1
    return out, offsets, offsets_full


# ----------------------------------------------------------------------------- candidates
def load_ours():
    try:
        import adagrad
        import adagrad.nn

        return adagrad, None
    except Exception as exc:  # the package may be mid-development
        return None, f"{type(exc).__name__}: {exc}"


def load_fbgemm():
    try:
        import fbgemm_gpu  # noqa: F401
        from fbgemm_gpu.split_embedding_configs import EmbOptimType
        from fbgemm_gpu.split_table_batched_embeddings_ops_common import (
            ComputeDevice,
            EmbeddingLocation,
            PoolingMode,
        )
        from fbgemm_gpu.split_table_batched_embeddings_ops_training import (
            SplitTableBatchedEmbeddingBagsCodegen,
        )
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}"

    def make(rows, dim, rowwise, init):
        import torch

        opt = EmbOptimType.EXACT_ROWWISE_ADAGRAD if rowwise else EmbOptimType.EXACT_ADAGRAD
        tbe = SplitTableBatchedEmbeddingBagsCodegen(
            [(rows, dim, EmbeddingLocation.HOST, ComputeDevice.CPU)],
            optimizer=opt,
            learning_rate=LR,
            eps=EPS,
            pooling_mode=PoolingMode.SUM,
            device=torch.device("cpu"),
        )
        with torch.no_grad():
            tbe.split_embedding_weights()[0].copy_(init)
        return tbe

    return make, None


def fbgemm_state_bytes(tbe) -> int:
    return sum(t.numel() * t.element_size() for ts in tbe.split_optimizer_states() for t in ts)


def build_candidates(a, init, ours_pkg, make_tbe, keep=None):
    """Return {name: (step(ids, offsets, offsets_full), state_bytes_fn, note)}, building
    only the candidates named in ``keep`` (None: all), so that a big table is built once."""
    import torch

    def want(name):
        return keep is None or name in keep

    def embbag():
        emb = torch.nn.EmbeddingBag(a.rows, a.dim, mode="sum", sparse=True)
        with torch.no_grad():
            emb.weight.copy_(init)
        return emb

    cands = {}

    def optim_step(emb, opt):
        def step(ids, offs, offs_full):
            opt.zero_grad(set_to_none=True)
            emb(ids, offs).sum().backward()
            opt.step()
        return step

    if want("torch"):
        emb_t = embbag()
        opt_t = torch.optim.Adagrad(emb_t.parameters(), lr=LR)
        cands["torch"] = (optim_step(emb_t, opt_t), lambda: state_bytes(opt_t),
                          "torch.optim.Adagrad")

    if make_tbe is not None:
        def tbe_step(m):
            def step(ids, offs, offs_full):
                m(ids, offs_full).sum().backward()  # the update happens inside backward
            return step

        if want("fbgemm"):
            tbe = make_tbe(a.rows, a.dim, False, init)
            cands["fbgemm"] = (tbe_step(tbe), lambda: fbgemm_state_bytes(tbe),
                               "FBGEMM EXACT_ADAGRAD")
        if want("fbgemm-rw"):
            tbe_rw = make_tbe(a.rows, a.dim, True, init)
            cands["fbgemm-rw"] = (tbe_step(tbe_rw), lambda: fbgemm_state_bytes(tbe_rw),
                                  "FBGEMM EXACT_ROWWISE_ADAGRAD")

    if want("fwd+bwd"):
        emb_f = embbag()

        def fwdbwd(ids, offs, offs_full):
            emb_f.weight.grad = None
            emb_f(ids, offs).sum().backward()

        cands["fwd+bwd"] = (fwdbwd, lambda: 0, "forward + backward, no update")

    if ours_pkg is not None:
        if want("ours-fused"):
            emb_u = ours_pkg.nn.EmbeddingBag(a.rows, a.dim, mode="sum")
            with torch.no_grad():
                emb_u.weight.copy_(init)
            opt_u = ours_pkg.Adagrad(emb_u.parameters(), lr=LR)
            emb_u.update_in_backward(opt_u)
            cands["ours-fused"] = (optim_step(emb_u, opt_u), lambda: state_bytes(opt_u),
                                   "adagrad.nn.EmbeddingBag, update inside backward")
        if want("ours"):
            emb_o = embbag()
            opt_o = ours_pkg.Adagrad(emb_o.parameters(), lr=LR)
            cands["ours"] = (optim_step(emb_o, opt_o), lambda: state_bytes(opt_o),
                             "adagrad.Adagrad")
        if want("ours-lazy"):
            try:
                emb_l = embbag()
                opt_l = ours_pkg.Adagrad(emb_l.parameters(), lr=LR, weight_decay=WD,
                                         sparse_weight_decay="lazy")
                cands["ours-lazy"] = (optim_step(emb_l, opt_l), lambda: state_bytes(opt_l),
                                      f"adagrad.Adagrad wd={WD} sparse_weight_decay='lazy'")
            except Exception as exc:
                print(f"ours-lazy unavailable: {exc!r}", file=sys.stderr)
        cands.update(family_fused_candidates(a, init, ours_pkg, want))
    return cands


def rowwise_fused(a, init, ours_pkg):
    """adagrad.nn.EmbeddingBag updated inside backward by RowWiseAdagrad (ε as FBGEMM's
    table here); returns (layer, optimizer)."""
    return fused_layer(a, init, ours_pkg, ours_pkg.RowWiseAdagrad, dict(eps=EPS))


def fused_layer(a, init, ours_pkg, optimizer_class, kwargs):
    """adagrad.nn.EmbeddingBag holding ``init``, updated inside backward by
    ``optimizer_class(lr=LR, **kwargs)``; returns (layer, optimizer)."""
    import torch

    layer = ours_pkg.nn.EmbeddingBag(a.rows, a.dim, mode="sum")
    with torch.no_grad():
        layer.weight.copy_(init)
    opt = optimizer_class(layer.parameters(), lr=LR, **kwargs)
    layer.update_in_backward(opt)
    return layer, opt


# The other members' fused layers (issue 9): name -> (class, keyword arguments, note).
FAMILY_FUSED = {
    "ours-rowwise-fused": ("RowWiseAdagrad", dict(eps=EPS), "RowWiseAdagrad"),
    "ftrl-fused": ("FTRL", {}, "FTRL"),
    "prox-fused": ("ProximalAdagrad", dict(l1=L1, l2=L2), f"ProximalAdagrad l1={L1} l2={L2}"),
    "prox-fused-cu": ("ProximalAdagrad", dict(l1=L1, l2=L2, sparse_catch_up=True),
                      f"ProximalAdagrad l1={L1} l2={L2}, sparse_catch_up"),
    "da-fused": ("AdagradDA", dict(l1=L1, l2=L2), f"AdagradDA l1={L1} l2={L2}"),
    "da-fused-cu": ("AdagradDA", dict(l1=L1, l2=L2, sparse_catch_up=True),
                    f"AdagradDA l1={L1} l2={L2}, sparse_catch_up"),
    "dog-fused": ("DoGAdagrad", {}, "DoGAdagrad (lr: DoG's multiplier of r̄)"),
}


def family_fused_candidates(a, init, ours_pkg, want) -> dict:
    """A candidate for each member of FAMILY_FUSED this adagrad has (and ``want`` names):
    one step is forward and backward, the update happening inside backward."""
    cands = {}
    for name, (class_name, kwargs, note) in FAMILY_FUSED.items():
        if not hasattr(ours_pkg, class_name) or not want(name):
            continue
        layer, opt = fused_layer(a, init, ours_pkg, getattr(ours_pkg, class_name), kwargs)

        def step(ids, offs, offs_full, layer=layer):
            layer(ids, offs).sum().backward()
        cands[name] = (step, lambda opt=opt: state_bytes(opt),
                       f"adagrad.nn.EmbeddingBag, {note} inside backward")
    return cands


# ----------------------------------------------------------------------------- correctness
def rel_diff(a, b, before) -> dict:
    """Compare a (candidate) with b (reference), both computed from ``before``.

    max_rel = max over elements of |a - b| / max(|b|, |before|, 1e-30): the difference
    relative to the operands' magnitude, so one float32 rounding step is ~1.2e-7 (a plain
    |a-b|/|b| explodes where the update cancels the weight to nearly 0). Also max |a - b|
    and the fraction of bitwise-equal entries.
    """
    a, b, before = a.detach(), b.detach(), before.detach()
    ne = a != b
    n_diff = int(ne.sum())
    if n_diff == 0:
        return {"max_abs": 0.0, "max_rel": 0.0, "frac_equal": 1.0}
    # only the rows that differ, in float64 (a whole-table float64 copy is slow)
    rows = ne.reshape(ne.shape[0], -1).any(1).nonzero().squeeze(1) if ne.dim() > 1 else None
    if rows is not None:
        a, b, before = a[rows], b[rows], before[rows]
    a64, b64 = a.double(), b.double()
    d = (a64 - b64).abs()
    scale = b64.abs().maximum(before.double().abs()).clamp_min(1e-30)
    return {
        "max_abs": d.max().item(),
        "max_rel": (d / scale).max().item(),
        "frac_equal": 1.0 - n_diff / ne.numel(),
    }


def correctness(a, init, batches, offsets, offsets_full, ours_pkg, make_tbe) -> dict:
    """One step from the same non-trivial state: ours (and FBGEMM) vs torch.optim.Adagrad.

    The shared state: torch.optim.Adagrad trained for 2 steps on two batches; its weights and
    accumulator are copied into each candidate; then all take one step on a third batch.
    """
    import torch

    emb = torch.nn.EmbeddingBag(a.rows, a.dim, mode="sum", sparse=True)
    with torch.no_grad():
        emb.weight.copy_(init)
    opt = torch.optim.Adagrad(emb.parameters(), lr=LR)
    for ids in batches[:2]:
        opt.zero_grad(set_to_none=True)
        emb(ids, offsets).sum().backward()
        opt.step()
    w0 = emb.weight.detach().clone()
    sd = copy.deepcopy(opt.state_dict())  # state_dict() holds references to live state
    sum0 = opt.state[emb.weight]["sum"].clone()
    ids = batches[2 % len(batches)]

    # reference: torch continues one more step
    opt.zero_grad(set_to_none=True)
    emb(ids, offsets).sum().backward()
    opt.step()
    w_ref, s_ref = emb.weight.detach(), opt.state[emb.weight]["sum"]

    out = {}
    if ours_pkg is not None:
        for name, layer in (("ours", torch.nn.EmbeddingBag), ("ours-fused", ours_pkg.nn.EmbeddingBag)):
            emb_o = layer(a.rows, a.dim, mode="sum", sparse=True)
            with torch.no_grad():
                emb_o.weight.copy_(w0)
            opt_o = ours_pkg.Adagrad(emb_o.parameters(), lr=LR)
            opt_o.load_state_dict(sd)  # torch checkpoints load into ours (issue 2)
            if name == "ours-fused":
                emb_o.update_in_backward(opt_o)
            opt_o.zero_grad(set_to_none=True)
            emb_o(ids, offsets).sum().backward()
            opt_o.step()
            out[name] = {"how": "torch state_dict loaded", "weight": rel_diff(emb_o.weight, w_ref, w0),
                         "sum": rel_diff(opt_o.state[emb_o.weight]["sum"], s_ref, sum0)}
            del emb_o, opt_o
    if make_tbe is not None:
        tbe = make_tbe(a.rows, a.dim, False, w0)
        with torch.no_grad():
            tbe.split_optimizer_states()[0][0].view_as(sum0).copy_(sum0)
        tbe(ids, offsets_full).sum().backward()
        out["fbgemm"] = {
            "how": "weights and momentum1 copied",
            "weight": rel_diff(tbe.split_embedding_weights()[0], w_ref, w0),
            "sum": rel_diff(tbe.split_optimizer_states()[0][0].view_as(s_ref), s_ref, sum0),
        }
        del tbe
        if ours_pkg is not None and hasattr(ours_pkg, "RowWiseAdagrad"):
            out["ours-rowwise-fused"] = rowwise_correctness(a, w0, batches, offsets,
                                                            offsets_full, ours_pkg, make_tbe)
    return out


def rowwise_correctness(a, w0, batches, offsets, offsets_full, ours_pkg, make_tbe) -> dict:
    """FBGEMM EXACT_ROWWISE_ADAGRAD takes two steps from ``w0``; ours-rowwise-fused starts
    from its weights and per-row accumulator, and both take a third step."""

    tbe = make_tbe(a.rows, a.dim, True, w0)
    for ids in batches[:2]:
        tbe(ids, offsets_full).sum().backward()
    weight, momentum = tbe.split_embedding_weights()[0], tbe.split_optimizer_states()[0][0]
    layer, opt = rowwise_fused(a, weight, ours_pkg)
    opt.state_dict()  # creates the state, to be overwritten with FBGEMM's
    opt.state[layer.weight]["sum"].copy_(momentum.view(-1))
    w1, sum1 = weight.clone(), momentum.view(-1).clone()
    ids = batches[2 % len(batches)]
    tbe(ids, offsets_full).sum().backward()
    layer(ids, offsets).sum().backward()
    return {"how": "FBGEMM's weights and momentum1 copied",
            "weight": rel_diff(layer.weight, weight, w1),
            "sum": rel_diff(opt.state[layer.weight]["sum"], momentum.view(-1), sum1)}


# ----------------------------------------------------------------------------- main
def print_header(a) -> dict:
    info = machine_info(a.threads)
    print(f"# Sparse embedding step: V={a.rows:,} x D={a.dim}, {a.bags:,} bags x "
          f"{a.ids_per_bag} ids, sum pooling; {a.threads} threads "
          f"(OMP_WAIT_POLICY={info['omp_wait_policy']}); medians of {a.reps} "
          f"reps after {a.warmup} warm-up, candidates alternating")
    print(f"# {info['date']}  {info['cpu']}  torch {info['torch']}"
          f"  fbgemm-gpu-cpu {info.get('fbgemm_gpu_cpu', '-')}  numba {info.get('numba', '-')}")
    return info


def ratios(times: dict, med: dict) -> dict:
    """Every candidate's time over each of ours, as a ratio of medians and paired."""
    out = {}
    bases = OURS + tuple(target[0] for target in TARGETS if target[0] not in OURS)
    for o in (o for o in bases if o in times):
        for n in times:
            out[f"{n}/{o}"] = {"of_medians": med[n] / med[o],
                               "paired_median": paired_ratio(times[n], times[o])}
    return out


def copy_probe(a):
    """A step that copies a buffer larger than the caches (``--copy-mib``), and the bytes
    it moves (read + written): its time, alternating with the candidates, gives the memory
    bandwidth under the same load."""
    import torch

    src = torch.ones(a.copy_mib << 18)  # float32: copy_mib MiB
    dst = torch.empty_like(src)

    def step(ids, offs, offs_full):
        dst.copy_(src)
    return step, 2 * src.numel() * 4


def step_bytes(a, distinct: float, state_bytes_per_param: float, update: bool = True) -> float:
    """The bytes one full step must move at the least: the forward reads each distinct row
    once and writes the (bags, D) output, backward reads the output gradient, the update
    reads and writes each distinct row and its state (``state_bytes_per_param`` per
    coordinate: 4 for Adagrad, 4/D for row-wise); the ids and offsets are read once.
    Bytes, not cache lines: a row-wise accumulator of 4 B still costs a 64 B line."""
    row = a.dim * 4
    ids = 8 * (a.bags * a.ids_per_bag + a.bags)
    total = distinct * row + 2 * a.bags * row + ids
    if update:
        total += 2 * distinct * row + 2 * distinct * a.dim * state_bytes_per_param
    return total


def run_distribution(a, gi: int, dist: str, init, cands, ours_pkg, make_tbe) -> dict:
    """Time every candidate on one id distribution, alternating with the bandwidth probe,
    and check correctness (not in a --child run)."""
    import torch

    batches, offsets, offsets_full = make_batches(dist, a, a.seed + 1 + gi)
    touched = sum(int(torch.unique(b).numel()) for b in batches) / len(batches)
    print(f"\n## {dist}{' ' + str(a.zipf) if dist == 'zipf' else ''}: "
          f"{touched:,.0f} distinct rows touched per batch (mean)", flush=True)

    def runner(step):
        return lambda i: step(batches[i % len(batches)], offsets, offsets_full)

    copy_step, copy_bytes = copy_probe(a)
    steps = {n: runner(c[0]) for n, c in cands.items()}
    steps[COPY] = runner(copy_step)
    times = time_alternating(steps, a.reps, a.warmup)
    copy_times = times.pop(COPY)
    bandwidth = copy_bytes / statistics.median(copy_times)
    print(f"memory bandwidth (copy of {a.copy_mib} MiB, read + written): "
          f"{bandwidth / 1e9:.1f} GB/s", flush=True)
    corr = {} if a.child else correctness(a, init, batches, offsets, offsets_full, ours_pkg,
                                          make_tbe)
    med = {n: median_ms(t) for n, t in times.items()}
    return {"distinct_rows_mean": touched, "median_ms": med, "times_s": times,
            "bandwidth_bytes_per_s": bandwidth, "copy_times_s": copy_times,
            "correctness": corr, "ratios": ratios(times, med)}


def limits(a, results: dict, sbytes: dict) -> None:
    """Each candidate's limit (the bytes its step must move over the measured bandwidth,
    `step_bytes`) and its time as a multiple of it, into ``results``."""
    for dr in results["distributions"].values():
        dr["limit_ms"], dr["x_limit"] = {}, {}
        for n, ms in dr["median_ms"].items():
            moved = step_bytes(a, dr["distinct_rows_mean"], sbytes[n], update=n != "fwd+bwd")
            dr["limit_ms"][n] = moved / dr["bandwidth_bytes_per_s"] * 1e3
            dr["x_limit"][n] = ms / dr["limit_ms"][n]


def correctness_cell(results: dict, dists: list[str], name: str) -> str:
    cells = []
    for d in dists:
        cr = results["distributions"][d]["correctness"].get(name)
        if cr:
            cells.append(f"{d[:4]} {cr['weight']['max_rel']:.1e}; {cr['sum']['max_rel']:.1e}")
    if cells:
        return f"vs {REFERENCE_OF[name]}: " + ", ".join(cells)
    return "0 (reference)" if name in REFERENCE_OF.values() else "-"


def print_table(results: dict, cands: dict, sbytes: dict) -> None:
    dists = list(results["distributions"])
    ours = [o for o in OURS if o in cands]
    headers = ["candidate"]
    for d in dists:
        headers += [f"{d} ms"] + [f"{d} x/{o}" for o in ours] + [f"{d} limit ms (x limit)"]
    headers += ["state B/param", "max rel diff after one step (w; sum)"]
    rows = []
    for n, c in cands.items():
        row = [f"{n} ({c[2]})"]
        for d in dists:
            dr = results["distributions"][d]
            row.append(f"{dr['median_ms'][n]:.2f}")
            row += [f"{dr['ratios'][f'{n}/{o}']['of_medians']:.2f}" for o in ours]
            row.append(f"{dr['limit_ms'][n]:.2f} ({dr['x_limit'][n]:.2f})")
        rows.append(row + [f"{sbytes[n]:.3f}", correctness_cell(results, dists, n)])
    print()
    print(format_table(headers, rows))
    print("\nlimit: the bytes the step must move (step_bytes) at the copy bandwidth measured "
          "alternating with the candidates: " + ", ".join(
              f"{d} {results['distributions'][d]['bandwidth_bytes_per_s'] / 1e9:.1f} GB/s"
              for d in dists))


def print_targets(results: dict) -> None:
    """Each target of TARGETS whose two candidates ran, and each of ours' correctness."""
    print("\n## Targets (ratio of medians; paired = median of per-round ratios; PASS needs "
          "both, 'borderline' one)")
    results["targets"] = {}
    for name, anchor, thr, *only in TARGETS:
        for d, dr in results["distributions"].items():
            r = dr["ratios"].get(f"{anchor}/{name}")
            if r is None or (only and d not in only[0]):
                continue
            hits = (r["of_medians"] >= thr) + (r["paired_median"] >= thr)
            label = f"{anchor}/{name} >= {thr:g} ({d})"
            results["targets"][label] = ("MISS", "borderline", "PASS")[hits]
            print(f"- {label}: {r['of_medians']:.2f} (paired {r['paired_median']:.2f})  "
                  f"{results['targets'][label]}")
    for name in ("ours-fused", "ours-rowwise-fused"):
        for d, dr in results["distributions"].items():
            if name in dr.get("x_limit", {}):
                x = dr["x_limit"][name]
                print(f"- {name} within 1.5x of the bytes-moved limit ({d}): {x:.2f}x  "
                      f"{'PASS' if x <= 1.5 else 'MISS'}")
    for o in OURS:
        checks = [dr["correctness"][o] for dr in results["distributions"].values()
                  if o in dr["correctness"]]
        if checks:
            worst = max(max(c["weight"]["max_rel"], c["sum"]["max_rel"]) for c in checks)
            print(f"- max rel diff {o} vs {REFERENCE_OF[o]} <= 1e-6: {worst:.2e}  "
                  f"{'PASS' if worst <= 1e-6 else 'MISS'}")


def run_isolated(a) -> int:
    """One child process per candidate (each builds only its table, times it alternating
    with the bandwidth probe, and reports its medians); then the table of all, with ratios
    of medians across processes (no paired ratio: the candidates did not alternate)."""
    names = a.only.split(",") if a.only else list(ISOLATED_DEFAULT)
    common = [f"--rows={a.rows}", f"--dim={a.dim}", f"--bags={a.bags}",
              f"--ids-per-bag={a.ids_per_bag}", f"--zipf={a.zipf}", f"--reps={a.reps}",
              f"--warmup={a.warmup}", f"--batches={a.batches}", f"--threads={a.threads}",
              f"--omp-wait-policy={a.omp_wait_policy}", f"--seed={a.seed}",
              f"--copy-mib={a.copy_mib}", "--no-isolate", "--child", "--json="]
    if a.omp_wait_policy != "default":  # what the children set, for the header
        os.environ["OMP_WAIT_POLICY"] = a.omp_wait_policy.upper()
    info = print_header(a)
    print(f"# one process per candidate: {', '.join(names)}", flush=True)
    children = {}
    for name in names:
        proc = subprocess.run([sys.executable, __file__, *common, f"--only={name}"],
                              capture_output=True, text=True)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("CHILD-RESULT ")]
        if proc.returncode != 0 or not lines:
            print(f"{name}: failed (exit {proc.returncode}): {proc.stderr.strip()[-300:]}")
            continue
        child = json.loads(lines[-1][len("CHILD-RESULT "):])
        if name not in child["distributions"]["uniform"]["median_ms"]:
            print(f"{name}: not available here")
            continue
        children[name] = child
        print(f"{name}: " + ", ".join(
            f"{d} {dr['median_ms'][name]:.2f} ms ({dr['x_limit'][name]:.2f}x its limit, "
            f"{dr['bandwidth_bytes_per_s'] / 1e9:.1f} GB/s)"
            for d, dr in child["distributions"].items())
            + f"; peak RSS {child['peak_rss_gb']:.2f} GB", flush=True)
    ours = [o for o in OURS if o in children]
    headers = ["candidate"]
    for d in ("uniform", "zipf"):
        headers += [f"{d} ms"] + [f"{d} x/{o}" for o in ours] + [f"{d} x limit"]
    headers += ["state B/param", "peak RSS GB"]
    rows = []
    for n, child in children.items():
        row = [n]
        for d in ("uniform", "zipf"):
            ms = child["distributions"][d]["median_ms"][n]
            row.append(f"{ms:.2f}")
            row += [f"{ms / children[o]['distributions'][d]['median_ms'][o]:.2f}" for o in ours]
            row.append(f"{child['distributions'][d]['x_limit'][n]:.2f}")
        rows.append(row + [f"{child['state_bytes_per_param'][n]:.3f}",
                           f"{child['peak_rss_gb']:.2f}"])
    print()
    print(format_table(headers, rows))
    print("\n## Targets (ratio of medians, one process per candidate; 'normalised': each "
          "time times the bandwidth its own process measured, which takes out the load's "
          "swings between the processes as far as they slow memory)")

    def norm(child, name, d):
        dr = child["distributions"][d]
        return dr["median_ms"][name] * dr["bandwidth_bytes_per_s"]

    for name, anchor, thr, *only in TARGETS:
        if name in children and anchor in children:
            for d in only[0] if only else ("uniform", "zipf"):
                r = (children[anchor]["distributions"][d]["median_ms"][anchor]
                     / children[name]["distributions"][d]["median_ms"][name])
                rn = norm(children[anchor], anchor, d) / norm(children[name], name, d)
                print(f"- {anchor}/{name} >= {thr:g} ({d}): {r:.2f} (normalised {rn:.2f})  "
                      f"{'PASS' if r >= thr else 'MISS'}")
    if a.json:
        path = write_json(a.json, {"config": vars(a), "machine": info, "isolated": children})
        print(f"\n(results written to {os.path.relpath(path)})")
    return 0


def main(argv=None) -> int:
    a = parse_args(argv)
    if a.isolate is None:
        a.isolate = a.rows >= ISOLATE_ROWS and not a.child
    if a.isolate:
        return run_isolated(a)
    set_threads(a.threads, a.omp_wait_policy)  # before numba / adagrad are imported
    import torch

    warnings.filterwarnings("ignore", message="Sparse invariant checks")
    torch.manual_seed(a.seed)
    ours_pkg, ours_err = (None, "--no-ours") if a.no_ours else load_ours()
    make_tbe, fb_err = (None, "--no-fbgemm") if a.no_fbgemm else load_fbgemm()
    if ours_err:
        print(f"note: ours not benchmarked: {ours_err}", file=sys.stderr)
    if fb_err:
        print(f"note: FBGEMM not benchmarked: {fb_err}", file=sys.stderr)

    init = torch.randn(a.rows, a.dim).mul_(0.1)
    info = print_header(a)
    cands = build_candidates(a, init, ours_pkg, make_tbe, a.only.split(",") if a.only else None)
    if a.child:  # no correctness check: the table is needed no more
        del init
        init = None
    results = {"config": vars(a), "machine": info, "distributions": {}}
    for gi, dist in enumerate(("uniform", "zipf")):
        results["distributions"][dist] = run_distribution(a, gi, dist, init, cands, ours_pkg,
                                                          make_tbe)
    # state bytes per parameter (after the steps above, so lazily created state exists)
    sbytes = {n: c[1]() / (a.rows * a.dim) for n, c in cands.items()}
    results["state_bytes_per_param"] = sbytes
    limits(a, results, sbytes)
    if a.child:  # one candidate's figures, for the parent of an --isolate run
        results["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        for dr in results["distributions"].values():
            del dr["times_s"], dr["copy_times_s"]
        print("CHILD-RESULT " + json.dumps(results, default=str))
        return 0
    print_table(results, cands, sbytes)
    if ours_pkg is not None:
        print_targets(results)
    if a.json:
        path = write_json(a.json, results)
        print(f"\n(results written to {os.path.relpath(path)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
