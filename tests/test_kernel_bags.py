"""`adagrad.kernels.bags`: the bag of each id position, against a plain Python loop."""

from __future__ import annotations

import pytest
import torch

from adagrad.kernels.engine.bags import bag_of_positions, bags_torch

CASES = [
    ([0, 2, 5], 7),            # plain bags
    ([0, 0, 3, 3, 3, 6], 6),   # empty bags, at the start, middle and end
    ([0], 0),                  # one empty bag, no ids
    ([0, 4, 4], 4),            # trailing empty bag
]


def _oracle(offsets: list[int], count: int) -> list[int]:
    bags = []
    for position in range(count):
        bags.append(max(b for b, start in enumerate(offsets) if start <= position))
    return bags


@pytest.mark.parametrize("implementation", [bag_of_positions, bags_torch])
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize(("offsets", "count"), CASES)
def test_bags_equal_a_loop(implementation, index_dtype, offsets, count):
    got = implementation(torch.tensor(offsets, dtype=index_dtype), count)
    assert got.dtype == torch.int64
    assert got.tolist() == _oracle(offsets, count)
