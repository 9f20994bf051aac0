"""Lazy-decay clocks on devices without float64 (issue 13): the snapshots live on the CPU
(`clock_device`) and the factors reach the device in float32 (`factor_dtype`). No such
device here: the float32-factor branch is exercised by declaring the CPU one, on the
torch-ops kernels (float16 tables), against the float64 reference."""

from __future__ import annotations

import numpy as np
import torch
from conftest import to64

import adagrad
from adagrad import reference as ref
from adagrad.kernels.engine import clocks

OPTIONS = dict(lr=0.1, weight_decay=0.05, sparse_weight_decay="lazy", accumulator_decay=0.9)


def test_clocks_of_mps_tensors_live_on_the_cpu():
    assert clocks.clock_device(torch.device("mps")) == torch.device("cpu")
    assert clocks.factor_dtype(torch.device("mps")) == torch.float32
    for kind in ("cpu", "cuda"):
        assert clocks.clock_device(torch.device(kind)) == torch.device(kind)
        assert clocks.factor_dtype(torch.device(kind)) == torch.float64


def test_lazy_decay_with_float32_factors_matches_the_reference(monkeypatch):
    monkeypatch.setattr(clocks, "DEVICES_WITHOUT_FLOAT64", ("cpu",))
    layer = torch.nn.Embedding(8, 3, sparse=True).half()
    optimizer = adagrad.Adagrad(layer.parameters(), **OPTIONS)
    theta = to64(layer.weight)
    state = ref.adagrad_sparse_init(theta)
    for ids in ([1, 5, 1], [5, 2], [7, 7, 0]):
        layer.zero_grad()
        layer(torch.tensor(ids)).float().sum().backward()
        optimizer.step()
        theta, state = ref.adagrad_sparse(theta, ids, np.ones((len(ids), 3)), state, **OPTIONS)
    optimizer.catch_up_rows(layer.weight, torch.tensor([2, 2, 3]))  # a fused layer's lookup
    optimizer.flush()
    theta, state = ref.adagrad_sparse_flush(theta, state, weight_decay=0.05,
                                            accumulator_decay=0.9, sparse_weight_decay="lazy")
    np.testing.assert_allclose(to64(layer.weight), theta, rtol=2e-3, atol=1e-4)
    np.testing.assert_allclose(to64(optimizer.state[layer.weight]["sum"]), state["sum"],
                               rtol=1e-5, atol=1e-6)
