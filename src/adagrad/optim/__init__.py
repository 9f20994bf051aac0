"""The optimizers: thin `torch.optim.Optimizer` shells over the kernels, one module per
member (the list is `adagrad.members.MEMBERS`)."""

from adagrad.members import MEMBERS as _MEMBERS

__all__ = sorted(member.name for member in _MEMBERS)

for _member in _MEMBERS:
    globals()[_member.name] = _member.load()
del _member
