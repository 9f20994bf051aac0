"""The `adagrad` command line."""

from __future__ import annotations

import argparse
import sys

from adagrad import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="adagrad",
        description="Adagrad for PyTorch: measure what Adagrad is commonly said to do, on real data.",
    )
    parser.add_argument("--version", action="version", version=f"adagrad {__version__}")
    subcommands = parser.add_subparsers(dest="command", metavar="COMMAND")
    from adagrad.experiments.cli import add_compare_command

    add_compare_command(subcommands)
    from adagrad.fit_cli import add_fit_commands

    add_fit_commands(subcommands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
