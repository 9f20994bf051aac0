"""The README's examples run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _examples(heading: str) -> list[str]:
    text = README.read_text()
    section = text[text.index(heading):]
    section = section[:section.index("\n## ", 1)]
    return re.findall(r"```python\n(.*?)```", section, re.S)


def _sparse_examples() -> list[str]:
    return _examples("## Sparse embeddings")


@pytest.mark.filterwarnings("ignore:Sparse invariant checks")
@pytest.mark.parametrize("number", range(2))
def test_sparse_embeddings_example_runs(number):
    examples = _sparse_examples()
    assert len(examples) == 2
    namespace: dict = {}
    exec(compile(examples[number], f"README.md (sparse example {number + 1})", "exec"), namespace)
    table, optimizer = namespace["table"], namespace["optimizer"]
    state = optimizer.state[table.weight]
    assert state["step"] == 1 and state["sum"].count_nonzero() > 0


@pytest.mark.filterwarnings("ignore:Sparse invariant checks")
def test_family_example_runs():
    """The row-wise table: one step in backward, one float32 accumulator per row."""
    (example,) = _examples("## The family")
    namespace: dict = {}
    exec(compile(example, "README.md (family example)", "exec"), namespace)
    table, optimizer = namespace["table"], namespace["optimizer"]
    state = optimizer.state[table.weight]
    assert state["step"] == 1
    assert state["sum"].shape == (1_000_000,) and state["sum"].dtype == table.weight.dtype
    assert int(state["sum"].count_nonzero()) == 5
