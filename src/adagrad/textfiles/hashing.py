"""Text to hashed sparse features: tokens, n-grams and the hashing trick, in numba.

A token is a maximal run of word bytes of the UTF-8 text: ASCII letters and digits, ``_``
and every byte of a multi-byte character; ASCII letters are lowercased. A token's hash is
the 64-bit FNV-1a of its bytes; the n-gram of tokens ``t_1 … t_n`` hashes to
``h_n = mix(h_{n-1}·P + hash(t_n))`` with ``h_1 = hash(t_1)``, ``P`` the FNV prime and
``mix`` the splitmix64 finaliser (`adagrad.kernels.engine.splitmix`), and n-grams of
different lengths are told apart by mixing in their length. The feature of a hash is its
low ``bits`` bits (Weinberger et al. 2009, "Feature hashing for large scale multitask
learning"). Each document's feature counts become ``log(1 + count)``, then the row is
scaled to unit Euclidean norm (sublinear tf, l2-normalised: Manning, Raghavan & Schütze,
"Introduction to Information Retrieval", section 6.4).
"""

from __future__ import annotations

import math

import numba
import numpy as np
import scipy.sparse as sp

from adagrad.kernels.engine.splitmix import splitmix64

FNV_OFFSET = np.uint64(0xCBF29CE484222325)
FNV_PRIME = np.uint64(0x100000001B3)
MAX_NGRAMS = 8


@numba.njit(inline="always")
def _is_word_byte(b):
    return (48 <= b <= 57) or (65 <= b <= 90) or (97 <= b <= 122) or b == 95 or b >= 128


@numba.njit(inline="always")
def _lower(b):
    return b + 32 if 65 <= b <= 90 else b


@numba.njit(cache=True)
def _token_hashes(text, lo, hi):
    """The FNV-1a hashes of the tokens of ``text[lo:hi]``, in order."""
    out = np.empty((hi - lo) // 2 + 1, np.uint64)
    n = 0
    p = lo
    while p < hi:
        if not _is_word_byte(text[p]):
            p += 1
            continue
        h = FNV_OFFSET
        while p < hi and _is_word_byte(text[p]):
            h = (h ^ np.uint64(_lower(text[p]))) * FNV_PRIME
            p += 1
        out[n] = h
        n += 1
    return out[:n]


@numba.njit(cache=True)
def _document_features(tokens, ngrams, mask):
    """The sorted feature of every n-gram (1 ≤ n ≤ ngrams) of one document's tokens."""
    count = 0
    for n in range(1, ngrams + 1):
        count += max(tokens.size - n + 1, 0)
    out = np.empty(count, np.int64)
    c = 0
    for start in range(tokens.size):
        h = tokens[start]
        for n in range(1, ngrams + 1):
            if start + n > tokens.size:
                break
            if n > 1:
                h = splitmix64(h * FNV_PRIME + tokens[start + n - 1])
            out[c] = np.int64(splitmix64(h ^ np.uint64(n)) & mask)
            c += 1
    out.sort()
    return out


@numba.njit(cache=True)
def _hash_documents(text, starts, bits, ngrams):
    """CSR arrays (indptr, indices, data) of the documents ``text[starts[i]:starts[i+1]]``."""
    mask = np.uint64((1 << bits) - 1)
    docs = starts.size - 1
    rows = [np.empty(0, np.int64)] * 0
    for i in range(docs):
        rows.append(_document_features(_token_hashes(text, starts[i], starts[i + 1]), ngrams, mask))
    indptr = np.zeros(docs + 1, np.int64)
    for i in range(docs):  # an upper bound; the unique counts come below
        indptr[i + 1] = indptr[i] + rows[i].size
    indices = np.empty(indptr[docs], np.int64)
    data = np.empty(indptr[docs], np.float64)
    c = 0
    for i in range(docs):
        features = rows[i]
        first = c
        for p in range(features.size):
            if p > 0 and features[p] == features[p - 1]:
                data[c - 1] += 1.0
            else:
                indices[c] = features[p]
                data[c] = 1.0
                c += 1
        norm = 0.0
        for q in range(first, c):
            data[q] = math.log1p(data[q])
            norm += data[q] * data[q]
        if norm > 0.0:
            norm = math.sqrt(norm)
            for q in range(first, c):
                data[q] /= norm
        indptr[i + 1] = c
    return indptr, indices[:c].copy(), data[:c].copy()


class TextHasher:
    """Documents to a CSR matrix of ``2**bits`` hashed n-gram features (module docstring).

    Args:
      bits: the number of hash bits, 1 to 31.
      ngrams: n-grams of 1 up to this many tokens, 1 to `MAX_NGRAMS`.
    """

    def __init__(self, bits: int = 20, ngrams: int = 1) -> None:
        if not isinstance(bits, int) or not 1 <= bits <= 31:
            raise ValueError(f"bits must be an integer from 1 to 31, got {bits!r}")
        if not isinstance(ngrams, int) or not 1 <= ngrams <= MAX_NGRAMS:
            raise ValueError(f"ngrams must be an integer from 1 to {MAX_NGRAMS}, got {ngrams!r}")
        self.bits = bits
        self.ngrams = ngrams

    @property
    def n_features(self) -> int:
        return 1 << self.bits

    def transform(self, documents: list[str]) -> sp.csr_matrix:
        """The ``(len(documents), 2**bits)`` CSR matrix of the documents."""
        encoded = [doc.encode("utf-8", "surrogatepass") for doc in documents]
        starts = np.zeros(len(encoded) + 1, np.int64)
        np.cumsum([len(e) for e in encoded], out=starts[1:])
        text = np.frombuffer(b"".join(encoded), np.uint8)
        indptr, indices, data = _hash_documents(text, starts, self.bits, self.ngrams)
        return sp.csr_matrix((data, indices, indptr), shape=(len(encoded), self.n_features))
