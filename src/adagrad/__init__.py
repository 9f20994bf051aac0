"""Adagrad for PyTorch: an exact drop-in for `torch.optim.Adagrad`, fast sparse updates,
and the Adagrad family.

The optimizers are imported on first use (PEP 562), so that tools which need only the
kernels (`adagrad fit`) do not pay for `adagrad.optim`'s imports (torch._dynamo)."""

__version__ = "0.1.0"

__all__ = ["FTRL", "Adagrad", "AdagradDA", "AdagradNorm", "DoGAdagrad", "FullMatrixAdagrad",
           "ProximalAdagrad", "RowWiseAdagrad",
           "__version__"]


def __getattr__(name: str):
    if name in __all__:
        from adagrad import optim

        return getattr(optim, name)
    raise AttributeError(f"module 'adagrad' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
