"""The family members' dense Triton kernels (issue 13; `triton_members`) in Triton's
interpreter against the float64 reference, and their dispatch on CPU tensors seen as
CUDA ones: proximal Adagrad (:ref:`algo-proximal`), dual averaging
(:ref:`algo-dual-averaging`), FTRL (:ref:`algo-ftrl`), and row-wise Adagrad's 1-D tensors (the Adagrad kernel)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import to64
from triton_support import ATOL, KERNEL_DTYPES, RTOL, Recorder, fake_cuda

import adagrad
from adagrad import reference as ref
from adagrad.kernels.adagrad import triton as triton_dense
from adagrad.kernels.engine import triton_members
from adagrad.kernels.engine.rule import DualAveragingRule, FtrlRule, ProximalRule

SHAPES = [(0,), (1,), (3, 5), (triton_members.BLOCK + 1,)]
# the interpreter computes masked-off lanes too (from zeros): numpy warns of their 0/0
# float32 in the default suite, the half dtypes in the slow pass
DTYPES = [torch.float32] + [pytest.param(d, marks=pytest.mark.slow) for d in KERNEL_DTYPES[1:]]
# the slow pass: the default suite runs Adagrad's Triton kernels (test_triton_kernels.py)
pytestmark = [pytest.mark.slow,
              pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning",
                                         "ignore:invalid value:RuntimeWarning")]


def _tensors(shape, dtype, gen, states):
    param = torch.randn(shape, generator=gen).to(dtype)
    grad = torch.randn(shape, generator=gen).to(dtype)
    return param, grad, [torch.rand(shape, generator=gen) for _ in range(states)]


def _close(actual, expected, dtype, atol=ATOL):
    np.testing.assert_allclose(to64(actual), expected, rtol=RTOL[dtype], atol=atol)


def _each_shape(dtype, states, step_and_reference, seed=0):
    gen = torch.Generator().manual_seed(seed)
    for shape in SHAPES:
        param, grad, sums = _tensors(shape, dtype, gen, states)
        expected = step_and_reference(param, grad, sums)
        _close(param, expected[0], dtype)
        for state, value in zip(sums, expected[1:]):  # float32 sums of terms up to ~10
            _close(state, value, torch.float32, atol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("maximize", [False, True])
def test_triton_proximal(dtype, maximize):
    rule = ProximalRule(lr=0.1, l1=0.05, l2=0.2, eps=1e-8, maximize=maximize)

    def step(param, grad, sums):
        theta, state = ref.proximal_adagrad(to64(param), to64(grad),
                                            {"step": 0, "sum": to64(sums[0])}, lr=0.1, l1=0.05,
                                            l2=0.2, eps=1e-8, maximize=maximize)
        triton_members.dense_proximal_(param, grad, sums[0], rule)
        return theta, state["sum"]
    _each_shape(dtype, 1, step)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("l1", [0.0, 0.3])
def test_triton_dual_averaging(dtype, l1):
    rule = DualAveragingRule(lr=0.1, step=4, l1=l1, l2=0.1, maximize=l1 > 0)

    def step(param, grad, sums):
        z, G = sums
        theta, state = ref.adagrad_da(to64(param), to64(grad),
                                      {"step": 3, "sum": to64(G), "grad_sum": to64(z)},
                                      lr=0.1, l1=l1, l2=0.1, maximize=l1 > 0)
        triton_members.dense_dual_averaging_(param, grad, z, G, rule)
        return theta, state["grad_sum"], state["sum"]
    _each_shape(dtype, 2, step)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("l1", [0.0, 0.5])
def test_triton_ftrl(dtype, l1):
    rule = FtrlRule(lr=0.1, beta=1.0, l1=l1, l2=0.1)

    def step(param, grad, sums):
        z, n = sums
        theta, state = ref.ftrl(to64(param), to64(grad),
                                {"step": 0, "z": to64(z), "n": to64(n)}, lr=0.1, beta=1.0,
                                l1=l1, l2=0.1)
        triton_members.dense_ftrl_(param, grad, z, n, rule)
        return theta, state["z"], state["n"]
    _each_shape(dtype, 2, step)


MEMBERS = [
    (adagrad.ProximalAdagrad, dict(lr=0.1, l1=0.01, l2=0.1), "proximal"),
    (adagrad.AdagradDA, dict(lr=0.1, l1=0.01, l2=0.1), "dual_averaging"),
    (adagrad.FTRL, dict(lr=0.1, l1=0.01, l2=0.1), "ftrl"),
    (adagrad.RowWiseAdagrad, dict(lr=0.1), "adagrad"),
]


@pytest.mark.parametrize(("member", "options", "kernel"), MEMBERS)
def test_triton_members_dispatch_on_cuda(monkeypatch, member, options, kernel):
    """On CUDA each member's dense step of a float32 or bf16 tensor (1-D: row-wise
    Adagrad is element-wise there) takes its Triton kernel, and matches its result on
    the CPU kernels (themselves held to the reference by the members' own tests) after
    three steps."""
    recorder = Recorder(monkeypatch)
    for name in ("dense_proximal_", "dense_dual_averaging_", "dense_ftrl_"):
        recorder.watch(triton_members, name, name[len("dense_"):-1])
    recorder.watch(triton_dense, "dense_adagrad_", "adagrad")
    gen = torch.Generator().manual_seed(0)
    start = [torch.randn(s, generator=gen).to(dt) for s, dt in
             [((7,), torch.float32), ((triton_members.BLOCK + 3,), torch.float32),
              ((5,), torch.bfloat16)]]
    grads = [[torch.randn(p.shape, generator=gen).to(p.dtype) for p in start]
             for _ in range(3)]
    results = []
    for on_cuda in (False, True):
        with monkeypatch.context() as patch:
            if on_cuda:
                fake_cuda(patch)
            params = [torch.nn.Parameter(p.clone()) for p in start]
            optimizer = member(params, **options)
            for step_grads in grads:
                for p, g in zip(params, step_grads):
                    p.grad = g.clone()
                optimizer.step()
            results.append(params)
    assert recorder.calls == [kernel] * 9
    for cpu, cuda in zip(*results):
        np.testing.assert_allclose(to64(cuda), to64(cpu), rtol=4 * RTOL[cpu.dtype], atol=1e-5)
