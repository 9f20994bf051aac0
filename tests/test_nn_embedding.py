"""`adagrad.nn.Embedding` / `EmbeddingBag` with the update inside backward.

Oracles: `torch.nn.EmbeddingBag(sparse=True)` / `torch.nn.Embedding(sparse=True)` trained
by `torch.optim.Adagrad` on the same batches (weights, accumulators, per-sample-weight
gradients), and the float64 reference rule (`adagrad.reference`) fed torch's gradients.
"""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from sparse_support import DenseRef, assert_close64, densify64, tol_for

import adagrad.nn
from adagrad import Adagrad

pytestmark = pytest.mark.filterwarnings("ignore:Sparse invariant checks")

ROWS, WIDTH = 40, 5


def _bag_batches(steps: int, seed: int, index_dtype=torch.int64, with_weights=False,
                 layout="offsets"):
    """(input, offsets, per_sample_weights) batches with duplicates and an empty bag."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(steps):
        if layout == "2d":
            ids = torch.randint(0, 12, (6, 3), generator=gen).to(index_dtype)
            offsets = None
        else:
            ids = (torch.randint(0, 6, (20,), generator=gen)
                   * torch.randint(0, 5, (20,), generator=gen)).to(index_dtype)
            offsets = torch.tensor([0, 3, 3, 9, 14], dtype=index_dtype)
            if layout == "last_offset":
                offsets = torch.tensor([0, 3, 3, 9, 14, 20], dtype=index_dtype)
        weights = torch.rand(ids.shape, generator=gen) if with_weights else None
        out.append((ids, offsets, weights))
    return out


def _loss(out: torch.Tensor, head: torch.Tensor) -> torch.Tensor:
    y = out @ head
    return ((y - 1) ** 2).sum() + 0.1 * (y ** 3).sum()


def _pair(layer_kwargs: dict, opt_kwargs: dict, kind: str = "bag", dtype=torch.float32):
    """torch's sparse layer with torch.optim.Adagrad, and ours fused, from equal weights."""
    torch.manual_seed(0)
    # torch has no sparse gradient for these two; its dense one is then the oracle
    sparse = layer_kwargs.get("mode") != "max" and not layer_kwargs.get("scale_grad_by_freq")
    if kind == "bag":
        theirs = torch.nn.EmbeddingBag(ROWS, WIDTH, sparse=sparse, **layer_kwargs)
        ours = adagrad.nn.EmbeddingBag(ROWS, WIDTH, **layer_kwargs)
    else:
        theirs = torch.nn.Embedding(ROWS, WIDTH, sparse=sparse, **layer_kwargs)
        ours = adagrad.nn.Embedding(ROWS, WIDTH, **layer_kwargs)
    theirs.to(dtype)
    ours.to(dtype)
    ours.load_state_dict(theirs.state_dict())
    their_opt = torch.optim.Adagrad(theirs.parameters(), **opt_kwargs)
    our_opt = Adagrad(ours.parameters(), **opt_kwargs)
    assert ours.update_in_backward(our_opt) is ours
    return theirs, their_opt, ours, our_opt


# Several steps of a nonlinear loss: the float32 rounding of duplicate sums (summed in
# another order than torch's) feeds back, so a few ulps, not one.
FLOAT32_TOLERANCE = {"rtol": 1e-5, "atol": 1e-6}


def _assert_same(theirs, their_opt, ours, our_opt, dtype=torch.float32):
    tol = FLOAT32_TOLERANCE if dtype == torch.float32 else {"rtol": 1e-12, "atol": 0}
    torch.testing.assert_close(ours.weight.detach(), theirs.weight.detach(), **tol)
    theirs_state, ours_state = their_opt.state[theirs.weight], our_opt.state[ours.weight]
    torch.testing.assert_close(ours_state["sum"], theirs_state["sum"], **tol)
    assert ours_state["step"] == theirs_state["step"]


def _train_bags(layer, opt, batches, head, weights_grad=None):
    for ids, offsets, weights in batches:
        opt.zero_grad(set_to_none=True)
        if weights is not None and weights_grad is not None:
            weights = weights.clone().requires_grad_(True)
        _loss(layer(ids, offsets, per_sample_weights=weights), head).backward()
        if weights_grad is not None and weights is not None:
            weights_grad.append(weights.grad)
        opt.step()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("index_dtype", [torch.int64, torch.int32])
