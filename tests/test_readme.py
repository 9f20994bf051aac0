"""The README's "Sparse embeddings" examples run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _sparse_examples() -> list[str]:
    text = README.read_text()
    section = text[text.index("## Sparse embeddings"):]
    section = section[:section.index("\n## ", 1)]
    return re.findall(r"```python\n(.*?)```", section, re.S)


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
