"""Adagrad for PyTorch: an exact drop-in for `torch.optim.Adagrad`, fast sparse updates,
and the Adagrad family.

The optimizers are imported on first use (PEP 562), so that tools which need only the
kernels (`adagrad fit`) do not pay for `adagrad.optim`'s imports (torch._dynamo)."""

from adagrad.members import BY_NAME as _MEMBERS

__version__ = "0.1.0"

__all__ = [*sorted(_MEMBERS), "__version__"]  # the members, from `adagrad.members`


def __getattr__(name: str):
    if name in _MEMBERS:
        from adagrad import optim

        return getattr(optim, name)
    raise AttributeError(f"module 'adagrad' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