@pytest.mark.parametrize("layout", ["offsets", "2d", "last_offset"])
@pytest.mark.parametrize("mode", ["sum", "mean"])
def test_bag_equals_torch(mode, layout, index_dtype, dtype):
    kwargs = {"mode": mode, "include_last_offset": layout == "last_offset"}
    theirs, their_opt, ours, our_opt = _pair(kwargs, {"lr": 0.3, "lr_decay": 0.01}, dtype=dtype)
    batches = _bag_batches(5, seed=1, index_dtype=index_dtype, layout=layout)
    head = torch.randn(WIDTH, dtype=dtype)
    _train_bags(theirs, their_opt, batches, head)
    _train_bags(ours, our_opt, batches, head)
    assert ours.weight.grad is None  # the update happened in backward; step() skipped it
    _assert_same(theirs, their_opt, ours, our_opt, dtype)


@pytest.mark.parametrize("padding_idx", [None, 0])
def test_bag_per_sample_weights_and_their_gradient(padding_idx):
    kwargs = {"mode": "sum", "padding_idx": padding_idx}
    theirs, their_opt, ours, our_opt = _pair(kwargs, {"lr": 0.2})
    batches = _bag_batches(4, seed=2, with_weights=True)
    head = torch.randn(WIDTH)
    their_grads, our_grads = [], []
    _train_bags(theirs, their_opt, batches, head, their_grads)
    _train_bags(ours, our_opt, batches, head, our_grads)
    _assert_same(theirs, their_opt, ours, our_opt)
    for their_grad, our_grad in zip(their_grads, our_grads):
        torch.testing.assert_close(our_grad, their_grad, **FLOAT32_TOLERANCE)


@pytest.mark.parametrize("mode", ["sum", "mean"])
def test_bag_padding_rows_are_left_alone(mode):
    theirs, their_opt, ours, our_opt = _pair({"mode": mode, "padding_idx": 0}, {"lr": 0.2})
    batches = _bag_batches(4, seed=3)  # the product ids hit row 0 often
    assert any((ids == 0).any() for ids, _, _ in batches)
    padding_row = ours.weight[0].detach().clone()
    head = torch.randn(WIDTH)
    _train_bags(theirs, their_opt, batches, head)
    _train_bags(ours, our_opt, batches, head)
    _assert_same(theirs, their_opt, ours, our_opt)
    assert torch.equal(ours.weight[0], padding_row)
    assert not our_opt.state[ours.weight]["sum"][0].any()


@pytest.mark.parametrize("kwargs", [{"mode": "max"}, {"mode": "sum", "scale_grad_by_freq": True},
                                    {"mode": "sum", "max_norm": 1.0}])
def test_bag_other_configurations_update_in_backward_too(kwargs):
    """max mode and scale_grad_by_freq update from torch's own gradient (a hook)."""
    theirs, their_opt, ours, our_opt = _pair(kwargs, {"lr": 0.2})
    batches = _bag_batches(4, seed=4)
    head = torch.randn(WIDTH)
    _train_bags(theirs, their_opt, batches, head)
    for ids, offsets, _ in batches:
        _loss(ours(ids, offsets), head).backward()
        assert ours.weight.grad is None  # applied and cleared inside backward
    _assert_same(theirs, their_opt, ours, our_opt)


@pytest.mark.parametrize("kwargs", [{}, {"padding_idx": 2}, {"max_norm": 0.5},
                                    {"scale_grad_by_freq": True}])
def test_embedding_equals_torch(kwargs):
    theirs, their_opt, ours, our_opt = _pair(kwargs, {"lr": 0.3}, kind="embedding")
    gen = torch.Generator().manual_seed(5)
    head = torch.randn(WIDTH)
    for _ in range(4):
        ids = torch.randint(0, 4, (6, 3), generator=gen) * torch.randint(0, 4, (6, 3), generator=gen)
        for layer, opt in ((theirs, their_opt), (ours, our_opt)):
            opt.zero_grad(set_to_none=True)
            _loss(layer(ids).sum(1), head).backward()
            opt.step()
    _assert_same(theirs, their_opt, ours, our_opt)


