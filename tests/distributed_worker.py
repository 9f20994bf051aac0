"""Multi-process runs for tests/test_distributed.py: each rank of a gloo group on loopback
runs `SCENARIOS[name]` and raises (which `torch.multiprocessing.spawn` reports) if its
result differs from the independent reference, computed in the same process without
torch.distributed: a single process trained on the global batch, torch's own sparse
layer, or `torch.optim.Adagrad`.

Every batch is a deterministic function of the step (a seeded generator); rank ``r`` of
``W`` takes rows ``r·B/W ..`` of the global batch of ``B`` samples, and the loss is the
mean over its samples, so the average of the ranks' gradients (what DDP applies) is the
global batch's gradient.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from functools import partial

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.optim import ZeroRedundancyOptimizer
from torch.distributed.tensor import DTensor, Replicate, Shard
from torch.distributed.tensor.debug import CommDebugMode
from torch.distributed.tensor.parallel import (
    ColwiseParallel,
    RowwiseParallel,
    parallelize_module,
)
from torch.nn.parallel import DistributedDataParallel as DDP

import adagrad
import adagrad.nn
from adagrad.distributed import ignore_fused_tables, load_checkpoint, save_checkpoint

warnings.filterwarnings("ignore", message="Sparse invariant checks")
warnings.filterwarnings("ignore", message=".*TypedStorage.*")

ROWS, DIM, IDS, GLOBAL_BATCH, STEPS = 40, 4, 3, 8, 3

#: every member of the family, built with options that exercise its state (lazy decay
#: clocks for Adagrad, per-row state for RowWiseAdagrad, catch-up tables, l1).
OPTIMIZERS: dict[str, partial] = {
    "Adagrad": partial(adagrad.Adagrad, lr=0.1, weight_decay=0.01, accumulator_decay=0.9,
                       decoupled_weight_decay=True, sparse_weight_decay="lazy"),
    "RowWiseAdagrad": partial(adagrad.RowWiseAdagrad, lr=0.1),
    "ProximalAdagrad": partial(adagrad.ProximalAdagrad, lr=0.1, l1=1e-3, l2=1e-3,
                               sparse_catch_up=True),
    "AdagradDA": partial(adagrad.AdagradDA, lr=0.1, l1=1e-3, sparse_catch_up=True),
    "FTRL": partial(adagrad.FTRL, lr=0.1, l1=1e-3),
    "AdagradNorm": partial(adagrad.AdagradNorm, lr=0.1),
    "FullMatrixAdagrad": partial(adagrad.FullMatrixAdagrad, lr=0.1),
    # one distance per tensor: ZeRO gives each rank a subset of the parameters, so a
    # group-wide distance would be measured over that subset only
    "DoGAdagrad": partial(adagrad.DoGAdagrad, scope="tensor"),
}
SHARDABLE = adagrad.members.names(shardable=True)  # checked in tests/test_members.py
#: what `adagrad.nn`'s fused tables take (AdagradNorm needs its groups' norm; full-matrix
#: refuses sparse gradients).
FUSABLE = SHARDABLE
#: the members whose sparse update is not the dense one (no catch-up of untouched rows):
#: their fused tables are compared with torch's sparse layer, the others' with dense.
SPARSE_ONLY = ("FTRL",)


class Net(nn.Module):
    """A table and a dense head; ``table`` is torch's layer or ours: a bag (mean, or sum
    with per-sample weights) or an `Embedding` whose rows are averaged."""

    def __init__(self, table: nn.Module) -> None:
        super().__init__()
        self.table = table
        self.head = nn.Linear(DIM, 1)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if not isinstance(self.table, nn.EmbeddingBag):
            return self.head(self.table(ids).mean(1)).squeeze(1)
        weights = (1 + ids % 3).float() / 3 if self.table.mode == "sum" else None
        return self.head(self.table(ids, per_sample_weights=weights)).squeeze(1)


#: the tables `make_net` builds: (torch's class, keyword arguments).
LAYERS = {"bag": (nn.EmbeddingBag, dict(mode="mean")),
          "weighted-bag": (nn.EmbeddingBag, dict(mode="sum")),
          "embedding": (nn.Embedding, dict(padding_idx=0))}


def make_net(kind: str = "torch", sparse: bool = True, layer: str = "bag") -> Net:
    torch.manual_seed(0)
    torch_class, kwargs = LAYERS[layer]
    cls = getattr(adagrad.nn, torch_class.__name__) if kind == "ours" else torch_class
    return Net(cls(ROWS, DIM, sparse=sparse, **kwargs))


def batch(step: int, rank: int = 0, world: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1000 + step)
    ids = torch.randint(0, ROWS, (GLOBAL_BATCH, IDS), generator=generator)
    target = torch.randn(GLOBAL_BATCH, generator=generator)
    local = GLOBAL_BATCH // world
    return ids[rank * local:(rank + 1) * local], target[rank * local:(rank + 1) * local]


def train(model: nn.Module, optimizer: torch.optim.Optimizer, steps: range,
          rank: int = 0, world: int = 1, communicates: bool = True) -> None:
    """``communicates=False``: raise if a step after the first (which checks that the
    ranks agree) runs any collective, e.g. gathers a sharded parameter or its state."""
    for step in steps:
        ids, target = batch(step, rank, world)
        optimizer.zero_grad()
        nn.functional.mse_loss(model(ids), target).backward()
        with CommDebugMode() as collectives:
            optimizer.step()
        assert communicates or step == steps[0] or not collectives.get_total_counts(), \
            f"step {step} ran collectives: {collectives.get_comm_counts()}"


def reference(name: str, sparse: bool = True, steps: range = range(STEPS),
              layer: str = "bag") -> Net:
    """One process, the global batch, torch's own layer; pending lazy work flushed."""
    model = make_net("torch", sparse, layer)
    optimizer = OPTIMIZERS[name](model.parameters())
    train(model, optimizer, steps)
    optimizer.flush()
    return model


