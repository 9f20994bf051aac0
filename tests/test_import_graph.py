"""The package's imports run one way (tools/import_graph.py): no circle, no arrow up the
layers reference, kernels → optim → nn → distributed / linear / textfiles / experiments →
fit_cli → cli."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_import_graph_has_no_circle_and_no_upward_arrow():
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "import_graph.py"),
                          str(ROOT / "src")], capture_output=True, text=True)
    assert "circles: 0\n" in run.stdout and "upward arrows: 0\n" in run.stdout, run.stdout
    assert run.returncode == 0


def test_import_graph_sees_a_circle_and_an_upward_arrow(tmp_path):
    """The script is not blind: a planted circle and an arrow up are reported, exit 1."""
    package = tmp_path / "adagrad"
    (package / "optim").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "optim" / "__init__.py").write_text("")
    (package / "optim" / "a.py").write_text("from adagrad.optim import b\n")
    (package / "optim" / "b.py").write_text("def f():\n    import adagrad.optim.a\n")
    (package / "kernels.py").write_text("from adagrad.optim.a import x\n")
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "import_graph.py"),
                          str(tmp_path)], capture_output=True, text=True)
    assert run.returncode == 1
    assert "optim.a <-> optim.b" in run.stdout
    assert "kernels -> optim.a" in run.stdout
