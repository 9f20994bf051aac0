"""The minibatch engine: any member of the family steps on the gradient of the mean loss of
``batch_size`` examples, sparse in the rows of the features they have.

For a batch ``B`` with scores ``F = X_B·W + b`` and weighted slopes ``S`` (`batch_slopes`),
the gradient is ``X_Bᵀ·S / |B|`` on the rows of the features in ``B`` (a sparse COO
gradient of those rows: the members' sparse path, :ref:`algo-sparse`), plus ``l2·W`` on those
rows where the member takes no L2 of its own (`members.build_optimizer`), and ``Σ S / |B|``
for the intercept. FullMatrixAdagrad takes the dense gradient.
"""

from __future__ import annotations

import numpy as np
import torch

from adagrad.linear.losses import batch_slopes
from adagrad.linear.members import DENSE_ONLY_MEMBERS, build_optimizer


class MinibatchEngine:
    """A member's optimizer over the ``(n_features + 1, K)`` table ``W`` (the last row the
    intercept), sharing its memory."""

    def __init__(self, member: str, W: np.ndarray, lr: float, alpha: float, rho: float,
                 state: dict | None = None) -> None:
        self.member = member
        self.weights = torch.nn.Parameter(torch.from_numpy(W[:-1]))
        self.bias = torch.nn.Parameter(torch.from_numpy(W[-1]))
        self.optimizer, self.l2 = build_optimizer(member, self.weights, self.bias, lr, alpha, rho)
        if state is not None:
            self.optimizer.load_state_dict(state)

    def run_pass(self, X, targets, weights, order, code, epsilon, batch_size) -> None:
        """One pass over the rows ``order`` of the CSR matrix ``X``, ``batch_size`` a step."""
        for start in range(0, order.size, batch_size):
            self._step(X, targets, weights, order[start:start + batch_size], code, epsilon)

    def _step(self, X, targets, weights, rows, code, epsilon) -> None:
        batch = X[rows]
        W = self.weights.detach().numpy()
        b = self.bias.detach().numpy()
        scores = np.asarray(batch @ W, np.float64) + b
        slope = batch_slopes(code, scores, targets[rows], weights[rows], epsilon) / rows.size
        touched = np.unique(batch.indices)
        grad_rows = np.asarray(batch[:, touched].T @ slope) + self.l2 * W[touched]
        self.weights.grad = self._weights_grad(touched, grad_rows.astype(W.dtype))
        self.bias.grad = torch.from_numpy(slope.sum(axis=0).astype(b.dtype))
        self.optimizer.step()

    def _weights_grad(self, touched: np.ndarray, grad_rows: np.ndarray) -> torch.Tensor:
        shape = tuple(self.weights.shape)
        if self.member in DENSE_ONLY_MEMBERS:
            dense = torch.zeros(shape, dtype=self.weights.dtype)
            dense[torch.from_numpy(touched)] = torch.from_numpy(grad_rows)
            return dense
        indices = torch.from_numpy(touched.astype(np.int64)).unsqueeze(0)
        return torch.sparse_coo_tensor(indices, torch.from_numpy(grad_rows), shape,
                                       is_coalesced=True, check_invariants=False)

    def state(self) -> dict:
        """The optimizer's state, to carry to the next `partial_fit`."""
        return self.optimizer.state_dict()
