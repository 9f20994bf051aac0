"""`RowWiseAdagrad` against the libraries it reproduces, on the same training steps:

- FBGEMM's ``EXACT_ROWWISE_ADAGRAD`` (``SplitTableBatchedEmbeddingBagsCodegen`` on the
  CPU, the update inside backward) against ``adagrad.nn.EmbeddingBag`` +
  ``RowWiseAdagrad(convention="fbgemm")``: weights and the per-row accumulator
  (``momentum1``); without weight decay, which FBGEMM's CPU kernel ignores (shown here);
- TorchRec's ``RowWiseAdagrad`` (dense gradients of a 2-d table; its ``sum`` is
  ``(rows, 1)``) against ours with torch's defaults, L2 decay, lr_decay, maximize.

Each is skipped, with the reason, where the library does not import (CI's environment
has neither; ``fbgemm-gpu-cpu==1.8.0`` with torch 2.13.0 does, and so does ``torchrec``
installed next to it). The loss depends on the weights, so a difference in any step
would grow through the later ones.
"""

from __future__ import annotations

import importlib

import pytest
import torch

import adagrad.nn
from adagrad import RowWiseAdagrad

pytestmark = pytest.mark.filterwarnings("ignore:Sparse invariant checks")

ROWS, WIDTH, BAGS, IDS_PER_BAG, STEPS, LR = 1000, 32, 64, 4, 10, 0.05


def _import(name: str):
    try:
        return importlib.import_module(name)
    except Exception as error:  # noqa: BLE001 - any import failure means "not here"
        pytest.skip(f"{name} does not import here ({type(error).__name__}: {error})")


