"""The splitmix64 finaliser, a 64-bit hash of a 64-bit integer (Steele, Lea & Flood 2014,
"Fast splittable pseudorandom number generators"; the constants of Stafford's "Mix13").

Every output bit depends on every input bit, so the high bits and the low bits of one hash
are independent and consecutive inputs spread evenly: the sparse row engine takes a row's
partition from the high bits and its hash-table slot from the low bits, and the text
hashing of `adagrad fit` mixes n-grams with it.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(inline="always", error_model="numpy")
def splitmix64(x):
    """``x`` (any integer, taken as uint64) hashed to a uint64."""
    h = np.uint64(x)
    h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return h ^ (h >> np.uint64(31))
