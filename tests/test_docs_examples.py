"""The documentation's examples run as written: every ```python block of the site's pages
(each page's blocks in order, in one namespace, as a reader would paste them), the examples
in the public docstrings (doctest), and the specific outcomes the guides state about their
examples. Blocks written as ```{code-block} python are illustrations (they need data or
several processes) and are not run here; the gallery scripts run when the site is built."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PUBLIC_PACKAGES = ("adagrad.optim", "adagrad.nn", "adagrad.linear", "adagrad.distributed")


def _pages() -> list[Path]:
    return sorted(p for p in DOCS.rglob("*.md")
                  if "_build" not in p.parts and "auto_examples" not in p.parts)


def _blocks(page: Path) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", page.read_text(encoding="utf-8"), re.S | re.M)


def _run_page(page: Path) -> dict:
    namespace: dict = {"__name__": "__docs__"}
    for number, block in enumerate(_blocks(page), 1):
        exec(compile(block, f"{page.relative_to(ROOT)} (python block {number})", "exec"), namespace)
    return namespace


PAGES_WITH_CODE = [p for p in _pages() if _blocks(p)]


def test_the_guides_have_runnable_examples():
    names = {p.relative_to(DOCS).as_posix() for p in PAGES_WITH_CODE}
    assert {"index.md", "guides/installation.md", "guides/porting.md", "guides/sparse.md",
            "guides/family.md", "guides/linear.md"} <= names


@pytest.mark.filterwarnings("ignore:Sparse invariant checks")
@pytest.mark.parametrize("page", PAGES_WITH_CODE, ids=lambda p: p.relative_to(DOCS).as_posix())
def test_page_examples_run(page):
    _run_page(page)


def _public_modules() -> list[str]:
    names = ["adagrad"]
    for package in PUBLIC_PACKAGES:
        module = importlib.import_module(package)
        names.append(package)
        names += [info.name for info in pkgutil.iter_modules(module.__path__, package + ".")]
    return names


def test_docstring_examples_run():
    """Every ``>>>`` example in the public packages' docstrings gives the output it shows."""
    finder, runner = doctest.DocTestFinder(), doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    tests = [test for name in _public_modules()
             for test in finder.find(importlib.import_module(name)) if test.examples]
    assert len(tests) >= 12, [test.name for test in tests]  # every public class has one
    for test in tests:
        runner.run(test)
    assert runner.failures == 0, f"{runner.failures} docstring examples failed (output above)"


# -- the outcomes the sparse-embeddings and family guides state about their examples ----------


def _examples(page: str) -> list[str]:
    return _blocks(DOCS / "guides" / page)


@pytest.mark.filterwarnings("ignore:Sparse invariant checks")
@pytest.mark.parametrize("number", range(2))
def test_sparse_embeddings_example_runs(number):
    examples = _examples("sparse.md")
    assert len(examples) == 2
    namespace: dict = {}
    exec(compile(examples[number], f"docs/guides/sparse.md (example {number + 1})", "exec"), namespace)
    table, optimizer = namespace["table"], namespace["optimizer"]
    state = optimizer.state[table.weight]
    assert state["step"] == 1 and state["sum"].count_nonzero() > 0


@pytest.mark.filterwarnings("ignore:Sparse invariant checks")
def test_family_example_runs():
    """The row-wise table: one step in backward, one float32 accumulator per row."""
    (example,) = _examples("family.md")
    namespace: dict = {}
    exec(compile(example, "docs/guides/family.md (example)", "exec"), namespace)
    table, optimizer = namespace["table"], namespace["optimizer"]
    state = optimizer.state[table.weight]
    assert state["step"] == 1
    assert state["sum"].shape == (1_000_000,) and state["sum"].dtype == table.weight.dtype
    assert int(state["sum"].count_nonzero()) == 5
