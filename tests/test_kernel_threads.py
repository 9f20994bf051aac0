"""Starting numba's thread pool must not change torch's thread count (it would, through
OpenMP's omp_set_num_threads, without `start_thread_pool`)."""

from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = """
import torch
torch.set_num_threads(1)
from adagrad import Adagrad
dense = torch.zeros(1 << 17, requires_grad=True)
table = torch.nn.Embedding(1000, 64, sparse=True)
optimizer = Adagrad([dense, table.weight], eps_placement="inside")
dense.grad = torch.ones_like(dense)
table(torch.randint(0, 1000, (4096,))).sum().backward()
optimizer.step()
assert torch.get_num_threads() == 1, torch.get_num_threads()
"""


def test_parallel_kernels_keep_torch_thread_count():
    env = dict(os.environ, NUMBA_NUM_THREADS="2")
    result = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
