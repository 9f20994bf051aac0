"""The optimizers: thin `torch.optim.Optimizer` shells over the kernels."""

from adagrad.optim.adagrad import Adagrad
from adagrad.optim.dual_averaging import AdagradDA
from adagrad.optim.full_matrix import FullMatrixAdagrad
from adagrad.optim.norm import AdagradNorm
from adagrad.optim.proximal import ProximalAdagrad

__all__ = ["Adagrad", "AdagradDA", "AdagradNorm", "FullMatrixAdagrad", "ProximalAdagrad"]
