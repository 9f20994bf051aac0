"""Shared kernel machinery: the frozen rule tuples (`rule`), the numba element-wise
helpers (`elementwise`), the sparse row engine (`sparse_cpu`), the lazy-decay clocks and
their catch-up (`clocks`, `catch_up_cpu`), bags of ids (`bags`), the device dispatch
(`cuda_dispatch`), what the element-wise Triton kernels share (`triton_launch`) and the
deprecated index of the members' Triton kernels by name (`triton_members`; each lives in
its member's package, where the dispatch takes it)."""