def test_lazy_weight_decay_equals_dense_decoupled_reference():
    """A linear loss makes the gradients independent of θ, so the float64 dense rule
    with decoupled decay, fed torch's gradients, is the oracle (after a flush)."""
    hp = {"lr": 0.1, "weight_decay": 0.05, "accumulator_decay": 0.9}
    ours = adagrad.nn.EmbeddingBag(ROWS, WIDTH, mode="mean")
    opt = Adagrad(ours.parameters(), sparse_weight_decay="lazy", **hp)
    ours.update_in_backward(opt)
    theirs = torch.nn.EmbeddingBag(ROWS, WIDTH, mode="mean", sparse=True)
    theirs.load_state_dict(ours.state_dict())
    ref = DenseRef(ours.weight, decoupled_weight_decay=True, **hp)
    head = torch.randn(WIDTH)
    for ids, offsets, _ in _bag_batches(5, seed=6):
        theirs.weight.grad = None
        (theirs(ids, offsets) @ head).sum().backward()
        ref.step(densify64(theirs.weight.grad))
        (ours(ids, offsets) @ head).sum().backward()
    opt.flush()
    assert_close64(ours.weight, ref.theta, **tol_for(torch.float32))
    assert_close64(opt.state[ours.weight]["sum"], ref.sum, **tol_for(torch.float32))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_tables_keep_a_float32_accumulator(dtype):
    """bf16/fp16 tables: the float64 dense rule fed torch's gradients (a linear loss, so
    they do not depend on θ) is the oracle, to the table's precision."""
    ours = adagrad.nn.EmbeddingBag(ROWS, WIDTH, mode="sum").to(dtype)
    opt = Adagrad(ours.parameters(), lr=0.05)
    ours.update_in_backward(opt)
    theirs = torch.nn.EmbeddingBag(ROWS, WIDTH, mode="sum", sparse=True).to(dtype)
    theirs.load_state_dict(ours.state_dict())
    ref = DenseRef(ours.weight, lr=0.05)
    head = torch.randn(WIDTH, dtype=dtype)
    for ids, offsets, _ in _bag_batches(3, seed=11):
        theirs.weight.grad = None
        (theirs(ids, offsets) @ head).sum().backward()
        ref.step(densify64(theirs.weight.grad))
        (ours(ids, offsets) @ head).sum().backward()
    assert opt.state[ours.weight]["sum"].dtype == torch.float32
    assert_close64(ours.weight, ref.theta, rtol=1e-2, atol=1e-2)
    assert_close64(opt.state[ours.weight]["sum"], ref.sum, rtol=1e-2, atol=1e-3)


def test_scheduler_lr_is_the_one_at_backward():
    theirs, their_opt, ours, our_opt = _pair({"mode": "sum"}, {"lr": 0.5})
    schedulers = [torch.optim.lr_scheduler.StepLR(o, step_size=1, gamma=0.5)
                  for o in (their_opt, our_opt)]
    batches = _bag_batches(4, seed=7)
    head = torch.randn(WIDTH)
    for batch in batches:
        _train_bags(theirs, their_opt, [batch], head)
        _train_bags(ours, our_opt, [batch], head)
        for scheduler in schedulers:
            scheduler.step()
    _assert_same(theirs, their_opt, ours, our_opt)


def test_checkpoint_loads_into_torch_and_continues_the_same():
    theirs, their_opt, ours, our_opt = _pair({"mode": "sum"}, {"lr": 0.3})
    batches = _bag_batches(6, seed=8)
    head = torch.randn(WIDTH)
    _train_bags(ours, our_opt, batches[:3], head)
    theirs.load_state_dict(ours.state_dict())
    their_opt.load_state_dict(copy.deepcopy(our_opt.state_dict()))  # as if saved to disk
    _train_bags(theirs, their_opt, batches[3:], head)
    _train_bags(ours, our_opt, batches[3:], head)
    _assert_same(theirs, their_opt, ours, our_opt)


def test_without_an_optimizer_it_is_torchs_layer():
    torch.manual_seed(0)
    ours = adagrad.nn.EmbeddingBag(ROWS, WIDTH, mode="sum", sparse=True)
    theirs = torch.nn.EmbeddingBag(ROWS, WIDTH, mode="sum", sparse=True)
    theirs.load_state_dict(ours.state_dict())
    ids, offsets, _ = _bag_batches(1, seed=9)[0]
    for layer in (ours, theirs):
        layer(ids, offsets).sum().backward()
    assert ours.weight.grad.is_sparse
    torch.testing.assert_close(ours.weight.grad.to_dense(), theirs.weight.grad.to_dense())

    opt = Adagrad(ours.parameters())
    ours.update_in_backward(opt).update_in_backward(None)  # detached again: plain gradients
    ours.weight.grad = None
    ours(ids, offsets).sum().backward()
    assert ours.weight.grad is not None and not opt.state


