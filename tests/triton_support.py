"""Running the CUDA paths on the CPU (issue 13): Triton's interpreter, a fake device type,
a guard against host reads, and the tolerances of the kernel dtypes.

Import this module before anything imports `triton`: it turns the interpreter on
(``TRITON_INTERPRET=1``), in which Triton kernels run on CPU tensors.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

triton = pytest.importorskip("triton")

from adagrad.kernels.engine import cuda_dispatch  # noqa: E402

KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
#: relative tolerance of a result stored in each dtype (one of its ulps), with float32
#: arithmetic behind it. One ulp, not half: Triton's interpreter truncates float32 to
#: bfloat16 (even with fp_downcast_rounding="rtne"), where a GPU rounds to nearest.
RTOL = {torch.float32: 2e-6, torch.bfloat16: 2 ** -7, torch.float16: 2 ** -10,
        torch.float64: 1e-12}
ATOL = 1e-6


def fake_cuda(monkeypatch: pytest.MonkeyPatch, *, fused: bool = False,
              triton_present: bool = True) -> None:
    """Make the dispatch see every tensor as a CUDA tensor (CPU tensors then run through
    Triton's interpreter and torch's fused CPU kernel), with or without torch's fused
    kernel and Triton."""
    monkeypatch.setattr(cuda_dispatch, "device_type", lambda tensor: "cuda")
    monkeypatch.setattr(cuda_dispatch, "has_torch_fused", lambda kind: fused)
    monkeypatch.setattr(cuda_dispatch, "triton_available", lambda: triton_present)


class HostReadError(AssertionError):
    """A tensor other than the allowed host tensors was read on the host."""


_HOST_READS = ("item", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__")


@contextlib.contextmanager
def no_host_reads(monkeypatch: pytest.MonkeyPatch,
                  allowed: Callable[[torch.Tensor], bool] = lambda tensor: False):
    """Within the block, reading any tensor's value on the host (``.item()``, ``bool()``,
    ``float()``, ``.tolist()``, ``.numpy()``...) raises HostReadError, unless
    ``allowed(tensor)`` (the host-side step counters): on a GPU each such read would be a
    synchronisation."""
    with monkeypatch.context() as patch:
        for name in _HOST_READS:
            original = getattr(torch.Tensor, name)

            def guarded(self, *args, _original=original, _name=name, **kwargs):
                if not allowed(self):
                    raise HostReadError(f"host read {_name}() of a tensor of shape "
                                        f"{tuple(self.shape)}")
                return _original(self, *args, **kwargs)

            patch.setattr(torch.Tensor, name, guarded)
        yield


class Recorder:
    """Wraps kernel entry points and records which ran (by name), calling through."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[str] = []
        self._monkeypatch = monkeypatch

    def watch(self, owner: object, attribute: str, name: str) -> None:
        original = getattr(owner, attribute)

        def recorded(*args, **kwargs):
            self.calls.append(name)
            return original(*args, **kwargs)

        self._monkeypatch.setattr(owner, attribute, recorded)