def _batches(seed: int):
    """Batches with hot rows (duplicates within and across bags) and a long tail."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(STEPS):
        hot = torch.randint(0, 20, (BAGS * IDS_PER_BAG // 2,), generator=gen)
        tail = torch.randint(0, ROWS, (BAGS * IDS_PER_BAG // 2,), generator=gen)
        out.append(torch.cat([hot, tail])[torch.randperm(BAGS * IDS_PER_BAG, generator=gen)])
    return out


def _loss(out: torch.Tensor, head: torch.Tensor) -> torch.Tensor:
    y = out @ head
    return ((y - 1) ** 2).sum() + 0.1 * (y ** 3).sum()


def _fbgemm_table(init: torch.Tensor, weight_decay: float, mode_name: str):
    """FBGEMM's CPU table with EXACT_ROWWISE_ADAGRAD (as benchmarks/sparse_embedding.py
    builds it), ε = 1e-8 (its default), weights ``init``."""
    _import("fbgemm_gpu")
    from fbgemm_gpu.split_embedding_configs import EmbOptimType
    from fbgemm_gpu.split_table_batched_embeddings_ops_common import (
        ComputeDevice,
        EmbeddingLocation,
        PoolingMode,
    )
    from fbgemm_gpu.split_table_batched_embeddings_ops_training import (
        SplitTableBatchedEmbeddingBagsCodegen,
    )
    from fbgemm_gpu.tbe.config.optimizer_config import WeightDecayMode

    tbe = SplitTableBatchedEmbeddingBagsCodegen(
        [(ROWS, WIDTH, EmbeddingLocation.HOST, ComputeDevice.CPU)],
        optimizer=EmbOptimType.EXACT_ROWWISE_ADAGRAD, learning_rate=LR, eps=1e-8,
        weight_decay=weight_decay, weight_decay_mode=getattr(WeightDecayMode, mode_name),
        pooling_mode=PoolingMode.SUM, device=torch.device("cpu"))
    with torch.no_grad():
        tbe.split_embedding_weights()[0].copy_(init)
    return tbe


def _max_rel(actual: torch.Tensor, expected: torch.Tensor, before: torch.Tensor) -> float:
    """The largest difference relative to its row's magnitude, max |a - b| / max over
    the row of (|b|, |before|): one float32 rounding of the row's largest entry is ~6e-8.
    (Entry by entry, a difference of one rounding carried by an entry that an update
    brought near 0 would read as any size.)"""
    if expected.dim() == 1:
        scale = expected.abs().maximum(before.abs())
    else:
        scale = expected.abs().amax(1, keepdim=True).maximum(before.abs().amax(1, keepdim=True))
    return float(((actual - expected).abs() / scale.clamp_min(1e-30)).max())


@pytest.mark.parametrize("loss_kind", ["linear", "nonlinear"])
def test_fused_bag_matches_fbgemm_exact_rowwise_adagrad(loss_kind):
    """10 steps of the same bags. "linear": loss = Σ out·head, so both see the same
    gradients every step and the whole trajectory is compared. "nonlinear": the
    gradients depend on the weights, which would amplify one rounding into any size
    over steps, so each step starts ours from FBGEMM's weights and accumulator and the
    step itself is compared."""
    init = torch.randn(ROWS, WIDTH, generator=torch.Generator().manual_seed(0)) * 0.1
    head = torch.randn(WIDTH, generator=torch.Generator().manual_seed(1))
    loss = (lambda out: (out @ head).sum()) if loss_kind == "linear" else (
        lambda out: _loss(out, head))
    tbe = _fbgemm_table(init, 0.0, "NONE")
    ours = adagrad.nn.EmbeddingBag(ROWS, WIDTH, mode="sum")
    with torch.no_grad():
        ours.weight.copy_(init)
    opt = RowWiseAdagrad(ours.parameters(), lr=LR, convention="fbgemm")
    ours.update_in_backward(opt)
    fbgemm_weight = tbe.split_embedding_weights()[0]
    fbgemm_sum = tbe.split_optimizer_states()[0][0].view(ROWS)
    offsets = torch.arange(0, BAGS * IDS_PER_BAG + 1, IDS_PER_BAG)
    worst = [0.0, 0.0]
    for step, ids in enumerate(_batches(2)):
        if loss_kind == "nonlinear" and step > 0:
            with torch.no_grad():
                ours.weight.copy_(fbgemm_weight)
                opt.state[ours.weight]["sum"].copy_(fbgemm_sum)
        before_weight, before_sum = fbgemm_weight.clone(), fbgemm_sum.clone()
        loss(tbe(ids, offsets)).backward()  # FBGEMM updates inside backward
        loss(ours(ids, offsets[:-1])).backward()  # so do we
        worst[0] = max(worst[0], _max_rel(ours.weight.detach(), fbgemm_weight, before_weight))
        worst[1] = max(worst[1], _max_rel(opt.state[ours.weight]["sum"], fbgemm_sum, before_sum))
    print(f"max rel diff vs FBGEMM ({loss_kind}): weight {worst[0]:.2e}, sum {worst[1]:.2e}")
    assert worst[0] <= 1e-6 and worst[1] <= 1e-6, worst
    assert (fbgemm_sum > 0).sum() > ROWS // 4  # the run touched many rows


def test_fbgemm_cpu_ignores_weight_decay():
    """Why the comparison above has no weight decay: fbgemm-gpu-cpu's CPU kernel of
    EXACT_ROWWISE_ADAGRAD (1.8.0) leaves both ``WeightDecayMode.L2`` and ``DECOUPLE``
    out (the result equals ``NONE``'s), so FBGEMM's decay formulas, which :ref:`algo-rowwise` and our
    ``sparse_weight_decay="touched"`` follow, can be compared with its source only. If
    this test fails, FBGEMM applies them now: compare them here too."""
    init = torch.randn(ROWS, WIDTH, generator=torch.Generator().manual_seed(0)) * 0.1
    ids = _batches(3)[0]
    offsets = torch.arange(0, BAGS * IDS_PER_BAG + 1, IDS_PER_BAG)
    results = []
    for mode_name, weight_decay in (("NONE", 0.0), ("L2", 0.5), ("DECOUPLE", 0.5)):
        tbe = _fbgemm_table(init, weight_decay, mode_name)
        tbe(ids, offsets).sum().backward()
        results.append((tbe.split_embedding_weights()[0].clone(),
                        tbe.split_optimizer_states()[0][0].clone()))
    for weight, state in results[1:]:
        assert torch.equal(weight, results[0][0]) and torch.equal(state, results[0][1])


@pytest.mark.parametrize("options", [dict(), dict(weight_decay=0.05, lr_decay=0.1),
                                     dict(maximize=True, initial_accumulator_value=0.1)])
def test_dense_matches_torchrec_rowwise_adagrad(options):
    module = _import("torchrec.optim.rowwise_adagrad")
    gen = torch.Generator().manual_seed(0)
    start = torch.randn(50, 8, generator=gen)
    theirs, ours = start.clone().requires_grad_(True), start.clone().requires_grad_(True)
    their_opt = module.RowWiseAdagrad([theirs], lr=0.1, **options)
    our_opt = RowWiseAdagrad([ours], lr=0.1, **options)
    head = torch.randn(8, generator=gen)
    for _ in range(STEPS):
        x = torch.randn(16, 50, generator=gen)
        for param, opt in ((theirs, their_opt), (ours, our_opt)):
            opt.zero_grad()
            _loss(x @ param, head).backward()
            opt.step()
    their_sum = their_opt.state[theirs]["sum"].view(-1)
    print(f"max rel diff vs TorchRec {options}: weight "
          f"{_max_rel(ours.detach(), theirs.detach(), start):.2e}, sum "
          f"{_max_rel(our_opt.state[ours]['sum'], their_sum, their_sum):.2e}")
    torch.testing.assert_close(ours.detach(), theirs.detach(), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(our_opt.state[ours]["sum"],
                               their_opt.state[theirs]["sum"].view(-1), rtol=1e-6, atol=0)
