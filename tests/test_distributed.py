"""torch.distributed (issue 12): DDP, fused tables under data parallelism, ZeRO, FSDP2,
tensor parallelism and distributed checkpoints, on 2 and 4 gloo processes on loopback.

Each test spawns its ranks once and runs several scenarios of `distributed_worker`
there (starting processes is the main cost); a rank raises when its result differs from
the independent reference the worker computes in the same process. The default suite
keeps only the refusals that need no second process.
"""

from __future__ import annotations

import socket

import distributed_worker as worker
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel as DDP

import adagrad
import adagrad.nn
from adagrad.distributed import ignore_fused_tables


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(world: int, names: list[str], tmp: str) -> None:
    mp.spawn(worker.run, args=(world, _free_port(), names, tmp), nprocs=world, join=True)


@pytest.mark.slow
def test_two_ranks(tmp_path):
    """DDP for every member, fused tables, ZeRO, FSDP2, tensor parallelism, a rank with
    other hyperparameters, DCP save and bit-identical resume; then the same checkpoints
    resharded onto 1 rank and onto 4."""
    _spawn(2, ["ddp_every_member", "fused_tables", "zero_redundancy", "fsdp",
               "tensor_parallel", "ranks_disagree", "checkpoints"], str(tmp_path))
    _spawn(4, ["reshard"], str(tmp_path))
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0,
                            world_size=1)
    try:  # one rank: in this process (starting one costs more than the load)
        worker.reshard(0, 1, str(tmp_path))
    finally:
        dist.destroy_process_group()


@pytest.fixture
def one_rank_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0,
                            world_size=1)
    yield dist.group.WORLD
    dist.destroy_process_group()


def test_fused_table_in_ddp_without_group_is_refused(one_rank_group):
    net = worker.make_net("ours")
    net.table.update_in_backward(adagrad.Adagrad(net.parameters()))
    model = DDP(net)
    before = net.table.weight.detach().clone()
    with pytest.raises(RuntimeError, match="without a process group.*ignore_fused_tables"):
        model(worker.batch(0)[0])
    net.table.update_in_backward(net.table._optimizer, process_group=one_rank_group)
    with pytest.raises(RuntimeError, match="also one of DistributedDataParallel's parameters"):
        model(worker.batch(0)[0])
    assert torch.equal(net.table.weight, before)


def test_fused_table_with_group_on_one_rank_equals_torch(one_rank_group):
    """A group of one: the gathered update is the local one, equal to torch's sparse
    layer stepped by the same optimizer."""
    net = worker.make_net("ours")
    optimizer = adagrad.Adagrad(net.parameters(), lr=0.1)
    net.table.update_in_backward(optimizer, process_group=one_rank_group)
    assert ignore_fused_tables(net) == ["table.weight"]
    model = DDP(net)
    worker.train(model, optimizer, range(2))
    expected = worker.make_net("torch")
    worker.train(expected, adagrad.Adagrad(expected.parameters(), lr=0.1), range(2))
    worker.assert_close(net, expected, "one rank")


def test_fused_table_refuses_a_sharded_weight(one_rank_group):
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    table = adagrad.nn.Embedding(4, 2)
    mesh = init_device_mesh("cpu", (1,))
    table.weight = torch.nn.Parameter(distribute_tensor(table.weight.detach(), mesh, [Shard(0)]))
    with pytest.raises(TypeError, match="sharded \\(DTensor\\) weight"):
        table.update_in_backward(adagrad.Adagrad(table.parameters()))
