"""Start-up of the command line: `adagrad --help` and `adagrad fit` on a tiny file (four
lines of text), each a fresh process timed from start to exit, warm (the numba cache of
the fit kernels filled, files in the page cache); and which heavy packages each imports.

    python benchmarks/startup.py                       # this checkout's adagrad
    python benchmarks/startup.py --src OLD/src NEW/src # two source trees, alternating

Each command runs ``--reps`` times per source tree (after one untimed warm-up run that
fills the numba cache), the trees alternating; the medians of wall time and of CPU time
(user + sys of the child) are printed. The heavy imports are read from ``sys.modules``
at exit.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEAVY = ("torch", "sklearn", "scipy.sparse", "numba", "pandas", "matplotlib")
TINY = "pos\tgood movie\nneg\tbad film\npos\tgreat fun\nneg\tawful boring\n"
PROBE = ("import runpy, sys\nsys.argv = ['adagrad', *sys.argv[1:]]\n"
         "try:\n    runpy.run_module('adagrad.cli', run_name='__main__')\n"
         "except SystemExit:\n    pass\n"
         "print('HEAVY', *[m for m in {heavy!r} if m in sys.modules], file=sys.stderr)\n")


def run(src: str | None, args: list[str], folder: str) -> tuple[float, float, list[str]]:
    """(wall s, CPU s, heavy modules imported) of one ``adagrad ARGS`` process."""
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = os.pathsep.join([src, *filter(None, [env.get("PYTHONPATH")])])
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY), *args], env=env,
                          cwd=folder, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    heavy = next(line.split()[1:] for line in done.stderr.splitlines()
                 if line.startswith("HEAVY"))
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, heavy


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", nargs="+", default=[None], metavar="DIR",
                        help="source trees to put first on PYTHONPATH (default: as installed)")
    parser.add_argument("--reps", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="adagrad-startup-") as folder:
        tiny = Path(folder, "tiny.tsv")
        tiny.write_text(TINY)
        commands = {"adagrad --help": ["--help"],
                    "adagrad fit (4 lines)": ["fit", str(tiny), "-o", str(Path(folder, "m.npz"))]}
        times = {(src, name): [] for src in args.src for name in commands}
        heavy = {}
        for src in args.src:  # warm-up: the numba cache, the page cache
            for command in commands.values():
                run(src, command, folder)
        for _ in range(args.reps):
            for src in args.src:
                for name, command in commands.items():
                    wall, cpu, imported = run(src, command, folder)
                    times[src, name].append((wall, cpu))
                    heavy[src, name] = imported
    print("| source | command | wall s (median) | CPU s (median) | heavy imports |")
    print("|---|---|---|---|---|")
    for (src, name), samples in times.items():
        print(f"| {src or 'installed'} | {name} | {statistics.median(w for w, _ in samples):.3f} | "
              f"{statistics.median(c for _, c in samples):.3f} | "
              f"{', '.join(heavy[src, name]) or 'none'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
