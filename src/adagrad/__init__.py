"""Adagrad for PyTorch: an exact drop-in for `torch.optim.Adagrad`, fast sparse updates,
and the Adagrad family."""

from adagrad.optim import (
    FTRL,
    Adagrad,
    AdagradDA,
    AdagradNorm,
    DoGAdagrad,
    FullMatrixAdagrad,
    ProximalAdagrad,
    RowWiseAdagrad,
)

__version__ = "0.1.0"

__all__ = ["FTRL", "Adagrad", "AdagradDA", "AdagradNorm", "DoGAdagrad", "FullMatrixAdagrad",
           "ProximalAdagrad", "RowWiseAdagrad",
           "__version__"]
