"""The report folder: checked before any training, staged beside its final place, moved into
place at the end, so an interrupted run never leaves a half report under ``--out``."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from adagrad.experiments.report import MARKER


class OutputError(OSError):
    """The report folder cannot be written or would overwrite something that is not a report."""


def prepare(out: Path) -> Path:
    """Check that ``out`` can receive a report and create the staging folder beside it.

    ``out`` may not exist yet (its parents are created), or be an empty folder, or hold a
    previous report of this command (it is replaced at the end). Anything else is refused.

    Returns:
      The staging folder (a hidden sibling of ``out``); pass it to `publish` or `discard`.

    Raises:
      OutputError: with a message naming the folder and the reason.
    """
    out = out.expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise OutputError(f"cannot write the report to {out}: it exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise OutputError(f"refusing to write the report to {out}: the folder is not empty and "
                          f"does not hold a previous adagrad report; choose another --out")
    if out.is_dir() and not os.access(out, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write the report to {out}: permission denied")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    except OSError as exc:
        raise OutputError(f"cannot write the report to {out}: {exc.strerror or exc}") from exc
    return staging


def publish(staging: Path, out: Path) -> Path:
    """Move the finished report from ``staging`` to ``out`` (replacing a previous report)."""
    out = out.expanduser().absolute()
    if out.exists():
        backup = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, backup / out.name)
        os.replace(staging, out)
        shutil.rmtree(backup, ignore_errors=True)
    else:
        os.replace(staging, out)
    return out


def discard(staging: Path) -> None:
    """Remove an unfinished report."""
    shutil.rmtree(staging, ignore_errors=True)
