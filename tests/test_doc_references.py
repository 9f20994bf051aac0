"""Every reference from the code, the tests, the README and the benchmarks to the
documentation points to something that exists: a MyST target label of a page under
``docs/`` (``:ref:`algo-rowwise``` in docstrings, ``algo-rowwise`` in prose), a file of
the docs folder, or a heading of ``benchmarks/README.md``. Citations of the old project notes
(the spec files outside the repository, or a bare section sign) are refused."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SCANNED = ("src", "tests", "benchmarks", "examples", "docs", "tools")
SUFFIXES = {".py", ".md", ".sh", ".rst", ".txt"}

LABEL = re.compile(r"^\(([A-Za-z0-9_.:-]+)\)=\s*$", re.MULTILINE)
ROLE = re.compile(r"(?::ref:|\{ref\})`(?:[^`<]*<)?([^`<>]+?)>?`")
ALGO = re.compile(r"\balgo-[a-z0-9]+(?:-[a-z0-9]+)*\b")
DOC_PATH = re.compile(r"\bdocs/[A-Za-z0-9_/.-]+?\.md\b")
BENCH_SECTION = re.compile(r'benchmarks/README\.md, "([^"]+)"')
# written in pieces so that this file does not match itself
OLD_NOTES = re.compile("|".join(("ALGORITHMS" + r"\.md", "DESIGN" + r"\.md", "DATA" + r"\.md",
                                 "BENCHMARKS" + r"\.md", "\u00a7")))


def _files() -> list[Path]:
    files = sorted(ROOT.glob("*.md"))  # README, CONTRIBUTING, CHANGELOG
    for top in SCANNED:
        files += [p for p in sorted((ROOT / top).rglob("*"))
                  if p.suffix in SUFFIXES and p.is_file() and "_build" not in p.parts
                  and "auto_examples" not in p.parts and "generated" not in p.parts]
    return files


def _labels() -> set[str]:
    """MyST targets of the pages, and the labels sphinx-gallery gives each example script."""
    labels: set[str] = set()
    for page in DOCS.rglob("*.md"):
        if "_build" not in page.parts and "auto_examples" not in page.parts:
            labels.update(LABEL.findall(page.read_text(encoding="utf-8")))
    labels.update(f"sphx_glr_auto_examples_{script.name}" for script in (ROOT / "examples").glob("*.py"))
    return labels


def _occurrences(pattern: re.Pattern[str]) -> list[tuple[str, int, str]]:
    found = []
    for path in _files():
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for match in pattern.finditer(line):
                found.append((str(path.relative_to(ROOT)), number, match.group(match.lastindex or 0)))
    return found


def test_the_algorithms_page_has_a_section_per_member_and_for_the_semantics():
    labels = _labels()
    expected = {"algo-notation", "algo-adagrad", "algo-conventions", "algo-sparse", "algo-rowwise",
                "algo-proximal", "algo-dual-averaging", "algo-ftrl", "algo-norm", "algo-full-matrix",
                "algo-relatives", "algo-dog", "algo-references"}
    assert expected <= labels, sorted(expected - labels)


def test_no_reference_to_notes_outside_the_repository():
    assert _occurrences(OLD_NOTES) == []


@pytest.mark.parametrize("pattern", [ROLE, ALGO], ids=["ref-role", "prose-label"])
def test_every_label_reference_resolves(pattern):
    found = _occurrences(pattern)
    assert len(found) > 20, "the scan found almost no references: is the pattern broken?"
    labels = _labels()
    assert [hit for hit in found if hit[2] not in labels] == []


def test_every_docs_path_exists():
    found = _occurrences(DOC_PATH)
    assert found
    assert [hit for hit in found if not (ROOT / hit[2]).is_file()] == []


def test_every_benchmarks_section_exists():
    found = _occurrences(BENCH_SECTION)
    assert found
    headings = {line.lstrip("#").strip() for line in
                (ROOT / "benchmarks" / "README.md").read_text(encoding="utf-8").splitlines()
                if line.startswith("#")}
    assert [hit for hit in found if hit[2] not in headings] == []
