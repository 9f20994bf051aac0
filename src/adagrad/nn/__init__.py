"""Layers whose backward applies the optimizer's update (FBGEMM's data flow; :ref:`algo-sparse`)."""

from adagrad.nn.embedding import Embedding, EmbeddingBag

__all__ = ["Embedding", "EmbeddingBag"]
