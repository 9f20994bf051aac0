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
    assert list(online.ONLINE) == ONLINE
    assert sorted(online.PASSES) == sorted(ONLINE)


def test_online_rules_are_the_optimizers_defaults_written_out():
    """The online kernel's rules, derived from the descriptions, against the rules written
    out from each optimizer's constructor defaults (lr given, alpha 0.3, ρ 0.25)."""
    pytest.importorskip("scipy")
    import numpy as np

    from adagrad.kernels.adagrad.coordinate import rule_tuple
    from adagrad.kernels.engine.rule import FtrlRule, ProximalRule, StepRule
    from adagrad.kernels.ftrl.coordinate import ftrl_tuple
    from adagrad.kernels.proximal.coordinate import proximal_tuple
    from adagrad.linear.online import online_rules, online_state

    l1, l2 = 0.3 * 0.25, 0.3 * 0.75
    written = {
        "adagrad": (rule_tuple(StepRule(lr=0.5, eps=1e-10, weight_decay=0.3), np.float32),
                    rule_tuple(StepRule(lr=0.5, eps=1e-10), np.float32), [0.0]),
        "proximal_adagrad": (
            proximal_tuple(ProximalRule(lr=0.5, l1=l1, l2=l2, eps=0.0), np.float32),
            proximal_tuple(ProximalRule(lr=0.5, eps=0.0), np.float32), [0.1]),
        "ftrl": (ftrl_tuple(FtrlRule(lr=0.5, beta=1.0, l1=l1, l2=l2), np.float32),
                 ftrl_tuple(FtrlRule(lr=0.5, beta=1.0), np.float32), [0.0, 0.0]),
    }
    assert sorted(written) == sorted(ONLINE)
    for key, (features, intercept, state) in written.items():
        rho = 0.0 if key == "adagrad" else 0.25  # Adagrad has no L1 step
        assert online_rules(key, 0.5, 0.3, rho, np.float32) == (features, intercept), key
        tables = online_state(key, (3, 2), np.float32)
        assert [t.dtype for t in tables] == [np.float32] * len(state)
        assert [np.unique(t).tolist() for t in tables] == [[np.float32(v)] for v in state], key


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


@pytest.mark.parametrize("name", ALL)
def test_shard_check_follows_the_description(name):
    """`_local_shard` refuses exactly the members written out as not shardable, and a
    subclass of a member is that member."""
    from adagrad.optim import sharding as shards

    local = torch.ones(4, 2)

    class FakeDTensor:
        shape = (4, 2)
        placements = ()
        grad = None

        def to_local(self):
            return local

    cls = getattr(adagrad, name)
    subclass = type(f"My{name}", (cls,), {})
    assert members.of(subclass) is members.BY_NAME[name]
    for optimizer in (cls([torch.nn.Parameter(torch.ones(4, 2))]),
                      subclass([torch.nn.Parameter(torch.ones(4, 2))])):
        if name in SHARDABLE:
            assert shards._local_shard(optimizer, FakeDTensor()) is not local  # detached
        else:
            with pytest.raises(NotImplementedError, match="cannot step a sharded"):
                shards._local_shard(optimizer, FakeDTensor())


def test_a_class_outside_the_family_is_no_member():
    assert members.of(torch.optim.Adagrad) is None
    assert members.of(type("Adagrad", (), {})) is None  # same name, another module


@pytest.mark.parametrize("member", members.MEMBERS, ids=lambda m: m.name)
def test_description_matches_the_member(member):
    cls = member.load()
    assert cls.__module__ == member.module
    assert callable(getattr(reference, member.key))  # its float64 rule
    param = torch.nn.Parameter(torch.ones(3, 2))
    group = cls([param]).param_groups[0]
    for name, value in member.defaults.items():  # the defaults, as a group holds them
        assert group[name] == value, name
    assert members.of(cls) is member
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


def test_device_dispatch_takes_each_members_own_triton_module(monkeypatch):
    """`cuda_dispatch.member_kernel` returns the Triton module of the member named by its
    key, for exactly the members written out here with a dense Triton kernel;
    None for the others and off CUDA."""
    pytest.importorskip("triton")
    from adagrad.kernels.engine import cuda_dispatch

    own_triton = {"adagrad": "adagrad", "proximal_adagrad": "proximal",
                  "adagrad_da": "dual_averaging", "ftrl": "ftrl"}
    tensor = torch.zeros(4)
    for key in KEYS:
        assert cuda_dispatch.member_kernel(key, tensor, tensor, tensor) is None  # on the CPU
    monkeypatch.setattr(cuda_dispatch, "device_type", lambda t: "cuda")
    monkeypatch.setattr(cuda_dispatch, "triton_available", lambda: True)
    for key in KEYS:
        found = cuda_dispatch.member_kernel(key, tensor, tensor, tensor)
        if key in own_triton:
            package = own_triton[key]
            module = importlib.import_module(f"adagrad.kernels.{package}.triton")
            assert found is module and callable(getattr(found, f"dense_{package}_")), key
        else:
            assert found is None, key


def test_member_triton_kernels_are_found_by_name_in_their_packages():
    """The dispatch's index (`kernels.engine.triton_members`, also the deprecated
    ``adagrad.kernels.triton_members``) holds no kernel: each name is the function in its
    member's own ``triton`` module, for exactly the members written out here."""
    pytest.importorskip("triton")
    from adagrad.kernels.engine import triton_members

    with_triton = ["adagrad", "proximal_adagrad", "adagrad_da", "ftrl"]
    assert [m.key for m in members.MEMBERS if "triton" in m.paths] == with_triton
    for package in ("proximal", "dual_averaging", "ftrl"):
        module = importlib.import_module(f"adagrad.kernels.{package}.triton")
        name = f"dense_{package}_"
        with pytest.warns(DeprecationWarning, match=f"adagrad.kernels.{package}.triton"):
            assert getattr(triton_members, name) is getattr(module, name)
    for missing in ("dense_norm_", "dense_rowwise_", "_proximal", "BLOCKS"):
        with pytest.raises(AttributeError, match=missing):
            getattr(triton_members, missing)
    with pytest.warns(DeprecationWarning):
        import adagrad.kernels as kernels

        old = kernels.triton_members
    with pytest.warns(DeprecationWarning):
        assert old.dense_ftrl_ is importlib.import_module("adagrad.kernels.ftrl.triton").dense_ftrl_
