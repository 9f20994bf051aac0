"""Chunks of a file to sparse rows: hashed text (`hashing.TextHasher`) with optional idf
weights, or svmlight features as given, and the labels as the estimators take them."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from adagrad.textfiles.hashing import TextHasher
from adagrad.textfiles.readers import Chunk, InputError


class Featurizer:
    """Rows of ``2**bits`` columns from chunks. For text, ``idf`` (a vector of that many
    weights, or None) scales each column by its inverse document frequency
    ``log((1 + n)/(1 + df)) + 1`` and the row is scaled back to unit norm (scikit-learn's
    TfidfTransformer with smooth_idf)."""

    def __init__(self, bits: int, ngrams: int, idf: np.ndarray | None = None) -> None:
        self.hasher = TextHasher(bits, ngrams)
        self.idf = idf

    @property
    def n_features(self) -> int:
        return self.hasher.n_features

    def rows(self, chunk: Chunk) -> sp.csr_matrix:
        if chunk.texts is None:
            return self._svmlight_rows(chunk)
        return self.weighted(self.hasher.transform(chunk.texts))

    def weighted(self, X: sp.csr_matrix) -> sp.csr_matrix:
        """Hashed text rows with the idf weights, back to unit norm (as is without idf)."""
        if self.idf is None:
            return X
        X = (X @ sp.diags(self.idf)).tocsr()
        norms = np.sqrt(np.asarray(X.multiply(X).sum(axis=1)).ravel())
        return (sp.diags(1.0 / np.where(norms > 0, norms, 1.0)) @ X).tocsr()

    def _svmlight_rows(self, chunk: Chunk) -> sp.csr_matrix:
        lengths = [columns.size for columns, _ in chunk.rows]
        indptr = np.zeros(len(lengths) + 1, np.int64)
        np.cumsum(lengths, out=indptr[1:])
        indices = np.concatenate([c for c, _ in chunk.rows]) if lengths else np.zeros(0, np.int64)
        data = np.concatenate([v for _, v in chunk.rows]) if lengths else np.zeros(0)
        X = sp.csr_matrix((data, indices, indptr), shape=(len(lengths), self.n_features))
        X.sum_duplicates()
        return X


def idf_weights(document_frequency: np.ndarray, documents: int) -> np.ndarray:
    """Smoothed inverse document frequencies (`Featurizer`)."""
    return np.log((1.0 + documents) / (1.0 + document_frequency)) + 1.0


def numeric_labels(chunk: Chunk, path: str) -> np.ndarray:
    """The chunk's labels as numbers (regression), refusing any that is not one."""
    values = np.empty(len(chunk))
    for i, (label, line) in enumerate(zip(chunk.labels, chunk.lines)):
        try:
            values[i] = float(label)
        except (TypeError, ValueError):
            raise InputError(f"{path}:{line}: the label is not a number (regression): "
                             f"{label!r}") from None
        if not np.isfinite(values[i]):
            raise InputError(f"{path}:{line}: the label is not a finite number: {label!r}")
    return values
