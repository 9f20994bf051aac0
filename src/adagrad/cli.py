"""The `adagrad` command line.

Each command's module is imported only when that command runs: `adagrad --help` lists the
commands from `COMMANDS` alone, and `adagrad fit` never imports what `adagrad compare`
needs (nor the reverse).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import sys

from adagrad import __version__

#: command → (the module and the name of the function that adds it, with its arguments,
#: to the subcommands; the one-line help `adagrad --help` shows)
COMMANDS = {
    "compare": ("adagrad.experiments.cli", "add_compare_command",
                "compare Adagrad with its family, SGD, RMSprop, Adadelta, Adam and "
                "learning-rate-free optimizers on real data; write a report"),
    "fit": ("adagrad.fit_cli", "add_fit_commands", "train a linear model on a file"),
    "predict": ("adagrad.fit_cli", "add_fit_commands", "predict with a model from adagrad fit"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser, with the arguments of ``command`` (of every command where None); the
    other commands are listed by name and help only."""
    parser = argparse.ArgumentParser(
        prog="adagrad",
        description="Adagrad for PyTorch: measure what Adagrad is commonly said to do, on real data.",
    )
    parser.add_argument("--version", action="version", version=f"adagrad {__version__}")
    subcommands = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = None if command is None else COMMANDS.get(command, (None, None))[:2]
    registered = []
    for name, (module, function, help_line) in COMMANDS.items():
        if wanted is not None and wanted != (module, function):
            subcommands.add_parser(name, help=help_line)
        elif (module, function) not in registered:  # one function may add several commands
            registered.append((module, function))
            getattr(importlib.import_module(module), function)(subcommands)
    return parser


@contextlib.contextmanager
def _start_up(program: bool):
    """Where ``program``: the cyclic garbage collector off inside the block, and what the
    block made moved out of its sight after it (`gc.freeze`). Importing a command's
    modules (numba, numpy, scipy) makes hundreds of thousands of objects that live as long
    as the process; the collector would scan them again and again, during the start-up
    and in every full collection after it."""
    enabled = program and gc.isenabled()
    if enabled:
        gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.freeze()
            gc.enable()


def main(argv: list[str] | None = None) -> int:
    """Run the command of ``argv`` (``sys.argv[1:]`` where None: the `adagrad` program,
    whose process ends with this call)."""
    program = argv is None
    argv = sys.argv[1:] if program else argv
    with _start_up(program):
        parser = build_parser(argv[0] if argv and argv[0] in COMMANDS else "")  # "": names only
        args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    code = args.run(args)
    if program:
        # The process exits next, and Python's shutdown runs full collections over every
        # object the command made (numba's compiler target, the loaded kernels: 0.2-0.3 s
        # of CPU on a 2-core machine). None needs collecting: files are closed, and the
        # output is flushed at exit all the same.
        gc.freeze()
    return code


if __name__ == "__main__":
    sys.exit(main())
