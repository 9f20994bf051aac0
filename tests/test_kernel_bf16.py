"""The numba kernels' bfloat16 conversions against torch's own (round to nearest even)."""

from __future__ import annotations

import numba
import numpy as np
import torch

from adagrad.kernels.engine.elementwise import load_bf16, store_bf16


@numba.njit
def _to_bf16(values, out):
    for i in range(values.size):
        out[i] = store_bf16(values[i])


@numba.njit
def _from_bf16(words, out):
    for i in range(words.size):
        out[i] = load_bf16(words[i])


def _bit_patterns() -> np.ndarray:
    """Random float32 bit patterns (NaNs, infinities, subnormals among them) and edge cases."""
    rng = np.random.default_rng(0)
    random = rng.integers(0, 2**32, 200_000, dtype=np.uint64).astype(np.uint32).view(np.float32)
    edges = np.array([np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-40, -1e-40, 3.4e38,
                      1.00390625, 1.01171875], np.float32)  # the last two: ties to even
    return np.concatenate([random, edges])


def test_store_rounds_like_torch():
    values = _bit_patterns()
    ours = np.empty(values.size, np.uint16)
    _to_bf16(values, ours)
    theirs = torch.from_numpy(values).bfloat16().view(torch.int16).numpy().view(np.uint16)
    finite = ~np.isnan(values)
    np.testing.assert_array_equal(ours[finite], theirs[finite])
    back = torch.from_numpy(ours.view(np.int16)).view(torch.bfloat16).float().numpy()
    assert np.isnan(back[~finite]).all()


def test_load_is_exact():
    words = torch.from_numpy(_bit_patterns()).bfloat16().view(torch.int16).numpy().view(np.uint16)
    ours = np.empty(words.size, np.float32)
    _from_bf16(words, ours)
    expected = torch.from_numpy(words.view(np.int16)).view(torch.bfloat16).float().numpy()
    np.testing.assert_array_equal(ours.view(np.uint32), expected.view(np.uint32))
