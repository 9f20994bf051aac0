"""The bag of every id of an `EmbeddingBag` call, for backward passes that read each id's
output-gradient row (`adagrad.nn`).

``offsets`` are the starts of the bags (the first is 0, they never decrease, none lies past
``count``); the ids from ``offsets[b]`` up to the next start belong to bag ``b``, and a bag
whose start equals the next one is empty.
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from torch import Tensor


@numba.njit(cache=True)
def _bags_numba(offsets, count):
    bag_of = np.empty(count, np.int64)
    bags = offsets.size
    for bag in range(bags):
        stop = offsets[bag + 1] if bag + 1 < bags else count
        bag_of[offsets[bag]:stop] = bag
    return bag_of


def bag_of_positions(offsets: Tensor, count: int) -> Tensor:
    """For each of the ``count`` id positions, the number of its bag (int64): a numba loop
    on the CPU, torch ops elsewhere."""
    if offsets.device.type == "cpu":
        return torch.from_numpy(_bags_numba(offsets.contiguous().numpy(), count))
    return bags_torch(offsets, count)


def bags_torch(offsets: Tensor, count: int) -> Tensor:
    """`bag_of_positions` from torch ops, for any device."""
    # A position's bag is how many bags start at or before it, less one (empty bags count).
    starts = torch.zeros(count + 1, dtype=torch.int64, device=offsets.device)
    starts.index_put_((offsets[1:].long(),), starts.new_ones(()), accumulate=True)
    return starts[:-1].cumsum(0)
