"""`RowWiseAdagrad` checkpoints: round trips, a mid-run save/load that ends bit-identical
on every path (dense, torch's sparse layer, fused layers; lazy and touched weight decay,
lr_decay, bf16 tables), and refusals of checkpoints that are not row-wise Adagrad's."""

from __future__ import annotations

import copy
import io

import pytest
import torch
from torch import nn

import adagrad.nn
from adagrad import Adagrad, RowWiseAdagrad

pytestmark = pytest.mark.filterwarnings("ignore:Sparse invariant checks")

ROWS, WIDTH, STEPS, SAVE_AT = 40, 6, 8, 3
OPTIONS = {
    "plain": dict(lr=0.1),
    "lr_decay+maximize": dict(lr=0.1, lr_decay=0.1, maximize=True),
    "lazy": dict(lr=0.1, weight_decay=0.05, sparse_weight_decay="lazy"),
    "touched": dict(lr=0.1, weight_decay=0.05, sparse_weight_decay="touched",
                    decoupled_weight_decay=True),
}


class Model(nn.Module):
    """A table (dense, torch's sparse bag or our fused bag), a bias and a nonlinear loss."""

    def __init__(self, path: str, dtype: torch.dtype) -> None:
        super().__init__()
        torch.manual_seed(0)
        if path == "fused":
            self.table = adagrad.nn.EmbeddingBag(ROWS, WIDTH, mode="sum")
        else:
            self.table = nn.EmbeddingBag(ROWS, WIDTH, mode="sum", sparse=path == "sparse")
        self.bias = nn.Parameter(torch.zeros(WIDTH))
        self.to(dtype)

    def loss(self, step: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(step)
        ids = torch.randint(0, 15, (24,), generator=gen)
        out = self.table(ids, torch.tensor([0, 5, 5, 12])) + self.bias
        return ((out.float().sum(1) - 1) ** 2).sum()


def _build(path: str, options: dict, dtype=torch.float32):
    model = Model(path, dtype)
    opt = RowWiseAdagrad(model.parameters(), **options)
    if path == "fused":
        model.table.update_in_backward(opt)
    return model, opt


def _train(model, opt, start: int, stop: int) -> None:
    for step in range(start, stop):
        opt.zero_grad(set_to_none=True)
        model.loss(step).backward()
        opt.step()


def _bits(t: torch.Tensor) -> torch.Tensor:
    t = t.detach().contiguous()
    return t.view({2: torch.int16, 4: torch.int32, 8: torch.int64}[t.element_size()])


def _assert_identical(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], dict):
            _assert_identical(a[key], b[key])
        elif isinstance(a[key], torch.Tensor):
            assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
            assert torch.equal(_bits(a[key]), _bits(b[key])), key
        else:
            assert a[key] == b[key], key


def _snapshot(model, opt) -> dict:
    opt_state = opt.state_dict()
    return {"model": copy.deepcopy(model.state_dict()),
            "state": {i: dict(s) for i, s in copy.deepcopy(opt_state["state"]).items()},
            "groups": {i: {k: v for k, v in g.items() if k != "params"}
                       for i, g in enumerate(opt_state["param_groups"])}}


CASES = [(path, name, dtype) for path in ("dense", "sparse", "fused") for name in OPTIONS
         for dtype in (torch.float32, torch.bfloat16)
         if not (path == "dense" and name in ("lazy", "touched"))]


@pytest.mark.parametrize("path,name,dtype", CASES, ids=[f"{p}-{n}-{str(d)[6:]}"
                                                         for p, n, d in CASES])
