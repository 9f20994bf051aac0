"""The online kernel and the minibatch engine of `adagrad.linear`, step for step against
float64 references: the loss slopes from torch autograd of the loss values, the members'
rules from `adagrad.reference`."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
import torch.nn.functional as F

from adagrad import reference
from adagrad.linear.losses import loss_code
from adagrad.linear.members import l1_ratio_of
from adagrad.linear.minibatch import MinibatchEngine
from adagrad.linear.online import OnlineEngine

pytest.importorskip("sklearn")

# numba compiles a kernel per member and loss here: the slow pass (the estimator checks in
# the default suite step the default member's kernel)
pytestmark = pytest.mark.slow


def autograd_slopes(loss: str, scores: np.ndarray, target: float, epsilon: float) -> np.ndarray:
    """dℓ/df of the loss written as a value (not as a derivative), by torch autograd."""
    f = torch.tensor(scores, dtype=torch.float64, requires_grad=True)
    K = scores.size
    if loss == "log_loss" and K > 1:
        value = F.cross_entropy(f[None], torch.tensor([int(target)]))
    elif loss in ("squared_error", "huber"):
        r = f[0] - target
        value = 0.5 * r**2 if loss == "squared_error" else F.huber_loss(
            f[0], torch.tensor(target, dtype=torch.float64), delta=epsilon)
    else:
        y = torch.tensor([target] if K == 1 else [1.0 if k == target else -1.0 for k in range(K)],
                         dtype=torch.float64)
        z = y * f
        if loss == "log_loss":
            value = F.softplus(-z).sum()
        elif loss == "hinge":
            value = F.relu(1 - z).sum()
        else:  # modified_huber
            value = torch.where(z >= -1, F.relu(1 - z) ** 2, -4 * z).sum()
    (grad,) = torch.autograd.grad(value, f)
    return grad.numpy()


def reference_rule(member, theta, grad, state, lr, l1, l2):
    """One step of ``member``'s float64 reference rule, with the documented defaults of its
    optimizer (Adagrad: ε = 1e-10 outside the root; ProximalAdagrad: ε = 0; FTRL: β = 1)."""
    if member == "adagrad":
        return reference.adagrad(theta, grad, state, lr=lr, weight_decay=l2, eps=1e-10)
    if member == "proximal_adagrad":
        return reference.proximal_adagrad(theta, grad, state, lr=lr, l1=l1, l2=l2, eps=0.0)
    return reference.ftrl(theta, grad, state, lr=lr, beta=1.0, l1=l1, l2=l2)


#: each member's state at the start, from the reference's own initialisers (the documented
#: defaults: G₀ = 0 for Adagrad and FTRL's n, 0.1 for ProximalAdagrad)
REFERENCE_INIT = {"adagrad": reference.adagrad_init, "ftrl": reference.ftrl_init,
                  "proximal_adagrad": reference.proximal_adagrad_init}


def reference_online(member, X, targets, weights, order, loss, K, lr, l1, l2, epsilon):
    """The online pass, per example: the rule on the touched rows, unregularised on b."""
    W = np.zeros((X.shape[1] + 1, K))
    init = REFERENCE_INIT[member]
    states = [init(np.zeros(K)) for _ in range(X.shape[1] + 1)]
    for i in order:
        cols = X.indices[X.indptr[i]:X.indptr[i + 1]]
        x = X.data[X.indptr[i]:X.indptr[i + 1]]
        s = autograd_slopes(loss, W[-1] + x @ W[cols], targets[i], epsilon) * weights[i]
        for j, value in zip(cols, x):
            W[j], states[j] = reference_rule(member, W[j], value * s, states[j], lr, l1, l2)
        W[-1], states[-1] = reference_rule(member, W[-1], s, states[-1], lr, 0.0, 0.0)
    return W


def problem(seed: int, n: int, d: int, K: int, loss: str):
    rng = np.random.default_rng(seed)
    X = sp.random(n, d, density=0.3, random_state=seed, format="csr")
    X.data = rng.normal(size=X.data.size)
    X.indices = X.indices.astype(np.int64)
    X.indptr = X.indptr.astype(np.int64)
    if loss in ("squared_error", "huber"):
        targets = rng.normal(size=n) * 2
    elif K == 1:
        targets = rng.choice([-1.0, 1.0], size=n)
    else:
        targets = rng.integers(0, K, size=n).astype(np.float64)
    return X, targets, rng.uniform(0.5, 2.0, size=n), rng.permutation(n).astype(np.int64)


def run_online(member, X, targets, weights, order, loss, K, lr, alpha, rho, epsilon,
               dtype=np.float64):
    """The kernel's pass, tables and ``X.data`` in ``dtype`` (float32: the estimators')."""
    X = X.copy()
    X.data = X.data.astype(dtype)
    W = np.zeros((X.shape[1] + 1, K), dtype)
    engine = OnlineEngine(member, W, lr, alpha, rho)
    engine.run_pass(X, targets, weights, order, loss_code(loss, K), epsilon, 1)
    return W


CASES = [("adagrad", "log_loss", 3, "l2"), ("adagrad", "hinge", 1, "l2"),
         ("proximal_adagrad", "modified_huber", 3, "elasticnet"),
         ("proximal_adagrad", "squared_error", 1, "l1"), ("ftrl", "log_loss", 1, "elasticnet"),
         ("ftrl", "huber", 1, "l2")]


# float32 (the estimators' tables, compiled once for the suite) within float32 rounding;
# float64 to 1e-9 in the slow pass.
DTYPES = [pytest.param(np.float32, 2e-4, 1e-6, id="float32"),
          pytest.param(np.float64, 1e-9, 1e-12, id="float64", marks=pytest.mark.slow)]


@pytest.mark.parametrize("dtype,rtol,atol", DTYPES)
@pytest.mark.parametrize("member,loss,K,penalty", CASES)
def test_online_pass_matches_the_float64_reference(member, loss, K, penalty, dtype, rtol, atol):
    X, targets, weights, order = problem(3, 12, 9, K, loss)
    alpha, rho, lr = 0.05, l1_ratio_of(penalty, 0.5), 0.3
    got = run_online(member, X, targets, weights, order, loss, K, lr, alpha, rho, 0.7, dtype)
    want = reference_online(member, X, targets, weights, order, loss, K, lr, alpha * rho,
                            alpha * (1 - rho), 0.7)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(30))
def test_online_pass_matches_the_reference_on_random_configurations(seed):
    rng = np.random.default_rng(100 + seed)
    member = rng.choice(["adagrad", "proximal_adagrad", "ftrl"])
    loss = rng.choice(["log_loss", "hinge", "modified_huber", "squared_error", "huber"])
    K = 1 if loss in ("squared_error", "huber") else int(rng.choice([1, 2, 4]))
    penalty = "l2" if member == "adagrad" else rng.choice(["l2", "l1", "elasticnet"])
    X, targets, weights, order = problem(seed, int(rng.integers(1, 30)), int(rng.integers(1, 15)),
                                         K, loss)
    alpha, rho = float(rng.uniform(0, 0.2)), l1_ratio_of(penalty, float(rng.uniform()))
    lr, epsilon = float(rng.uniform(0.01, 2)), float(rng.uniform(0.1, 2))
    got = run_online(member, X, targets, weights, order, loss, K, lr, alpha, rho, epsilon)
    want = reference_online(member, X, targets, weights, order, loss, K, lr, alpha * rho,
                            alpha * (1 - rho), epsilon)
    np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-11)


def test_minibatch_adagrad_matches_the_reference_on_the_mean_gradient():
    """batch_size 4, Adagrad with L2 on touched rows: sparse gradient of the mean loss."""
    K, lr, alpha, batch = 3, 0.2, 0.01, 4
    X, targets, weights, order = problem(5, 13, 8, K, "log_loss")
    W = np.zeros((X.shape[1] + 1, K), np.float64)
    MinibatchEngine("adagrad", W, lr, alpha, 0.0).run_pass(
        X, targets, weights, order, loss_code("log_loss", K), 0.0, batch)
    want = np.zeros_like(W)
    G = np.zeros_like(W)
    for start in range(0, order.size, batch):
        rows = order[start:start + batch]
        grad = np.zeros_like(W)
        for i in rows:
            cols = X.indices[X.indptr[i]:X.indptr[i + 1]]
            x = X.data[X.indptr[i]:X.indptr[i + 1]]
            s = autograd_slopes("log_loss", want[-1] + x @ want[cols], targets[i], 0.0)
            grad[cols] += np.outer(x, s * weights[i]) / rows.size
            grad[-1] += s * weights[i] / rows.size
        touched = np.unique(X[rows].indices)
        grad[touched] += alpha * want[touched]
        for r in [*touched, W.shape[0] - 1]:  # torch's sparse Adagrad: touched rows only
            want[r], state = reference.adagrad(want[r], grad[r], {"step": 0, "sum": G[r]}, lr=lr)
            G[r] = state["sum"]
    np.testing.assert_allclose(W, want, rtol=1e-9, atol=1e-12)


#: the members the online kernel runs, written out (tests/test_members.py checks the
#: derived list against the same literal)
ONLINE = ("adagrad", "proximal_adagrad", "ftrl")
L1 = ("proximal_adagrad", "ftrl")


@pytest.mark.parametrize("loss,K", [("log_loss", 3), ("hinge", 1), ("squared_error", 1)],
                         ids=["multiclass", "binary", "regression"])
@pytest.mark.parametrize("member,penalty", [
    *[(member, "l2") for member in ONLINE], *[(member, "l1") for member in L1],
    *[(member, "elasticnet") for member in L1]])
def test_online_engine_equals_the_members_optimizer_at_batch_size_one(member, penalty, loss, K):
    """The estimators' two engines at batch size 1: the online kernel and the member's own
    optimizer (its defaults: ProximalAdagrad's G₀ = 0.1, ε = 0) stepping one example at a
    time, in float32 (the estimators' tables), agree to float32 rounding."""
    X, targets, weights, order = problem(7, 16, 10, K, loss)
    X.data = X.data.astype(np.float32)
    alpha, rho, lr = 0.05, l1_ratio_of(penalty, 0.5), 0.3
    online = np.zeros((X.shape[1] + 1, K), np.float32)
    minibatch = np.zeros_like(online)
    code = loss_code(loss, K)
    OnlineEngine(member, online, lr, alpha, rho).run_pass(X, targets, weights, order, code,
                                                          1.0, 1)
    MinibatchEngine(member, minibatch, lr, alpha, rho).run_pass(X, targets, weights, order,
                                                                code, 1.0, 1)
    assert np.abs(minibatch).max() > 1e-2  # it trained
    np.testing.assert_allclose(online, minibatch, rtol=1e-4, atol=1e-6)