def full(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def assert_close(model: nn.Module, expected: nn.Module, what: str) -> None:
    for (name, got), want in zip(model.state_dict().items(), expected.state_dict().values()):
        torch.testing.assert_close(full(got), want, rtol=1e-5, atol=1e-6,
                                   msg=lambda m, name=name: f"{what}, {name}: {m}")


def assert_replicas_identical(model: nn.Module, what: str) -> None:
    for name, tensor in model.state_dict().items():
        everyone = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(everyone, tensor.contiguous())
        for rank, other in enumerate(everyone):
            assert torch.equal(other, tensor), f"{what}: {name} differs on rank {rank}"


def expect_error(kind: type[Exception], words: tuple[str, ...], run: Callable[[], object]) -> None:
    try:
        run()
    except kind as error:
        missing = [w for w in words if w not in str(error)]
        assert not missing, f"{error!r} lacks {missing}"
        return
    raise AssertionError(f"expected {kind.__name__} mentioning {words}")


# -- scenarios ---------------------------------------------------------------------------


def ddp_every_member(rank: int, world: int, tmp: str) -> None:
    """Item 1: DDP with sparse (and, for full-matrix, dense) embedding gradients."""
    for name in OPTIMIZERS:
        sparse = name != "FullMatrixAdagrad"
        model = DDP(make_net("torch", sparse))
        optimizer = OPTIMIZERS[name](model.parameters())
        train(model, optimizer, range(STEPS), rank, world)
        assert_replicas_identical(model.module, f"DDP {name}")
        optimizer.flush()
        assert_close(model.module, reference(name, sparse), f"DDP {name}")
    ours, torchs = DDP(make_net("torch")), DDP(make_net("torch"))
    train(ours, adagrad.Adagrad(ours.parameters(), lr=0.1), range(STEPS), rank, world)
    train(torchs, torch.optim.Adagrad(torchs.parameters(), lr=0.1), range(STEPS), rank, world)
    assert_close(ours.module, torchs.module, "DDP Adagrad against torch.optim.Adagrad")


def fused_tables(rank: int, world: int, tmp: str) -> None:
    """Item 2: fused tables with a process group, the rest of the model under DDP."""
    group = dist.group.WORLD
    runs = [(name, "bag") for name in FUSABLE] + [
        (name, layer) for name in ("Adagrad", "RowWiseAdagrad")
        for layer in ("weighted-bag", "embedding")]
    for name, layer in runs:
        net = make_net("ours", layer=layer)
        optimizer = OPTIMIZERS[name](net.parameters())
        net.table.update_in_backward(optimizer, process_group=group)
        assert ignore_fused_tables(net) == ["table.weight"]
        model = DDP(net)
        train(model, optimizer, range(STEPS), rank, world)
        what = f"fused {layer} {name}"
        assert_replicas_identical(net, what)
        optimizer.flush()  # the fused layer catches rows up at lookup: it equals dense
        assert_close(net, reference(name, sparse=name in SPARSE_ONLY, layer=layer), what)
    net = make_net("ours")
    net.table.update_in_backward(adagrad.Adagrad(net.parameters()))
    model = DDP(net)
    expect_error(RuntimeError, ("process_group", "ignore_fused_tables"),
                 lambda: model(batch(0, rank, world)[0]))
    net = make_net("ours")
    net.table.update_in_backward(adagrad.Adagrad(net.parameters()), process_group=group)
    model = DDP(net)  # the weight left among DDP's parameters
    expect_error(RuntimeError, ("ignore_fused_tables",), lambda: model(batch(0, rank, world)[0]))


def zero_redundancy(rank: int, world: int, tmp: str) -> None:
    """Item 3: ZeroRedundancyOptimizer(optimizer_class=ours) equals the unsharded run."""
    for name, member in OPTIMIZERS.items():
        model = DDP(make_net("torch", sparse=False))
        optimizer = ZeroRedundancyOptimizer(model.parameters(), optimizer_class=member.func,
                                            **member.keywords)
        train(model, optimizer, range(STEPS), rank, world)
        assert_replicas_identical(model.module, f"ZeRO {name}")
        optimizer.optim.flush()
        assert_close(model.module, reference(name, sparse=False), f"ZeRO {name}")


def fsdp_net(world: int, net: Net | None = None) -> Net:
    """``net`` (by default `make_net`'s, dense) with its table and itself fully sharded."""
    net = net if net is not None else make_net("torch", sparse=False)
    mesh = init_device_mesh("cpu", (world,))
    fully_shard(net.table, mesh=mesh)
    fully_shard(net, mesh=mesh)
    return net


def fsdp(rank: int, world: int, tmp: str) -> None:
    """Item 4: FSDP2; state is DTensor, sharded as the parameter (rows with rows)."""
    for name in SHARDABLE:
        net = fsdp_net(world)
        optimizer = OPTIMIZERS[name](net.parameters())
        train(net, optimizer, range(STEPS), rank, world, communicates=False)
        assert_close(net, reference(name, sparse=False), f"FSDP2 {name}")
        _assert_sharded_like(optimizer, net.table.weight)
    for name in ("AdagradNorm", "FullMatrixAdagrad", "DoGAdagrad"):
        net = fsdp_net(world)
        optimizer = OPTIMIZERS[name](net.parameters())
        before = net.table.weight.to_local().clone()
        expect_error(NotImplementedError, (name, "sharded"),
                     lambda net=net, optimizer=optimizer: train(net, optimizer, range(1),
                                                                rank, world))
        assert torch.equal(net.table.weight.to_local(), before) and not optimizer.state


def _assert_sharded_like(optimizer: torch.optim.Optimizer, weight: DTensor) -> None:
    """Every non-scalar state tensor of ``weight`` is a DTensor sharded by rows, its local
    shard holding the local rows (per-row state included)."""
    for key, value in optimizer.state[weight].items():
        if value.dim() > 0:
            assert isinstance(value, DTensor) and value.placements == (Shard(0),), key
            assert value.to_local().shape[0] == weight.to_local().shape[0], key


def tensor_parallel(rank: int, world: int, tmp: str) -> None:
    """Item 5: an embedding table sharded by rows (RowwiseParallel)."""
    mesh = init_device_mesh("cpu", (world,))
    for name in SHARDABLE:
        torch.manual_seed(0)
        table = parallelize_module(nn.Embedding(ROWS, DIM), mesh,
                                   RowwiseParallel(input_layouts=Replicate()))
        torch.manual_seed(0)
        expected = nn.Embedding(ROWS, DIM)
        optimizer, expected_optimizer = (OPTIMIZERS[name](table.parameters()),
                                         OPTIMIZERS[name](expected.parameters()))
        for step in range(STEPS):  # every rank sees the global batch: TP, not DP
            ids, target = batch(step)
            for module, opt in ((table, optimizer), (expected, expected_optimizer)):
                opt.zero_grad()
                out = module(ids).sum((1, 2))
                nn.functional.mse_loss(out.full_tensor() if isinstance(out, DTensor) else out,
                                       target).backward()
                opt.step()
        torch.testing.assert_close(table.weight.full_tensor(), expected.weight,
                                   rtol=1e-5, atol=1e-6)
        _assert_sharded_like(optimizer, table.weight)
    # sharded by columns: a row's state would see only part of the row
    by_columns = parallelize_module(nn.Embedding(ROWS, DIM), mesh, ColwiseParallel())
    optimizer = adagrad.RowWiseAdagrad(by_columns.parameters())
    before = by_columns.weight.to_local().clone()
    by_columns(batch(0)[0]).sum().backward()
    expect_error(NotImplementedError, ("RowWiseAdagrad", "Shard(0)"), optimizer.step)
    assert torch.equal(by_columns.weight.to_local(), before) and not optimizer.state
    assert optimizer.param_groups[0]["params"][0] is by_columns.weight  # put back


def ranks_disagree(rank: int, world: int, tmp: str) -> None:
    """A rank given another lr than rank 0 is refused at the first step, on every rank."""
    model = DDP(make_net("torch"))
    optimizer = adagrad.Adagrad(model.parameters(), lr=0.1 if rank == 0 else 0.2)
    before = [p.detach().clone() for p in model.parameters()]
    expect_error(ValueError, ("rank 1", "'lr'", "0.2", "0.1"),
                 lambda: train(model, optimizer, range(1), rank, world))
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    net = make_net("ours")  # a fused table: refused in backward, before its update
    optimizer = adagrad.Adagrad(net.parameters(), lr=0.1, eps=1e-10 if rank == 0 else 1e-8)
    net.table.update_in_backward(optimizer, process_group=dist.group.WORLD)
    before = net.table.weight.detach().clone()
    expect_error(ValueError, ("rank 1", "'eps'"), lambda: train(net, optimizer, range(1), rank,
                                                                world))
    assert torch.equal(net.table.weight, before)


# -- distributed checkpoints (item 6) ----------------------------------------------------

CHECKPOINT_STEP = 2
#: (member, setup): the state that appears lazily (Adagrad's decay clocks, the catch-up
#: tables of ProximalAdagrad and AdagradDA) arises from sparse steps, under DDP.
CHECKPOINTED = (("Adagrad", "fsdp"), ("RowWiseAdagrad", "fsdp"), ("Adagrad", "ddp"),
                ("RowWiseAdagrad", "ddp"), ("ProximalAdagrad", "ddp"), ("AdagradDA", "ddp"))


def dcp_save(net: nn.Module, optimizer: torch.optim.Optimizer, path: str) -> None:
    save_checkpoint(path, net, optimizer)


def dcp_load(net: nn.Module, optimizer: torch.optim.Optimizer, path: str) -> None:
    load_checkpoint(path, net, optimizer)


def checkpoints(rank: int, world: int, tmp: str) -> None:
    """FSDP2 with DTensor state and DDP with lazy sparse decay: save at step 2 (and before
    the first step), resume on as many ranks: bit-identical to the uninterrupted run. The
    uninterrupted runs' results are saved for the resharding loads."""
    for name, setup in CHECKPOINTED:
        _resume_bit_identically(name, setup, rank, world, f"{tmp}/{setup}-{name}")


def _build(name: str, setup: str, world: int) -> tuple[nn.Module, torch.optim.Optimizer]:
    if setup == "fsdp":
        net = fsdp_net(world) if world > 1 else make_net("torch", sparse=False)
    else:
        net = make_net("torch")
        net = DDP(net) if world > 1 else net
    return net, OPTIMIZERS[name](net.parameters())


def _resume_bit_identically(name: str, setup: str, rank: int, world: int, path: str) -> None:
    net, optimizer = _build(name, setup, world)
    dcp_save(net, optimizer, f"{path}/step0")  # before the first step: changes nothing
    train(net, optimizer, range(CHECKPOINT_STEP), rank, world)
    dcp_save(net, optimizer, f"{path}/step{CHECKPOINT_STEP}")
    train(net, optimizer, range(CHECKPOINT_STEP, STEPS), rank, world)
    uninterrupted = _plain_state(net)
    untouched, _ = _build(name, setup, world)
    untouched_optimizer = OPTIMIZERS[name](untouched.parameters())
    train(untouched, untouched_optimizer, range(STEPS), rank, world)
    _expect_equal(untouched, uninterrupted, f"{setup} {name}: a checkpoint changed the run")
    for start in (0, CHECKPOINT_STEP):
        resumed, resumed_optimizer = _build(name, setup, world)
        dcp_load(resumed, resumed_optimizer, f"{path}/step{start}")
        train(resumed, resumed_optimizer, range(start, STEPS), rank, world)
        _expect_equal(resumed, uninterrupted, f"{setup} {name} resumed at step {start}")
    if rank == 0:
        torch.save(uninterrupted, f"{path}/final.pt")


def _plain_state(net: nn.Module) -> dict[str, torch.Tensor]:
    """``net``'s state dict, unsharded and named as without DDP."""
    return {key.removeprefix("module."): full(value).clone()
            for key, value in net.state_dict().items()}


def _expect_equal(net: nn.Module, expected: dict[str, torch.Tensor], what: str) -> None:
    for key, value in _plain_state(net).items():
        assert torch.equal(value, expected[key]), f"{what}: {key} differs"


def reshard(rank: int, world: int, tmp: str) -> None:
    """The 2-rank checkpoints loaded on ``world`` ranks (1 or 4) resume to the 2-rank run's
    result; a checkpoint of another class or of other shapes is refused, naming the
    parameter."""
    for name, setup in CHECKPOINTED:
        if setup == "fsdp" or world == 1:  # DDP's state is not sharded: one rank suffices
            path = f"{tmp}/{setup}-{name}"
            net, optimizer = _build(name, setup, world)
            dcp_load(net, optimizer, f"{path}/step{CHECKPOINT_STEP}")
            train(net, optimizer, range(CHECKPOINT_STEP, STEPS), rank, world)
            expected = torch.load(f"{path}/final.pt")
            for key, value in _plain_state(net).items():
                what = f"{setup} {name} {key}"
                torch.testing.assert_close(value, expected[key], rtol=1e-5, atol=1e-6,
                                           msg=lambda m, what=what: f"{what}: {m}")
    checkpoint = f"{tmp}/fsdp-Adagrad/step{CHECKPOINT_STEP}"
    net, _ = _build("Adagrad", "fsdp", world)
    ftrl = adagrad.FTRL(net.parameters())
    expect_error(ValueError, ("'table.weight'", "FTRL's state 'z'"),
                 lambda: dcp_load(net, ftrl, checkpoint))
    assert not ftrl.state  # left as it was
    torch.manual_seed(0)
    other = Net(nn.EmbeddingBag(ROWS + 1, DIM, mode="mean"))
    expect_error(ValueError, ("'table.weight'", f"({ROWS}, {DIM}) there"),
                 lambda: dcp_load(other, adagrad.Adagrad(other.parameters()), checkpoint))
    # DDP's checkpoint has per-row decay snapshots: into a sharded table of other rows
    # they cannot be placed, and a plain one does not fit them
    torch.manual_seed(0)
    other = Net(nn.EmbeddingBag(ROWS + 1, DIM, mode="mean"))
    other = fsdp_net(world, other) if world > 1 else other
    expect_error(ValueError, ("'table.weight'", "cannot be resharded" if world > 1 else "there"),
                 lambda: dcp_load(other, OPTIMIZERS["Adagrad"](other.parameters()),
                                  f"{tmp}/ddp-Adagrad/step{CHECKPOINT_STEP}"))


SCENARIOS: dict[str, Callable[[int, int, str], None]] = {
    f.__name__: f for f in (ddp_every_member, fused_tables, zero_redundancy, fsdp,
                            tensor_parallel, ranks_disagree, checkpoints, reshard)}


def run(rank: int, world: int, port: int, names: list[str], tmp: str) -> None:
    """The body of one spawned rank: join the group, run ``names`` in order."""
    torch.set_num_threads(1)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    try:
        for name in names:
            SCENARIOS[name](rank, world, tmp)
            dist.barrier()
    finally:
        dist.destroy_process_group()
