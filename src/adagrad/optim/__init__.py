"""The optimizers: thin `torch.optim.Optimizer` shells over the kernels."""

from adagrad.optim.adagrad import Adagrad

__all__ = ["Adagrad"]
