"""benchmarks/gpu.py runs end to end (issue 13): its --smoke mode, tiny sizes on the CPU
with the CUDA paths in Triton's interpreter, exits 0 (every parity case within tolerance)
and writes its JSON and Markdown. Slow: it times every candidate once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_triton_gpu_benchmark_smoke_runs_and_passes_parity():
    pytest.importorskip("triton")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "TRITON_INTERPRET": "1"}
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--smoke"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    payload = json.loads((ROOT / "benchmarks" / "results" / "gpu-smoke.json").read_text())
    kernels = {row["kernel"] for row in payload["parity"]}
    assert {"triton", "foreach", "triton_sparse"} <= kernels
    assert all(row["error"] <= 1 for row in payload["parity"])
    assert "## Sparse" in (ROOT / "benchmarks" / "results" / "gpu-smoke.md").read_text()
