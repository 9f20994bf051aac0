"""Large CPU tables in transparent huge pages (Linux), for the sparse row kernels.

A sparse step reads and writes rows scattered over the whole table: with 4 KiB pages
nearly every row costs a TLB miss and a page walk (the walk itself missing the caches once
the table spans gigabytes). In 2 MiB pages the same table needs 512 times fewer
translations. Linux backs anonymous memory with huge pages only where asked
(``/sys/kernel/mm/transparent_hugepage/enabled`` is ``madvise`` on most distributions), so
the fused embedding layers place their table, and the optimizer's per-row state, in memory
advised ``MADV_HUGEPAGE`` before its first touch.

`huge_page_empty_like` returns such memory untouched (an anonymous mapping aligned to
2 MiB and advised: the kernel faults it in 2 MiB pages when it is first written),
`huge_page_copy` a copy of a tensor in it; `move_to_huge_pages_` moves a
tensor's data there in place (``Tensor.set_``: the same tensor object, new storage). They
leave the tensor as it is (`huge_page_empty_like`: None) where huge pages cannot help or
cannot be had: not Linux, not CPU, not contiguous, under `MIN_BYTES`, or a requires-grad
leaf for `move_to_huge_pages_` (autograd forbids ``set_`` on it; assign ``.data``).
Values are never changed: only where they live.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import sys

import numpy as np
import torch
from torch import Tensor

HUGE_PAGE = 1 << 21  # bytes: x86-64 and arm64 transparent huge pages
MIN_BYTES = 8 * HUGE_PAGE  # smaller tables sit in a few pages already
_MADV_HUGEPAGE = 14
_madvise = None


def _libc_madvise():
    """libc's madvise, or None where there is none to call."""
    global _madvise
    if _madvise is None:
        _madvise = False
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
                libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
                libc.madvise.restype = ctypes.c_int
                _madvise = libc.madvise
            except (OSError, AttributeError):
                pass
    return _madvise or None


def _eligible(tensor: Tensor) -> bool:
    return (tensor.device.type == "cpu" and tensor.is_contiguous() and not tensor.is_sparse
            and tensor.numel() * tensor.element_size() >= MIN_BYTES
            and _libc_madvise() is not None)


def huge_page_empty_like(tensor: Tensor) -> Tensor | None:
    """An uninitialised tensor of ``tensor``'s shape and dtype in memory advised for huge
    pages (not yet touched), or None where that cannot help (see the module docstring)."""
    if not _eligible(tensor):
        return None
    nbytes = tensor.numel() * tensor.element_size()
    try:
        mapping = mmap.mmap(-1, nbytes + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    except (OSError, ValueError):
        return None
    raw = np.frombuffer(mapping, dtype=np.uint8)  # keeps the mapping alive
    start = -raw.ctypes.data % HUGE_PAGE
    span = (nbytes + HUGE_PAGE - 1) // HUGE_PAGE * HUGE_PAGE
    _libc_madvise()(raw.ctypes.data + start, span, _MADV_HUGEPAGE)  # advice: failure is fine
    return torch.from_numpy(raw[start:start + nbytes]).view(tensor.dtype).view(tensor.shape)


def huge_page_copy(tensor: Tensor) -> Tensor:
    """A copy of ``tensor`` (same shape, dtype, values; detached) in memory advised for huge
    pages, or ``tensor`` itself where that cannot help (see the module docstring)."""
    out = huge_page_empty_like(tensor)
    if out is None:
        return tensor
    with torch.no_grad():
        out.copy_(tensor)
    return out


def move_to_huge_pages_(tensor: Tensor) -> Tensor:
    """Move ``tensor``'s data into huge pages in place (the same tensor object, its values
    unchanged; views taken before keep the old memory). Returns ``tensor``."""
    if tensor.requires_grad and tensor.is_leaf:
        return tensor
    copy = huge_page_copy(tensor)
    if copy is not tensor:
        with torch.no_grad():
            tensor.set_(copy)
    return tensor
