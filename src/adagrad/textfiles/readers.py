"""The file formats of `adagrad fit` / `adagrad predict`, read in chunks of lines.

- svmlight / libsvm: ``label [qid:N] index:value ... [# comment]``; blank and comment-only
  lines are skipped. Feature ``index`` becomes column ``index mod 2**bits``.
- TSV: ``label<TAB>text`` (for `predict`, a line without a tab is all text).
- CSV with a header row: the label and text columns named, or guessed (`LABEL_NAMES`,
  `TEXT_NAMES`, else the first column is the label and the next the text).

`auto` decides from the extension, then from the first line. A malformed line raises
`InputError` naming the file, the line number and the offending text.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

FORMATS = ("auto", "svmlight", "tsv", "csv")
EXTENSIONS = {".svm": "svmlight", ".svmlight": "svmlight", ".libsvm": "svmlight",
              ".tsv": "tsv", ".tab": "tsv", ".csv": "csv"}
LABEL_NAMES = ("label", "labels", "class", "category", "target", "y", "score", "sentiment")
TEXT_NAMES = ("text", "review", "document", "content", "message", "sentence", "body", "tweet")
CHUNK_LINES = 50_000


class InputError(ValueError):
    """A problem with a user's file: the message names the file (and line)."""


@dataclass
class Chunk:
    """Consecutive examples of a file: labels (None where a predict line has none) and
    either texts or svmlight features (``rows``: one (columns, values) pair a line)."""

    labels: list[str | None] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)  # each example's line number
    texts: list[str] | None = None
    rows: list[tuple[np.ndarray, np.ndarray]] | None = None
    end_offset: int = 0  # bytes of the file read so far, for the progress bar

    def __len__(self) -> int:
        return len(self.labels)

    def add(self, line: int, label: str | None) -> None:
        self.lines.append(line)
        self.labels.append(label)


def detect_format(path: str) -> str:
    """The format of ``path``: from its extension, else from its first non-blank line."""
    known = EXTENSIONS.get(os.path.splitext(path)[1].lower())
    if known:
        return known
    with open(path, encoding="utf-8", errors="replace") as handle:
        first = next((line for line in handle if line.strip()), "")
    if "\t" in first:
        return "tsv"
    fields = first.split("#", 1)[0].split()
    if len(fields) > 1 and all(":" in f for f in fields[1:]):
        return "svmlight"
    if "," in first:
        return "csv"
    raise InputError(f"{path}: cannot tell the format from the first line {first.strip()[:80]!r}; "
                     "pass --format svmlight, tsv or csv")


def _error(path: str, line: int, reason: str, text: str) -> InputError:
    return InputError(f"{path}:{line}: {reason}: {text.rstrip()[:200]!r}")


def _svmlight_row(path: str, number: int, line: str, bits: int):
    """(label, columns, values) of one svmlight line, or None for a blank/comment line."""
    fields = line.split("#", 1)[0].split()
    if not fields:
        return None
    columns, values = [], []
    for item in fields[1:]:
        name, sep, value = item.partition(":")
        if item.startswith("qid:"):
            continue
        try:
            index, number_value = int(name), float(value)
        except ValueError:
            raise _error(path, number, f"malformed feature {item!r} (want index:value)",
                         line) from None
        if not sep or ":" in value or index < 0:
            raise _error(path, number, f"malformed feature {item!r} (want index:value)", line)
        if not math.isfinite(number_value):
            raise _error(path, number, f"feature {item!r} is not a finite number", line)
        columns.append(index % (1 << bits))
        values.append(number_value)
    return fields[0], np.array(columns, np.int64), np.array(values, np.float64)


def _read_svmlight(path: str, handle, bits: int, chunk_lines: int) -> Iterator[Chunk]:
    chunk = Chunk(rows=[])
    for number, line in enumerate(handle, 1):
        parsed = _svmlight_row(path, number, line, bits)
        if parsed is None:
            continue
        chunk.add(number, parsed[0])
        chunk.rows.append(parsed[1:])
        if len(chunk) >= chunk_lines:
            yield chunk
            chunk = Chunk(rows=[])
    if len(chunk):
        yield chunk


def _read_tsv(path: str, handle, chunk_lines: int, labelled: bool) -> Iterator[Chunk]:
    chunk = Chunk(texts=[])
    for number, line in enumerate(handle, 1):
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        label, tab, text = line.partition("\t")
        if not tab:
            if labelled:
                raise _error(path, number, "no tab between the label and the text", line)
            label, text = None, line
        chunk.add(number, label)
        chunk.texts.append(text)
        if len(chunk) >= chunk_lines:
            yield chunk
            chunk = Chunk(texts=[])
    if len(chunk):
        yield chunk


def _pick(header: list[str], wanted: str | None, guesses: tuple[str, ...], path: str,
          role: str, fallback: int) -> int:
    lowered = [h.strip().lower() for h in header]
    if wanted is not None:
        if wanted.lower() not in lowered:
            raise InputError(f"{path}:1: no {role} column named {wanted!r} in the header "
                             f"{header!r}")
        return lowered.index(wanted.lower())
    for guess in guesses:
        if guess in lowered:
            return lowered.index(guess)
    return fallback


def _read_csv(path: str, handle, chunk_lines: int, label_column: str | None,
              text_column: str | None) -> Iterator[Chunk]:
    reader = csv.reader(handle)
    header = next(reader, None)
    if header is None:
        return
    label_at = _pick(header, label_column, LABEL_NAMES, path, "label", 0)
    text_at = _pick(header, text_column, TEXT_NAMES, path, "text", 1 if label_at == 0 else 0)
    if text_at == label_at or text_at >= len(header):
        raise InputError(f"{path}:1: cannot tell the text column from the label column in "
                         f"the header {header!r}; pass --text-column")
    chunk = Chunk(texts=[])
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise _error(path, reader.line_num, f"{len(row)} fields where the header has "
                         f"{len(header)}", ",".join(row))
        chunk.add(reader.line_num, row[label_at])
        chunk.texts.append(row[text_at])
        if len(chunk) >= chunk_lines:
            yield chunk
            chunk = Chunk(texts=[])
    if len(chunk):
        yield chunk


def read_chunks(path: str, fmt: str, *, bits: int, label_column: str | None = None,
                text_column: str | None = None, labelled: bool = True,
                chunk_lines: int = CHUNK_LINES) -> Iterator[Chunk]:
    """The examples of ``path`` in chunks of at most ``chunk_lines``. Each chunk's
    ``end_offset`` is the file position after it (for a progress bar)."""
    if not os.path.isfile(path):
        raise InputError(f"{path}: no such file")
    fmt = detect_format(path) if fmt == "auto" else fmt
    with open(path, encoding="utf-8", errors="strict", newline="") as handle:
        try:
            if fmt == "svmlight":
                chunks = _read_svmlight(path, handle, bits, chunk_lines)
            elif fmt == "tsv":
                chunks = _read_tsv(path, handle, chunk_lines, labelled)
            else:
                chunks = _read_csv(path, handle, chunk_lines, label_column, text_column)
            for chunk in chunks:
                chunk.end_offset = _position(handle)
                yield chunk
        except UnicodeDecodeError as exc:
            raise InputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start} of a "
                             "block)") from None


def _position(handle) -> int:
    try:
        return handle.buffer.tell()
    except (OSError, AttributeError):
        return 0
