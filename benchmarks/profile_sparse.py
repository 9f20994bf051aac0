"""Where the time of our sparse step goes (a diagnostic, not a headline benchmark).

Same setup as sparse_embedding.py (V x D float32 table, B bags x L ids, uniform or Zipf),
and one gradient computed once; then, alternating, medians of --reps, for the optimizer
``--member`` (adagrad: adagrad.Adagrad, rowwise: adagrad.RowWiseAdagrad):

  step           the whole optimizer.step() (state already created)
  check_grad     the optimizer's pre-write gradient checks (_check_grad)
  sparse_rows    splitting the COO gradient into a table view, indices and values
  kernel         the member's sparse kernel alone (adagrad.kernels.sparse_adagrad_ /
                 sparse_rowwise_adagrad_: index check, the counting sort of positions by
                 partition, then grouping, summing and updating each partition in one
                 parallel region)
  fused kernel   the same kernel on the fused layer's gradient (each id's bag of the
                 (bags, D) output gradient: what the fused backward hands it)
  torch-coalesce grad.coalesce() (what torch.optim.Adagrad starts with), for scale
  fwd+bwd        forward + backward of the EmbeddingBag
  fused fwd+bwd  forward + backward of adagrad.nn.EmbeddingBag with the update inside

    .venv-bench/bin/python benchmarks/profile_sparse.py [--dist zipf] [--threads 2] [--member rowwise]

It reaches into adagrad's internals (adagrad.kernels, adagrad.optim.base); adjust if they
change.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_thread_args, format_table, median_ms, set_threads, time_alternating  # noqa: E402

# --member: (optimizer class name, kernel entry of adagrad.kernels, accumulator shape)
MEMBERS = {"adagrad": ("Adagrad", "sparse_adagrad_", lambda rows, dim: (rows, dim)),
           "rowwise": ("RowWiseAdagrad", "sparse_rowwise_adagrad_", lambda rows, dim: (rows,))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--bags", type=int, default=16_384)
    p.add_argument("--ids-per-bag", type=int, default=4)
    p.add_argument("--dist", choices=("uniform", "zipf"), default="uniform")
    p.add_argument("--zipf", type=float, default=1.05)
    p.add_argument("--reps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    add_thread_args(p)
    p.add_argument("--batches", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--member", choices=tuple(MEMBERS), default="adagrad")
    a = p.parse_args(argv)
    set_threads(a.threads, a.omp_wait_policy)
    import numba
    import torch

    warnings.filterwarnings("ignore", message="Sparse invariant checks")
    from sparse_embedding import make_batches

    import adagrad
    import adagrad.nn
    from adagrad import kernels
    from adagrad.kernels import RowClocks, StepRule
    from adagrad.optim.base import sparse_rows

    class_name, kernel_name, sum_shape = MEMBERS[a.member]
    member, sparse_kernel = getattr(adagrad, class_name), getattr(kernels, kernel_name)
    batches, offsets, _ = make_batches(a.dist, a, a.seed + 1 + (a.dist == "zipf"))
    ids = batches[0]
    emb = torch.nn.EmbeddingBag(a.rows, a.dim, mode="sum", sparse=True)
    opt = member(emb.parameters(), lr=0.01)
    emb(ids, offsets).sum().backward()
    grad = emb.weight.grad
    opt.step()  # creates state, compiles
    group = opt.param_groups[0]
    state = opt.state[emb.weight]
    sp = sparse_rows(emb.weight.detach(), grad)
    distinct = int(torch.unique(sp.indices).numel())
    table_sum = state["sum"].view(sum_shape(a.rows, a.dim))
    rule = StepRule(lr=0.01, eps=1e-10)
    bag_grad = torch.ones(a.bags, a.dim)
    bag_of = torch.arange(ids.numel()) // a.ids_per_bag

    def kernel(i):  # the public kernel entry
        sparse_kernel(sp.table, table_sum, sp.indices, sp.values, rule, RowClocks())

    def fused_kernel(i):
        sparse_kernel(sp.table, table_sum, ids, bag_grad, rule, RowClocks(), bag_of)

    emb2 = torch.nn.EmbeddingBag(a.rows, a.dim, mode="sum", sparse=True)

    def fwdbwd(i):
        emb2.weight.grad = None
        emb2(ids, offsets).sum().backward()

    fused = adagrad.nn.EmbeddingBag(a.rows, a.dim, mode="sum")
    fused.update_in_backward(member(fused.parameters(), lr=0.01))

    cands = {
        "step": lambda i: opt.step(),
        "check_grad": lambda i: opt._check_grad(emb.weight, group),
        "sparse_rows": lambda i: sparse_rows(emb.weight.detach(), grad),
        "kernel": kernel,
        "fused kernel": fused_kernel,
        "torch-coalesce": lambda i: grad.coalesce(),
        "fwd+bwd": fwdbwd,
        "fused fwd+bwd": lambda i: fused(ids, offsets).sum().backward(),
    }
    times = time_alternating(cands, a.reps, a.warmup, log=False)
    print(f"# profile of adagrad.{class_name} sparse step: {a.dist}, V={a.rows:,} D={a.dim}, "
          f"nnz={ids.numel():,}, distinct rows={distinct:,}; threads={a.threads} "
          f"(numba {numba.get_num_threads()}, layer {numba.threading_layer()}, "
          f"torch {torch.get_num_threads()})")
    step = median_ms(times["step"])
    print(format_table(["part", "median ms", "% of step"],
                       [[n, f"{median_ms(t):.2f}", f"{100 * median_ms(t) / step:.0f}"]
                        for n, t in times.items()]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
