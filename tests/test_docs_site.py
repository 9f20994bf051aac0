"""The site's generated parts cannot drift from the code: the API pages list every public
name of every public module, and every command-line option says what it does and its
default (the CLI page is generated from the same parsers)."""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
sys.path.insert(0, str(DOCS / "_ext"))

import api_pages  # noqa: E402

MODULES = ["adagrad", "adagrad.optim", "adagrad.nn", "adagrad.linear", "adagrad.distributed"]


def test_conf_documents_the_public_modules():
    conf = (DOCS / "conf.py").read_text()
    listed = re.search(r"api_modules = \[(.*?)\]", conf, re.S).group(1)
    assert re.findall(r'"([\w.]+)"', listed) == MODULES
    index = (DOCS / "api" / "index.md").read_text()
    assert re.findall(r"generated/module-([\w.]+)", index) == MODULES


def test_every_public_name_is_on_an_api_page():
    documented: dict[int, str] = {}
    pages = {name: api_pages.module_page(name, documented) for name in MODULES}
    for name in MODULES:
        module = importlib.import_module(name)
        public = [n for n in module.__all__ if not n.startswith("__")]
        assert public, name
        for item in public:
            assert re.search(rf"^   {item}$|``{name}.{item}`` is :py:obj:", pages[name], re.M), \
                f"{name}.{item} is on no API page"
    assert "Adagrad" in pages["adagrad"] and "adagrad.optim.Adagrad" in pages["adagrad.optim"]


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    from adagrad.cli import build_parser

    parser = build_parser()
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


@pytest.mark.parametrize("command", ["fit", "predict", "compare"])
def test_every_option_has_a_help_line_with_its_default(command):
    parser = _subcommands()[command]
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        label = "/".join(action.option_strings) or action.dest
        assert action.help and len(action.help) > 10, f"adagrad {command} {label}: no help"
        if action.option_strings and action.default not in (None, False, argparse.SUPPRESS):
            assert "default" in action.help, f"adagrad {command} {label}: help lacks its default"
