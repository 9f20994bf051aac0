"""The optimizers: thin `torch.optim.Optimizer` shells over the kernels."""

from adagrad.optim.adagrad import Adagrad
from adagrad.optim.dog import DoGAdagrad
from adagrad.optim.dual_averaging import AdagradDA
from adagrad.optim.ftrl import FTRL
from adagrad.optim.full_matrix import FullMatrixAdagrad
from adagrad.optim.norm import AdagradNorm
from adagrad.optim.proximal import ProximalAdagrad
from adagrad.optim.rowwise import RowWiseAdagrad

__all__ = ["FTRL", "Adagrad", "AdagradDA", "AdagradNorm", "DoGAdagrad", "FullMatrixAdagrad",
           "ProximalAdagrad", "RowWiseAdagrad"]
