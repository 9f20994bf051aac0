"""Tables in huge pages (`adagrad.kernels.engine.huge_pages`) and the fused layers that use them.

Oracles: the tensor that was copied (values, dtype, shape), torch's own `nn.EmbeddingBag`
and `nn.Embedding` (the same random initial weights for the same seed), and
`torch.optim.Adagrad` on torch's sparse layer for a fused table large enough to be placed.
"""

from __future__ import annotations

import copy
import io
import pickle
import sys

import pytest
import torch

import adagrad.nn
from adagrad import Adagrad
from adagrad.kernels.engine import huge_pages

pytestmark = pytest.mark.filterwarnings("ignore:Sparse invariant checks")

LINUX = sys.platform.startswith("linux")
# Just above the size from which tables are placed (16 MiB of float32 at width 64).
ROWS, WIDTH = huge_pages.MIN_BYTES // (4 * 64) + 64, 64


def _aligned(tensor: torch.Tensor) -> bool:
    return tensor.data_ptr() % huge_pages.HUGE_PAGE == 0


@pytest.mark.skipif(not LINUX, reason="madvise is Linux's")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_copy_keeps_values_in_aligned_memory(dtype):
    rows = huge_pages.MIN_BYTES // (dtype.itemsize * WIDTH) + 64
    source = torch.randn(rows, WIDTH).to(dtype)
    copy = huge_pages.huge_page_copy(source)
    assert copy is not source and copy.data_ptr() != source.data_ptr()
    assert copy.dtype == dtype and copy.shape == source.shape and copy.is_contiguous()
    assert torch.equal(copy, source)
    assert _aligned(copy)
    copy[0, 0] = 7  # its own, writable memory
    assert source[0, 0] != 7


def test_small_or_strided_tensors_are_left_alone():
    small = torch.randn(10, 4)
    assert huge_pages.huge_page_copy(small) is small
    assert huge_pages.huge_page_empty_like(small) is None
    strided = torch.randn(WIDTH, ROWS).t()
    assert huge_pages.huge_page_copy(strided) is strided


@pytest.mark.skipif(not LINUX, reason="madvise is Linux's")
def test_move_in_place_keeps_the_object_and_values():
    state = torch.rand(ROWS, WIDTH)
    before = state.clone()
    same = huge_pages.move_to_huge_pages_(state)
    assert same is state and _aligned(state) and torch.equal(state, before)
    leaf = torch.zeros(ROWS, WIDTH, requires_grad=True)  # autograd forbids set_ on it
    address = leaf.data_ptr()
    assert huge_pages.move_to_huge_pages_(leaf).data_ptr() == address


@pytest.mark.skipif(not LINUX, reason="madvise is Linux's")
@pytest.mark.parametrize("layer", ["EmbeddingBag", "Embedding"])
def test_layers_start_from_torchs_weights_in_huge_pages(layer):
    torch.manual_seed(3)
    ours = getattr(adagrad.nn, layer)(ROWS, WIDTH)
    torch.manual_seed(3)
    theirs = getattr(torch.nn, layer)(ROWS, WIDTH)
    assert _aligned(ours.weight) and isinstance(ours.weight, torch.nn.Parameter)
    assert torch.equal(ours.weight, theirs.weight)
    buffer = io.BytesIO()  # such a table saves, loads, copies and pickles as any other
    torch.save(ours.state_dict(), buffer)
    buffer.seek(0)
    assert torch.equal(torch.load(buffer)["weight"], theirs.weight)
    assert torch.equal(copy.deepcopy(ours).weight, theirs.weight)
    assert torch.equal(pickle.loads(pickle.dumps(ours)).weight, theirs.weight)
    view = ours.weight.detach()[:2]  # a later reset is in place, as torch's
    ours.reset_parameters()
    assert view.data_ptr() == ours.weight.data_ptr() and torch.equal(view, ours.weight[:2])
    given = torch.randn(ROWS, WIDTH)  # a weight given by the caller stays shared
    shared = getattr(adagrad.nn, layer).from_pretrained(given, freeze=False)
    assert shared.weight.data_ptr() == given.data_ptr()


@pytest.mark.skipif(not LINUX, reason="madvise is Linux's")
def test_fused_table_in_huge_pages_trains_as_torch():
    torch.manual_seed(0)
    ours = adagrad.nn.EmbeddingBag(ROWS, WIDTH, mode="sum")
    theirs = torch.nn.EmbeddingBag(ROWS, WIDTH, mode="sum", sparse=True)
    with torch.no_grad():
        theirs.weight.copy_(ours.weight)
    optimizer = Adagrad(ours.parameters(), lr=0.1)
    ours.update_in_backward(optimizer)
    reference = torch.optim.Adagrad(theirs.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        ids = torch.randint(0, ROWS, (512,), generator=gen)
        ids[::7] = ids[0]  # duplicates
        offsets = torch.arange(0, 512, 4)
        target = torch.randn(128, WIDTH, generator=gen)
        (ours(ids, offsets) * target).sum().backward()
        reference.zero_grad()
        (theirs(ids, offsets) * target).sum().backward()
        reference.step()
    state = optimizer.state[ours.weight]["sum"]
    assert _aligned(state)  # placed after the first step
    torch.testing.assert_close(ours.weight.detach(), theirs.weight.detach(), rtol=1e-6,
                               atol=1e-7)
    # torch sums a repeated row's gradients in another order: a few ulps in g, relatively
    # more in g² where a sum of ~70 terms nearly cancels
    torch.testing.assert_close(state, reference.state[theirs.weight]["sum"], rtol=1e-3,
                               atol=1e-6)
