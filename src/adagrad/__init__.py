"""Adagrad for PyTorch: an exact drop-in for `torch.optim.Adagrad`, fast sparse updates,
and the Adagrad family."""

from adagrad.optim import Adagrad, AdagradDA, AdagradNorm, FullMatrixAdagrad, ProximalAdagrad

__version__ = "0.1.0"

__all__ = ["Adagrad", "AdagradDA", "AdagradNorm", "FullMatrixAdagrad", "ProximalAdagrad",
           "__version__"]
