"""The norm member's kernels: `cpu` (numba), `torch_ops` (any device), `triton` (CUDA) where it has them."""
