"""Layers whose backward applies the optimizer's update (FBGEMM's data flow; :ref:`algo-sparse`)."""

from adagrad.nn.embedding import Embedding, EmbeddingBag, is_fused_table

__all__ = ["Embedding", "EmbeddingBag", "is_fused_table"]
