"""The fast paths: interchangeable implementations of the reference rules.

Each kernel takes the tensors of one parameter and a `StepRule` and updates in place:

- `dense_adagrad_(param, grad, state_sum, rule)`: :ref:`algo-adagrad`.
- `sparse_adagrad_(param, state_sum, indices, values, rule, clocks, value_of, scale)`: :ref:`algo-sparse`
  on a ``(rows, D)`` table, duplicates summed, lazy decay caught up through `RowClocks`.
- `catch_up_rows_(param, state_sum, rows, clocks)`: :ref:`algo-sparse`'s lazy decay of some rows brought
  up to date, as a fused layer's lookup needs; `flush_rows_` does it for every row.
- `dense_ftrl_(param, grad, z, n, rule)` and `sparse_ftrl_(param, z, n, indices, values,
  rule, value_of, scale)`: FTRL-Proximal, :ref:`algo-ftrl` (`FtrlRule`), dense and on table rows.
- `dense_rowwise_adagrad_(param, grad, state_sum, rule)` and
  `sparse_rowwise_adagrad_(param, state_sum, indices, values, rule, clocks, value_of,
  scale)`: row-wise Adagrad (:ref:`algo-rowwise`), one accumulator per row.
- `dense_proximal_`, `sparse_proximal_`, `catch_up_proximal_rows_`: :ref:`algo-proximal` (`ProximalRule`),
  dense, on a table's rows, and the lazy catch-up of untouched rows.
- `dense_dual_averaging_`, `sparse_dual_averaging_`, `dual_averaging_weights_of_rows_`,
  `dual_averaging_weights_`: :ref:`algo-dual-averaging` (`DualAveragingRule`), dense, on a table's rows, and θ
  of some rows or of all recomputed from their sums (the lazy catch-up).

The dispatchers here pick the numba CPU kernel (`dense_cpu`, `sparse_cpu`) where it
applies and the torch-ops kernel (`portable`) everywhere else (fp16, autograd); on CUDA,
`cuda_dispatch` chooses between torch's fused kernel, Triton (`triton_dense`,
`triton_sparse`) and foreach or torch ops (`foreach_dense`, `portable`). Both
are public so that tests can hold each to the reference.
"""

from __future__ import annotations

import importlib
import importlib.util

__all__ = ["DualAveragingRule", "FtrlRule", "ProximalRule", "RowClocks", "StepRule",
           "catch_up_proximal_rows_", "catch_up_rows_", "dense_adagrad_",
           "dense_dual_averaging_", "dense_ftrl_", "dense_proximal_", "dense_rowwise_adagrad_",
           "dual_averaging_weights_", "dual_averaging_weights_of_rows_", "flush_rows_",
           "sparse_adagrad_", "sparse_dual_averaging_", "sparse_ftrl_", "sparse_proximal_",
           "sparse_rowwise_adagrad_"]

# The dispatchers (`dispatch`) and the kernels need torch: they are imported on first use
# (PEP 562), so that `adagrad fit` imports the torch-free pieces of this package (the rules
# of `engine.rule`, the per-coordinate bodies of `adagrad.coordinate`,
# `proximal.coordinate`, `ftrl.coordinate`, `engine.splitmix`) without torch.

# The flat modules of 0.x, by their new place (one release with a DeprecationWarning):
# ``from adagrad.kernels import dense_cpu`` and ``adagrad.kernels.dense_cpu`` still work;
# the statement ``import adagrad.kernels.dense_cpu`` does not (a module can alias an
# attribute, not a submodule, without a second copy of each module).
_MOVED = {
    "rule": "engine.rule", "elementwise": "engine.elementwise", "clocks": "engine.clocks",
    "bags": "engine.bags", "cuda_dispatch": "engine.cuda_dispatch",
    "sparse_cpu": "engine.sparse_cpu", "catch_up_cpu": "engine.catch_up_cpu",
    "triton_members": "engine.triton_members",
    "dense_cpu": "adagrad.cpu", "portable": "adagrad.torch_ops",
    "foreach_dense": "adagrad.foreach", "triton_dense": "adagrad.triton",
    "triton_sparse": "adagrad.triton_sparse",
    "rowwise_cpu": "rowwise.cpu", "rowwise_portable": "rowwise.torch_ops",
    "proximal_cpu": "proximal.cpu", "portable_proximal": "proximal.torch_ops",
    "dual_averaging_cpu": "dual_averaging.cpu",
    "portable_dual_averaging": "dual_averaging.torch_ops",
    "ftrl_cpu": "ftrl.cpu", "ftrl_portable": "ftrl.torch_ops",
    "norm_cpu": "norm.cpu", "norm": "norm.torch_ops",
    "dog_cpu": "dog.cpu", "dog": "dog.torch_ops",
    "full_matrix": "full_matrix.torch_ops",
}


def __getattr__(name: str):
    """A dispatcher or rule of `__all__` (imported on first use), a subpackage, or the old
    flat module ``name`` from its new place, with a DeprecationWarning."""
    if name in __all__:
        from adagrad.kernels import dispatch

        return getattr(dispatch, name)
    if name not in _MOVED:
        if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}"):
            return importlib.import_module(f"{__name__}.{name}")
        raise AttributeError(f"module 'adagrad.kernels' has no attribute {name!r}")
    import warnings

    new = f"adagrad.kernels.{_MOVED[name]}"
    warnings.warn(f"adagrad.kernels.{name} moved to {new}; the old path goes in the next "
                  f"release", DeprecationWarning, stacklevel=2)
    return importlib.import_module(new)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