def test_no_grad_forward_changes_nothing():
    _, _, ours, our_opt = _pair({"mode": "sum"}, {"lr": 0.3})
    before = ours.weight.detach().clone()
    ids, offsets, _ = _bag_batches(1, seed=10)[0]
    with torch.no_grad():
        expected = torch.nn.functional.embedding_bag(ids, before, offsets, mode="sum")
        torch.testing.assert_close(ours(ids, offsets), expected)
    assert torch.equal(ours.weight, before) and not our_opt.state


def test_errors_name_the_problem():
    layer = adagrad.nn.EmbeddingBag(ROWS, WIDTH)
    other = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match="not one of this optimizer's parameters"):
        layer.update_in_backward(Adagrad(other.parameters()))
    with pytest.raises(TypeError, match="adagrad family.*Adagrad"):
        layer.update_in_backward(torch.optim.Adagrad(layer.parameters()))


def test_bad_index_raises_before_any_write():
    _, _, ours, our_opt = _pair({"mode": "sum"}, {"lr": 0.3})
    before = ours.weight.detach().clone()
    with pytest.raises((IndexError, RuntimeError), match=str(ROWS)):
        ours(torch.tensor([1, ROWS]), torch.tensor([0])).sum().backward()
    assert torch.equal(ours.weight, before)


@pytest.mark.parametrize("mode", ["sum", "max"])
def test_fused_layer_copies_and_pickles(mode):
    """A copy of a model brings a copy of the optimizer, which updates the copied table."""
    _, _, ours, our_opt = _pair({"mode": mode}, {"lr": 0.3})
    model = torch.nn.Sequential(ours)
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        layer = clone[0]
        before = layer.weight.detach().clone()
        layer(torch.tensor([1, 2]), torch.tensor([0])).sum().backward()
        assert layer.weight.grad is None
        assert not torch.equal(layer.weight, before)
        assert layer._optimizer.state[layer.weight]["step"] == 1
    assert ours.weight not in our_opt.state


@pytest.mark.parametrize("include_last_offset", [False, True])
def test_bag_empty_bags_at_the_end_and_unused_ids(include_last_offset):
    """Bags that start at the end are empty; with include_last_offset, ids after the last
    offset belong to no bag: the forward leaves them out, and so does the update. (torch's
    own backward gives them to the last bag, so its oracle run gets only the used ids.)"""
    kwargs = {"mode": "mean", "include_last_offset": include_last_offset}
    theirs, their_opt, ours, our_opt = _pair(kwargs, {"lr": 0.2})
    ids = torch.tensor([3, 1, 3, 7, 7, 2, 9])
    offsets = torch.tensor([0, 2, 5, 5]) if include_last_offset else torch.tensor([0, 2, 5, 5, 7, 7])
    used = ids[:5] if include_last_offset else ids
    head = torch.randn(WIDTH)
    _train_bags(theirs, their_opt, [(used, offsets, None)] * 2, head)
    _train_bags(ours, our_opt, [(ids, offsets, None)] * 2, head)
    _assert_same(theirs, their_opt, ours, our_opt)
    if include_last_offset:
        assert not our_opt.state[ours.weight]["sum"][[2, 9]].any()


def test_compiled_model_updates_the_same():
    """Under torch.compile (dynamo; the eager backend keeps the test fast) the fused
    backward still runs and equals torch's layer with torch.optim.Adagrad."""
    torch._dynamo.reset()
    theirs, their_opt, ours, our_opt = _pair({"mode": "sum"}, {"lr": 0.3})
    compiled = torch.compile(ours, backend="eager")
    head = torch.randn(WIDTH)
    batches = _bag_batches(3, seed=12)
    _train_bags(theirs, their_opt, batches, head)
    _train_bags(compiled, our_opt, batches, head)
    _assert_same(theirs, their_opt, ours, our_opt)
