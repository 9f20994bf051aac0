#!/usr/bin/env bash
# Set up .venv-bench and run every benchmark; tables on stdout, JSON in benchmarks/results/.
#   bash benchmarks/run_all.sh            # full size (about 15 minutes on a busy 2-core box)
#   bash benchmarks/run_all.sh --quick    # small smoke run of the timing benchmarks
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash benchmarks/setup_env.sh
PY=.venv-bench/bin/python
if [ "${1:-}" = "--quick" ]; then
    # smoke run: small sizes, no JSON (keeps the full runs' results/*.json)
    $PY benchmarks/sparse_embedding.py --quick --json ""
    $PY benchmarks/dense_step.py --quick --json ""
else
    $PY benchmarks/sparse_embedding.py "$@"
    $PY benchmarks/dense_step.py "$@"
    $PY benchmarks/memory.py
fi
