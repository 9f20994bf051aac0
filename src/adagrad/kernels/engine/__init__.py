"""Shared kernel machinery: the frozen rule tuples (`rule`), the numba element-wise
helpers (`elementwise`), the sparse row engine (`sparse_cpu`), the lazy-decay clocks and
their catch-up (`clocks`, `catch_up_cpu`), bags of ids (`bags`) and the device dispatch
(`cuda_dispatch`)."""
