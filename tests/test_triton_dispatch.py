"""Which kernel each CUDA case takes (issue 13), run on the CPU: the dispatch sees CPU
tensors as CUDA tensors (`triton_support.fake_cuda`), so that `Adagrad.step()` runs the very
path a GPU would (Triton's interpreter, torch's fused CPU kernel, foreach ops), held to the
float64 reference, with a guard that fails on any host read of a tensor."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import to64
from triton_support import ATOL, RTOL, Recorder, fake_cuda, no_host_reads

import adagrad
from adagrad import kernels
from adagrad import reference as ref
from adagrad.kernels.engine import cuda_dispatch
from adagrad.optim.adagrad import group_rule
from adagrad.kernels.adagrad import cpu as dense_cpu
from adagrad.kernels.adagrad import foreach as foreach_dense
from adagrad.kernels.adagrad import torch_ops as portable
from adagrad.kernels.adagrad import triton as triton_dense
from adagrad.kernels.adagrad import triton_sparse
from adagrad.kernels.engine.clocks import RowClocks
from adagrad.kernels.engine.rule import StepRule
from adagrad.nn import EmbeddingBag

TORCH_OPTIONS = dict(lr=0.1, lr_decay=0.05, weight_decay=0.02)
EXTRA_OPTIONS = dict(lr=0.1, lr_decay=0.05, weight_decay=0.02, decoupled_weight_decay=True,
                     eps_placement="inside", accumulator_decay=0.9, maximize=True)


def _recorder(monkeypatch):
    recorder = Recorder(monkeypatch)
    recorder.watch(torch, "_fused_adagrad_", "torch_fused")
    recorder.watch(triton_dense, "dense_adagrad_", "triton")
    recorder.watch(foreach_dense, "dense_adagrad_", "foreach")
    recorder.watch(portable, "dense_adagrad_", "portable")
    recorder.watch(kernels, "dense_adagrad_", "cpu")
    recorder.watch(dense_cpu, "dense_adagrad_batch_", "cpu")  # small CPU tensors, batched
    return recorder


def _reference_options(options):
    keys = ("lr", "lr_decay", "weight_decay", "decoupled_weight_decay", "accumulator_decay",
            "maximize")
    kwargs = {key: options[key] for key in keys if key in options}
    kwargs["eps_placement"] = options.get("eps_placement", "outside")
    return kwargs


def _train(params, options, steps=3, lr_tensor=False, guard=None):
    """``steps`` steps of ours on ``params``, each inside ``guard(optimizer)`` if given,
    and after each, every tensor against one step of the reference from its θ and G
    before the step (so that a half-precision θ is held to one rounding, not to the
    drift of several)."""
    kwargs = dict(options)
    if lr_tensor:
        kwargs["lr"] = torch.tensor(kwargs["lr"])
    optimizer = adagrad.Adagrad(params, **kwargs)
    for step in range(steps):
        expected = []
        for p in params:
            p.grad = torch.randn(p.shape).to(p.dtype)
            before = optimizer.state.get(p)
            G = to64(before["sum"]) if before else ref.adagrad_init(to64(p))["sum"]
            expected.append(ref.adagrad(to64(p), to64(p.grad), {"step": step, "sum": G},
                                        eps=1e-10, **_reference_options(options)))
        if guard is None:
            optimizer.step()
        else:
            with guard(optimizer):
                optimizer.step()
        for p, (theta, state) in zip(params, expected):
            np.testing.assert_allclose(to64(p), theta, rtol=RTOL[p.dtype], atol=ATOL)
            np.testing.assert_allclose(to64(optimizer.state[p]["sum"]), state["sum"],
                                       rtol=2e-6, atol=ATOL)
    return optimizer


def _mixed_params():
    """A transformer-like set in miniature: float32, bfloat16 and float16 tensors (the
    half ones with float32 state), of sizes empty to odd."""
    shapes = [(7, 5), (0,), (triton_dense.BLOCK + 1,), (3,)]
    return [torch.nn.Parameter(torch.randn(s).to(dtype))
            for dtype in (torch.float32, torch.bfloat16, torch.float16) for s in shapes]


def _host_guard(monkeypatch):
    """No host read inside step() but of the step counters (host tensors, as in torch)."""
    def guard(optimizer):
        def is_step(tensor):
            return any(tensor is state.get("step") for state in optimizer.state.values())
        return no_host_reads(monkeypatch, allowed=is_step)
    return guard


def test_cpu_tensors_stay_on_the_cpu_kernels(monkeypatch):
    recorder = _recorder(monkeypatch)
    param = torch.nn.Parameter(torch.randn(4))
    assert not cuda_dispatch.takes_dense(param, group_rule(adagrad.Adagrad([param]).param_groups[0]))
    assert cuda_dispatch.sparse_kernel(param.view(2, 2), param.view(2, 2), param.view(2, 2)) \
        is None
    _train([param], EXTRA_OPTIONS, steps=1)
    assert recorder.calls == ["cpu"]


@pytest.mark.parametrize("lr_tensor", [False, True])
def test_triton_takes_every_extra_option_without_host_reads(monkeypatch, lr_tensor):
    fake_cuda(monkeypatch, fused=True)
    recorder = _recorder(monkeypatch)
    _train(_mixed_params(), EXTRA_OPTIONS, lr_tensor=lr_tensor, guard=_host_guard(monkeypatch))
    assert set(recorder.calls) == {"triton"}
    assert len(recorder.calls) == 3 * 3  # each step: one launch per dtype


@pytest.mark.parametrize("lr_tensor", [False, True])
def test_torch_fused_takes_torchs_rule_without_host_reads(monkeypatch, lr_tensor):
    """torch's configuration goes to torch's fused kernel where the device has one (here
    torch's CPU kernel stands in for its CUDA one), batched per dtype; bf16 parameters
    with float32 state are not torch's rule, and take Triton."""
    fake_cuda(monkeypatch, fused=True)
    recorder = _recorder(monkeypatch)
    params = [torch.nn.Parameter(torch.randn(s)) for s in [(5, 3), (triton_dense.BLOCK + 1,), (0,)]]
    params.append(torch.nn.Parameter(torch.randn(9).bfloat16()))
    _train(params, TORCH_OPTIONS, lr_tensor=lr_tensor, guard=_host_guard(monkeypatch))
    assert recorder.calls == ["torch_fused", "triton"] * 3


def test_triton_takes_torchs_rule_where_torch_has_no_fused_kernel(monkeypatch):
    fake_cuda(monkeypatch, fused=False)
    recorder = _recorder(monkeypatch)
    _train([torch.nn.Parameter(torch.randn(6, 2))], TORCH_OPTIONS)
    assert recorder.calls == ["triton"] * 3


@pytest.mark.parametrize("options", [TORCH_OPTIONS, EXTRA_OPTIONS])
def test_foreach_where_triton_is_missing(monkeypatch, options):
    fake_cuda(monkeypatch, fused=False, triton_present=False)
    recorder = _recorder(monkeypatch)
    _train(_mixed_params(), options, lr_tensor=True, guard=_host_guard(monkeypatch))
    assert set(recorder.calls) == {"foreach"}


def test_foreach_for_what_triton_does_not_take(monkeypatch):
    """float64, a float64 accumulator for float32 parameters, non-contiguous tensors."""
    fake_cuda(monkeypatch, fused=False)
    recorder = _recorder(monkeypatch)
    params = [torch.nn.Parameter(torch.randn(4, dtype=torch.float64)),
              torch.nn.Parameter(torch.randn(3, 4).t())]
    _train(params, EXTRA_OPTIONS, steps=2)
    wide_state = torch.nn.Parameter(torch.randn(5))
    _train([wide_state], {**EXTRA_OPTIONS, "state_dtype": torch.float64}, steps=1)
    assert set(recorder.calls) == {"foreach"}


def test_differentiable_is_left_to_the_torch_ops_kernel(monkeypatch):
    fake_cuda(monkeypatch, fused=True)
    param = torch.nn.Parameter(torch.randn(4))
    group = adagrad.Adagrad([param], differentiable=True).param_groups[0]
    assert not cuda_dispatch.takes_dense(param, group_rule(group))
    assert cuda_dispatch.takes_dense(param, group_rule({**group, "differentiable": False}))


def test_meta_tensors_step_without_reading_a_value(monkeypatch):
    """On meta tensors (no data: any host read raises) the step runs through the
    dispatch: foreach, as on any device without torch's fused kernel or Triton."""
    recorder = _recorder(monkeypatch)
    for options in (TORCH_OPTIONS, EXTRA_OPTIONS):
        params = [torch.nn.Parameter(torch.empty(s, device="meta")) for s in [(3, 2), (5,)]]
        optimizer = adagrad.Adagrad(params, **options)
        for p in params:
            p.grad = torch.empty_like(p)
        optimizer.step()
        optimizer.step()
    assert recorder.calls == ["foreach"] * 4


# -- sparse ---------------------------------------------------------------------------

SPARSE_OPTIONS = dict(lr=0.1, weight_decay=0.05, sparse_weight_decay="lazy",
                      accumulator_decay=0.9, eps_placement="inside")


def _sparse_recorder(monkeypatch):
    recorder = Recorder(monkeypatch)
    recorder.watch(triton_sparse, "sparse_adagrad_", "triton")
    recorder.watch(portable, "sparse_adagrad_", "portable")
    return recorder


def _reference_sparse_steps(table, batches, options):
    theta, state = to64(table), ref.adagrad_sparse_init(to64(table))
    kwargs = dict(lr=options["lr"], weight_decay=options["weight_decay"],
                  sparse_weight_decay=options["sparse_weight_decay"],
                  accumulator_decay=options["accumulator_decay"],
                  eps_placement=options["eps_placement"])
    for ids, values in batches:
        theta, state = ref.adagrad_sparse(theta, ids, values, state, **kwargs)
    theta, state = ref.adagrad_sparse_flush(
        theta, state, weight_decay=kwargs["weight_decay"],
        accumulator_decay=kwargs["accumulator_decay"],
        sparse_weight_decay=kwargs["sparse_weight_decay"])
    return theta, state


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_sparse_optimizer_path_with_lazy_clocks(monkeypatch, dtype):
    """torch's sparse layer, our optimizer: duplicates, lazy decoupled decay and ρ through
    the clocks, over three steps, against the reference after flush()."""
    fake_cuda(monkeypatch)
    recorder = _sparse_recorder(monkeypatch)
    layer = torch.nn.Embedding(10, 3, sparse=True).to(dtype)
    start = layer.weight.detach().clone()
    optimizer = adagrad.Adagrad(layer.parameters(), **SPARSE_OPTIONS)
    batches = []
    for ids in ([1, 4, 1, 9], [4, 4, 0], [7, 1]):
        ids = torch.tensor(ids)
        layer.zero_grad()
        (layer(ids).float() * torch.arange(3.0)).sum().backward()
        batches.append((ids.numpy(), np.tile(np.arange(3.0), (len(ids), 1))))
        optimizer.step()
    optimizer.flush()
    theta, state = _reference_sparse_steps(start, batches, SPARSE_OPTIONS)
    np.testing.assert_allclose(to64(layer.weight), theta, rtol=4 * RTOL[dtype], atol=1e-5)
    np.testing.assert_allclose(to64(optimizer.state[layer.weight]["sum"]), state["sum"],
                               rtol=1e-5, atol=ATOL)
    assert recorder.calls == ["triton"] * 3


def test_triton_sparse_fused_bag_layer(monkeypatch):
    """adagrad.nn.EmbeddingBag updating in backward (mean bags: value_of and scale)."""
    fake_cuda(monkeypatch)
    recorder = _sparse_recorder(monkeypatch)
    layer = EmbeddingBag(8, 4, mode="mean")
    start = layer.weight.detach().clone()
    optimizer = adagrad.Adagrad(layer.parameters(), **SPARSE_OPTIONS)
    layer.update_in_backward(optimizer)
    ids, offsets = torch.tensor([2, 5, 2, 7, 2]), torch.tensor([0, 3])
    batches = []
    for _ in range(2):
        layer(ids, offsets).sum().backward()
        per_position = np.array([1 / 3] * 3 + [1 / 2] * 2)[:, None] * np.ones((5, 4))
        batches.append((ids.numpy(), per_position))
    optimizer.flush()
    theta, _ = _reference_sparse_steps(start, batches, SPARSE_OPTIONS)
    np.testing.assert_allclose(to64(layer.weight), theta, rtol=1e-5, atol=1e-6)
    assert recorder.calls == ["triton"] * 2


def test_sparse_row_update_has_no_host_read(monkeypatch):
    """Past the optimizer's index check (one aminmax), the row update reads nothing on
    the host: grouping, clocks and kernels stay on the device."""
    fake_cuda(monkeypatch)
    recorder = _sparse_recorder(monkeypatch)
    table, state_sum = torch.randn(6, 3), torch.rand(6, 3)
    clocks = RowClocks(-0.1, torch.zeros(6, dtype=torch.float64), -0.2,
                       torch.zeros(6, dtype=torch.float64))
    with no_host_reads(monkeypatch):
        kernels.sparse_adagrad_(table, state_sum, torch.tensor([5, 0, 5]), torch.randn(3, 3),
                                StepRule(lr=0.1, eps=1e-10), clocks)
    assert recorder.calls == ["triton"]
    assert clocks.row_param_log[[0, 5]].tolist() == [-0.1, -0.1]


def test_sparse_takes_torch_ops_where_triton_is_missing(monkeypatch):
    fake_cuda(monkeypatch, triton_present=False)
    recorder = _sparse_recorder(monkeypatch)
    table = torch.randn(4, 2)
    kernels.sparse_adagrad_(table, torch.zeros(4, 2), torch.tensor([1, 1]), torch.randn(2, 2),
                            StepRule(lr=0.1, eps=1e-10), RowClocks())
    assert recorder.calls == ["portable"]
