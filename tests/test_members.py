"""`adagrad.members`, the one description of each member, and every list derived from it,
each compared with a list written out here: a member dropped from a derived list by mistake
fails, and so does a description that says something the member does not do."""

from __future__ import annotations

import importlib
import inspect
import importlib.util
import subprocess
import sys

import pytest
import torch

import adagrad
import adagrad.optim
from adagrad import members, reference

# -- the family, written out ----------------------------------------------------------------
ALL = ["Adagrad", "RowWiseAdagrad", "ProximalAdagrad", "AdagradDA", "FTRL", "AdagradNorm",
       "FullMatrixAdagrad", "DoGAdagrad"]
KEYS = ["adagrad", "rowwise_adagrad", "proximal_adagrad", "adagrad_da", "ftrl", "adagrad_norm",
        "full_matrix_adagrad", "dog_adagrad"]
WITH_L1 = ["ProximalAdagrad", "AdagradDA", "FTRL"]
ONLINE = ["adagrad", "proximal_adagrad", "ftrl"]
DENSE_ONLY = ["full_matrix_adagrad"]
SHARDABLE = ["Adagrad", "RowWiseAdagrad", "ProximalAdagrad", "AdagradDA", "FTRL"]
LR_FREE = ["DoGAdagrad"]


def test_members_are_the_family():
    assert [m.name for m in members.MEMBERS] == ALL
    assert [m.key for m in members.MEMBERS] == KEYS
    assert list(members.names(l1=True)) == WITH_L1
    assert list(members.keys(online=True)) == ONLINE
    assert list(members.keys(sparse_rows=False)) == DENSE_ONLY
    assert list(members.names(shardable=True)) == SHARDABLE
    assert list(members.names(lr_free=True)) == LR_FREE


def test_public_names_are_derived():
    assert sorted(adagrad.__all__) == sorted([*ALL, "__version__"])
    assert sorted(adagrad.optim.__all__) == sorted(ALL)
    for name in ALL:
        assert getattr(adagrad, name) is getattr(adagrad.optim, name)
        assert getattr(adagrad, name).__name__ == name


def test_linear_lists_are_derived():
    pytest.importorskip("scipy")
    from adagrad.linear import members as linear
    from adagrad.linear import online

    assert linear.MEMBERS == dict(zip(KEYS, ALL))
    assert list(linear.L1_MEMBERS) == ["proximal_adagrad", "adagrad_da", "ftrl"]
    assert list(linear.ONLINE_MEMBERS) == ONLINE
    assert list(linear.DENSE_ONLY_MEMBERS) == DENSE_ONLY
    assert sorted(online.PASSES) == sorted(ONLINE)


def test_fit_offers_every_member():
    from adagrad.cli import build_parser

    fit = build_parser()._subparsers._group_actions[0].choices["fit"]
    (option,) = [a for a in fit._actions if a.dest == "optimizer"]
    assert sorted(option.choices) == sorted(KEYS)


def test_tests_member_lists_are_derived():
    import distributed_worker
    import test_family_groups

    assert [cls.__name__ for cls in test_family_groups.MEMBERS] == ALL
    assert list(distributed_worker.SHARDABLE) == SHARDABLE


def test_compare_lr_free_member_is_derived():
    pytest.importorskip("pandas")
    from adagrad.experiments import optimizers

    assert optimizers._LR_FREE_CLASS == "DoGAdagrad"


def test_shard_error_names_the_shardable_members():
    from adagrad.optim import sharding as shards

    optimizer = adagrad.AdagradNorm([torch.nn.Parameter(torch.ones(2))])

    class FakeDTensor:
        shape = (2,)

    with pytest.raises(NotImplementedError) as error:
        shards._local_shard(optimizer, FakeDTensor())
    assert f"(use {', '.join(SHARDABLE)})" in str(error.value)


@pytest.mark.parametrize("member", members.MEMBERS, ids=lambda m: m.name)
def test_description_matches_the_member(member):
    cls = member.load()
    assert cls.__module__ == member.module
    assert callable(getattr(reference, member.key))  # its float64 rule
    param = torch.nn.Parameter(torch.ones(3, 2))
    group = cls([param]).param_groups[0]
    for name, value in member.defaults.items():  # the defaults, as a group holds them
        assert group[name] == value, name
    assert cls._shardable is member.shardable
    for path in member.paths:
        if "triton" in path and importlib.util.find_spec("triton") is None:
            continue
        importlib.import_module(f"{member.kernels}.{path}")
    param.grad = torch.sparse_coo_tensor([[0]], torch.ones(1, 2), (3, 2))
    optimizer = cls([param])
    if member.sparse_rows:
        optimizer.step()
    else:
        with pytest.raises(RuntimeError, match="sparse"):
            optimizer.step()
    assert ("l1" in inspect.signature(cls).parameters) is member.l1


def test_members_imports_neither_torch_nor_numba():
    code = ("import sys, adagrad.members; "
            "print(sorted({'torch', 'numba', 'numpy'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_old_flat_kernel_modules_resolve_with_a_deprecation_warning():
    from adagrad import kernels
    from adagrad.kernels.adagrad import cpu
    from adagrad.kernels.ftrl import torch_ops

    with pytest.warns(DeprecationWarning, match="adagrad.kernels.adagrad.cpu"):
        assert kernels.dense_cpu is cpu
    with pytest.warns(DeprecationWarning, match="adagrad.kernels.ftrl.torch_ops"):
        from adagrad.kernels import ftrl_portable
    assert ftrl_portable is torch_ops
    with pytest.raises(AttributeError, match="no_such_module"):
        kernels.no_such_module
