"""Dense step (targets: benchmarks/README.md, "Targets"; issue 2, item 7; issue 21).

Ten float32 tensors of 1,000,000 elements with dense gradients (set once beforehand); only
``step()`` is timed. ``--small``: 200 tensors of 1,000 elements instead (``--tensors`` and
``--numel`` still choose), where the step is per-tensor overhead rather than memory
traffic (results/dense_step_small.json). Anchor: ``torch.optim.Adagrad(fused=True)``.
Every row is timed against it; the ``kernel`` column says which kernel the row's step runs:

  torch-fused          torch.optim.Adagrad(fused=True), the anchor       torch fused
  torch-foreach        torch.optim.Adagrad(foreach=True), context        torch foreach
  torch-single-tensor  torch.optim.Adagrad() (its CPU default), context  torch single-tensor
  adagrad-torch-config adagrad.Adagrad() with torch's arguments; on CPU tensors of
                       >= 65,536 elements it hands them to torch's fused kernel
                       (Adagrad._is_torch_fused_case), so this row times torch's kernel
                       plus our per-step overhead; smaller ones take our batched serial
                       numba kernel (one call for all, dense_adagrad_batch_).
                       Target: within 1.02x of torch fused (speed >= 0.98)  torch fused
  numba-torch-config   the same configuration on our numba kernels, called directly
                       (kernels.adagrad.cpu.dense_adagrad_batch_ on all tensors, with the
                       StepRule adagrad.Adagrad builds): what our own kernels do on
                       torch's case, held to >= 0.95                      numba
  adagrad-eps-inside   eps_placement="inside"                       } each within 1.05x of
  adagrad-decoupled    decoupled_weight_decay=True, weight_decay=0.01} torch fused (speed
  adagrad-rho0.9       accumulator_decay=0.9                          } >= 0.952)  numba,
                       all of a step's tensors in one call (dense_adagrad_batch_)
  torch-fused-bf16     torch fused on bf16 parameters, context (its bf16 `sum` stalls at
                       256)                                               torch fused
  adagrad-bf16         bf16 parameters, float32 state (our default for bf16), within 1.25x
                       of torch fused (the "Targets"); it moves 14 B/element against
                       the float32 anchor's 20 and torch-fused-bf16's 10  numba

The kernel of an adagrad.Adagrad row is read from its own dispatch rules, not assumed.
Candidates alternate round by round; medians of --reps after --warmup. After timing, the
numba-torch-config parameters are compared with torch-fused's (same start, same number of
steps).

    bash benchmarks/setup_env.sh && .venv-bench/bin/python benchmarks/dense_step.py

(also runs in the project's .venv: it needs no FBGEMM).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
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
TORCH_CONFIG_TARGET = 1 / 1.02  # our per-step overhead on torch's own configuration
EXTRAS_TARGET = 1 / 1.05  # the extras move the same bytes as torch's fused kernel
ANCHOR = "torch-fused"
TORCH_FUSED = "torch fused"
TORCH_FOREACH = "torch foreach"
TORCH_SINGLE = "torch single-tensor"
PORTABLE = "torch-ops portable (adagrad.kernels.portable)"


@dataclass
class Candidate:
    key: str  # JSON key and progress-log name
    label: str  # what the row runs, as printed
    make: Callable[[], object]  # a fresh runner: .step() and .state, as an optimizer
    kernel: str | Callable[[object], str]  # the kernel its step runs, or how to find out
    target: float | None = None  # minimum speed vs the anchor, from benchmarks/README.md, "Targets"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Dense Adagrad step benchmark")
    p.add_argument("--small", action="store_true",
                   help="200 tensors of 1,000 elements (defaults of --tensors, --numel)")
    p.add_argument("--tensors", type=int, default=None, help="10; 200 with --small")
    p.add_argument("--numel", type=int, default=None, help="1,000,000; 1,000 with --small")
    p.add_argument("--reps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=3)
    add_thread_args(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-single-tensor", action="store_true",
                   help="skip torch's slow single-tensor path (context only)")
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", default=None,
                   help="results/NAME.json ('' = none); dense_step or dense_step_small")
    a = p.parse_args(argv)
    if a.tensors is None:
        a.tensors = 200 if a.small else 10
    if a.numel is None:
        a.numel = 1_000 if a.small else 1_000_000
    if a.json is None:
        a.json = "dense_step_small" if a.small else "dense_step"
    if a.quick:
        a.reps, a.warmup = 10, 2
        if not a.small:
            a.numel = 100_000
    return a


# -- candidates ----------------------------------------------------------------------

def param_factory(a) -> Callable:
    """``params(dtype)``: fresh copies of the same tensors, each with its gradient set."""
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

    return params


def numba_label(numel: int, how: str = "adagrad.kernels.adagrad.cpu") -> str:
    from adagrad.kernels.engine.elementwise import PARALLEL_MIN_ELEMENTS

    threads = "parallel" if numel >= PARALLEL_MIN_ELEMENTS else "serial"
    return f"numba {threads} ({how})"


def adagrad_kernel(opt) -> str:
    """The kernel adagrad.Adagrad's dense step runs on this row's tensors, by the rules of
    `Adagrad._step_group` and `kernels.dense_adagrad_` (read after the first step)."""
    from adagrad.kernels.adagrad import cpu as dense_cpu
    from adagrad.optim.adagrad import group_rule

    group = opt.param_groups[0]
    param = group["params"][0]
    state_sum, step = opt.state[param]["sum"], opt.state[param]["step"]
    if type(opt)._is_torch_fused_case(param, state_sum, group_rule(group)):
        return f"{TORCH_FUSED} (handed off)"
    if not group["differentiable"] and dense_cpu.batch_supports(param, param.grad, state_sum,
                                                               step):
        return numba_label(param.numel(), "batched, adagrad.kernels.adagrad.cpu."
                                          "dense_adagrad_batch_")
    if group["differentiable"] or not dense_cpu.supports(param, param.grad, state_sum):
        return PORTABLE
    return numba_label(param.numel())


class NumbaKernelRunner:
    """torch's configuration on our numba kernels, bypassing adagrad.Adagrad's hand-off to
    torch: `kernels.adagrad.cpu.dense_adagrad_batch_` on all tensors at once (what
    adagrad.Adagrad runs for every other configuration) with the `StepRule` that
    adagrad.Adagrad builds for the step (`_step_rule` on its own resolved param group)."""

    def __init__(self, params, **hyperparameters):
        import torch

        import adagrad
        from adagrad.kernels.adagrad import cpu as dense_cpu

        self.group = adagrad.Adagrad(params, **hyperparameters).param_groups[0]
        self.state = {p: {"sum": torch.full_like(p.detach(),
                                                 self.group["initial_accumulator_value"]),
                          "step": torch.tensor(0.0)}
                      for p in self.group["params"]}
        for p, st in self.state.items():
            if not dense_cpu.batch_supports(p, p.grad, st["sum"], st["step"]):
                raise TypeError(f"numba kernel does not take {p.dtype} tensors here")
        self.steps = 0

    def step(self) -> None:
        from adagrad.kernels.adagrad import cpu as dense_cpu
        from adagrad.optim.adagrad import _step_rule

        self.steps += 1
        rule = _step_rule(self.group, float(self.group["lr"]), self.steps)
        params = list(self.state)
        dense_cpu.dense_adagrad_batch_(params, [p.grad for p in params],
                                       [st["sum"] for st in self.state.values()],
                                       [st["step"] for st in self.state.values()], rule)


def torch_candidates(a, params) -> list[Candidate]:
    import torch

    Adagrad = torch.optim.Adagrad
    rows = [
        Candidate(ANCHOR, "torch.optim.Adagrad(fused=True), anchor",
                  lambda: Adagrad(params(), lr=LR, fused=True), TORCH_FUSED),
        Candidate("torch-foreach", "torch.optim.Adagrad(foreach=True)",
                  lambda: Adagrad(params(), lr=LR, foreach=True), TORCH_FOREACH),
    ]
    if not a.no_single_tensor:
        rows.append(Candidate("torch-single-tensor", "torch.optim.Adagrad() default",
                              lambda: Adagrad(params(), lr=LR), TORCH_SINGLE))
    return rows


def adagrad_candidates(a, params) -> list[Candidate]:
    import adagrad

    Ours = adagrad.Adagrad
    return [
        Candidate("adagrad-torch-config", "adagrad.Adagrad(), torch config",
                  lambda: Ours(params(), lr=LR), adagrad_kernel, TORCH_CONFIG_TARGET),
        Candidate("numba-torch-config", "numba kernel called directly, torch config",
                  lambda: NumbaKernelRunner(params(), lr=LR),
                  numba_label(a.numel, "batched, adagrad.kernels.adagrad.cpu."
                                       "dense_adagrad_batch_"), 0.95),
        Candidate("adagrad-eps-inside", 'adagrad.Adagrad(eps_placement="inside")',
                  lambda: Ours(params(), lr=LR, eps_placement="inside"), adagrad_kernel, EXTRAS_TARGET),
        Candidate("adagrad-decoupled", "adagrad.Adagrad(decoupled_weight_decay, wd=0.01)",
                  lambda: Ours(params(), lr=LR, weight_decay=0.01,
                               decoupled_weight_decay=True), adagrad_kernel, EXTRAS_TARGET),
        Candidate("adagrad-rho0.9", "adagrad.Adagrad(accumulator_decay=0.9)",
                  lambda: Ours(params(), lr=LR, accumulator_decay=0.9), adagrad_kernel, EXTRAS_TARGET),
    ]


def bf16_candidates(params, with_adagrad: bool) -> list[Candidate]:
    import torch

    rows = [Candidate("torch-fused-bf16", "torch.optim.Adagrad(fused=True), bf16 params+state",
                      lambda: torch.optim.Adagrad(params(torch.bfloat16), lr=LR, fused=True),
                      TORCH_FUSED)]
    if with_adagrad:
        import adagrad

        rows.append(Candidate("adagrad-bf16", "adagrad.Adagrad(), bf16 params, float32 state",
                              lambda: adagrad.Adagrad(params(torch.bfloat16), lr=LR),
                              adagrad_kernel, 0.8))
    return rows


def adagrad_importable() -> bool:
    try:
        import adagrad  # noqa: F401
    except Exception as exc:
        print(f"note: adagrad not benchmarked: {type(exc).__name__}: {exc}", file=sys.stderr)
        return False
    return True


def build_candidates(a, params) -> list[Candidate]:
    with_adagrad = adagrad_importable()
    return (torch_candidates(a, params) + (adagrad_candidates(a, params) if with_adagrad else [])
            + bf16_candidates(params, with_adagrad))


def start_runners(candidates: list[Candidate]) -> tuple[dict[str, object], dict[str, str]]:
    """Build each runner and take one step (lazily created state exists, the JIT warms);
    returns the runners that worked and an error message for each that did not."""
    runners, errors = {}, {}
    for c in candidates:
        try:
            runner = c.make()
            runner.step()
            runners[c.key] = runner
        except Exception as exc:
            errors[c.key] = f"{type(exc).__name__}: {exc}"
            print(f"note: {c.key} unavailable: {errors[c.key]}", file=sys.stderr)
    return runners, errors


# -- timing and results --------------------------------------------------------------

def print_header(a, info: dict) -> None:
    print(f"# Dense step: {a.tensors} tensors x {a.numel:,} elements, only step() timed; "
          f"{a.threads} threads (OMP_WAIT_POLICY={info['omp_wait_policy']}); medians of "
          f"{a.reps} reps after {a.warmup} warm-up, alternating")
    print(f"# {info['date']}  {info['cpu']}  torch {info['torch']}  numba {info.get('numba', '-')}")


def time_runners(runners: dict[str, object], a) -> dict[str, list[float]]:
    steps = {key: (lambda i, r=runner: r.step()) for key, runner in runners.items()}
    return time_alternating(steps, a.reps, a.warmup)


def kernel_of(candidate: Candidate, runner) -> str:
    if isinstance(candidate.kernel, str):
        return candidate.kernel
    try:
        return candidate.kernel(runner)
    except Exception as exc:  # the library's internals moved: say so rather than guess
        return f"? ({type(exc).__name__})"


def verdict(speed: float, paired: float, target: float | None) -> str:
    if target is None:
        return ""
    return ("MISS", "borderline", "PASS")[(speed >= target) + (paired >= target)]


def summarize(candidates, runners, times, n_elements: int) -> dict[str, dict]:
    """One result row per runner: its kernel, median, speed vs the anchor, verdict."""
    anchor_ms = median_ms(times[ANCHOR])
    rows = {}
    for c in candidates:
        if c.key not in runners:
            continue
        ms = median_ms(times[c.key])
        speed, paired = anchor_ms / ms, paired_ratio(times[ANCHOR], times[c.key])
        rows[c.key] = {"label": c.label, "kernel": kernel_of(c, runners[c.key]),
                       "median_ms": ms, "anchor": ANCHOR, "speed_vs_anchor": speed,
                       "paired_speed_vs_anchor": paired, "target": c.target,
                       "verdict": verdict(speed, paired, c.target),
                       "state_bytes_per_param": state_bytes(runners[c.key]) / n_elements,
                       "times_s": times[c.key]}
    return rows


def result_table(rows: dict[str, dict], n_elements: int) -> str:
    headers = ["row", "kernel", "ms", "G el/s", "torch fused / row (speed)", "paired",
               "target", "state B/param"]
    body = [[r["label"], r["kernel"], f"{r['median_ms']:.2f}",
             f"{n_elements / r['median_ms'] / 1e6:.2f}", f"{r['speed_vs_anchor']:.3f}",
             f"{r['paired_speed_vs_anchor']:.3f}",
             "-" if r["target"] is None else f">= {r['target']:.2f} {r['verdict']}",
             f"{r['state_bytes_per_param']:.2f}"] for r in rows.values()]
    return format_table(headers, body)


def numba_vs_torch_fused(runners) -> float | None:
    """max |θ_numba - θ_fused| / max |θ_fused| after the same steps from the same start."""
    if "numba-torch-config" not in runners:
        return None
    ours = [p.detach() for p in runners["numba-torch-config"].group["params"]]
    fused = [p.detach() for p in runners[ANCHOR].param_groups[0]["params"]]
    diff = max(float((p - q).abs().max()) for p, q in zip(ours, fused))
    return diff / max(float(q.abs().max()) for q in fused)


def print_report(rows, errors, parity, n_elements: int) -> None:
    print()
    print(result_table(rows, n_elements))
    print("\nspeed = torch fused median / row median (>1 = faster than torch fused); "
          "'paired' = median over rounds of the same ratio; >= 0.952 means within 1.05x, >= 0.80 within 1.25x; "
          "PASS needs both estimates to meet the target, 'borderline' one.")
    if parity is not None:
        print(f"numba kernel vs torch fused on torch config, parameters after the run: "
              f"max |diff| / max |param| = {parity:.1e}")
    if errors:
        print("unavailable: " + "; ".join(f"{k}: {v}" for k, v in errors.items()))


def write_results(a, info, rows, errors, parity) -> None:
    if not a.json:
        return
    path = write_json(a.json, {"config": vars(a), "machine": info, "rows": rows,
                               "numba_vs_torch_fused_max_rel_diff": parity, "errors": errors})
    print(f"(results written to {os.path.relpath(path)})")


def main(argv=None) -> int:
    a = parse_args(argv)
    set_threads(a.threads, a.omp_wait_policy)
    candidates = build_candidates(a, param_factory(a))
    runners, errors = start_runners(candidates)
    info = machine_info(a.threads)
    print_header(a, info)
    times = time_runners(runners, a)
    n_elements = a.tensors * a.numel
    rows = summarize(candidates, runners, times, n_elements)
    parity = numba_vs_torch_fused(runners)
    print_report(rows, errors, parity, n_elements)
    write_results(a, info, rows, errors, parity)
    return 0


if __name__ == "__main__":
    sys.exit(main())