def test_resume_from_mid_run_checkpoint_is_bit_identical(path, name, dtype):
    """k steps, save (torch.save), a new model and optimizer load it, N - k more steps:
    bit-identical to N uninterrupted steps; taking the checkpoint changed nothing."""
    model, opt = _build(path, OPTIONS[name], dtype)
    _train(model, opt, 0, STEPS)
    expected = _snapshot(model, opt)

    model, opt = _build(path, OPTIONS[name], dtype)
    _train(model, opt, 0, SAVE_AT)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, buffer)
    _train(model, opt, SAVE_AT, STEPS)
    _assert_identical(expected, _snapshot(model, opt))  # state_dict() mid-run: no change

    buffer.seek(0)
    saved = torch.load(buffer)
    model, opt = _build(path, OPTIONS[name], dtype)
    model.load_state_dict(saved["model"])
    opt.load_state_dict(saved["optimizer"])
    _train(model, opt, SAVE_AT, STEPS)
    _assert_identical(expected, _snapshot(model, opt))


def test_round_trip_keeps_row_shaped_float32_state_for_bf16_tables():
    model, opt = _build("sparse", OPTIONS["lazy"], torch.bfloat16)
    _train(model, opt, 0, 2)
    saved = copy.deepcopy(opt.state_dict())
    table_state = saved["state"][1]  # parameters(): the bias first, then the table
    assert table_state["sum"].shape == (ROWS,) and table_state["sum"].dtype == torch.float32
    assert table_state["row_param_log"].dtype == torch.float64
    other_model, other = _build("sparse", OPTIONS["lazy"], torch.bfloat16)
    other.load_state_dict(saved)
    state = other.state[other_model.table.weight]
    assert state["sum"].dtype == torch.float32  # never cast down to the parameter's bf16
    torch.testing.assert_close(state["sum"], table_state["sum"], rtol=0, atol=0)


def test_adagrad_checkpoint_is_refused_and_ours_by_adagrad():
    """Both directions against `adagrad.Adagrad`, on a table (sum shapes differ) and on a
    bias alone (Adagrad's groups hold options row-wise Adagrad does not have)."""
    for params in (lambda: [torch.zeros(5, 3, requires_grad=True)],
                   lambda: [torch.zeros(4, requires_grad=True)]):
        theirs, ours = params(), params()
        adagrad_opt, rowwise_opt = Adagrad(theirs, lr=0.1), RowWiseAdagrad(ours, lr=0.1)
        with pytest.raises(ValueError, match="not a checkpoint of RowWiseAdagrad"):
            rowwise_opt.load_state_dict(adagrad_opt.state_dict())
        assert not rowwise_opt.state
    table, other = torch.zeros(5, 3, requires_grad=True), torch.zeros(5, 3, requires_grad=True)
    rowwise_opt, adagrad_opt = RowWiseAdagrad([table]), Adagrad([other])
    with pytest.raises(ValueError, match=r"'sum' has shape \(5,\), expected \(5, 3\)"):
        adagrad_opt.load_state_dict(rowwise_opt.state_dict())


def test_torch_adagrad_checkpoint_of_a_table_is_refused():
    table, other = torch.zeros(5, 3, requires_grad=True), torch.zeros(5, 3, requires_grad=True)
    theirs = torch.optim.Adagrad([table])
    with pytest.raises(ValueError, match=r"'sum' has shape \(5, 3\), expected \(5,\)"):
        RowWiseAdagrad([other]).load_state_dict(theirs.state_dict())


@pytest.mark.parametrize("edit,message", [
    (lambda s: s.pop("row_param_log"), "only one of"),
    (lambda s: s.update(row_param_log=torch.zeros(3, dtype=torch.float64)), "row_param_log"),
    (lambda s: s.update(param_log=torch.tensor(float("nan"), dtype=torch.float64)),
     "not finite"),
    (lambda s: s.update(sum=-s["sum"] - 1), "negative"),
])
def test_broken_lazy_state_is_refused_and_changes_nothing(edit, message):
    model, opt = _build("sparse", OPTIONS["lazy"])
    _train(model, opt, 0, 2)
    saved = copy.deepcopy(opt.state_dict())
    edit(saved["state"][1])  # the table
    before = copy.deepcopy(opt.state_dict())
    with pytest.raises(ValueError, match=message):
        opt.load_state_dict(saved)
    _assert_identical(before["state"][1], opt.state_dict()["state"][1])
