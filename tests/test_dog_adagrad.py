"""`adagrad.DoGAdagrad` (:ref:`algo-dog`) against the float64 reference rule
(`reference.dog_adagrad`, written from the formula), closed forms, and itself across paths:
dense, sparse COO gradients, the fused `adagrad.nn` layers, checkpoints resumed in a new
process, and refused input."""

from __future__ import annotations

import copy
import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sparse_support import coo, densify64, random_row_grad

import adagrad.nn
from adagrad import DoGAdagrad, reference

pytestmark = pytest.mark.filterwarnings("ignore:Sparse invariant checks")


def _np64(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float64).numpy().copy()


def _tolerance(dtype: torch.dtype) -> dict[str, float]:
    return {"rtol": 1e-10, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 1e-4, "atol": 1e-6}


class _Reference:
    """The reference run of one parameter group: state created at a tensor's first
    gradient, as the optimizer does; ``scope="tensor"`` steps each tensor on its own."""

    def __init__(self, params: list[torch.Tensor], scope: str, reps_rel: float = 1e-4,
                 **rule: float) -> None:
        self.x = [_np64(p) for p in params]
        self.states: list[dict | None] = [None] * len(params)
        self.scope, self.reps_rel, self.rule = scope, reps_rel, rule

    def step(self, grads: list[np.ndarray | None]) -> None:
        for i, g in enumerate(grads):
            if g is not None and self.states[i] is None:
                self.states[i] = reference.dog_adagrad_init(self.x[i], self.reps_rel)
        if self.scope == "tensor":
            blocks = [[i] for i, g in enumerate(grads) if g is not None]
        else:
            blocks = [[i for i, s in enumerate(self.states) if s is not None]]
        for block in blocks:
            if not block:
                continue
            xs, states = reference.dog_adagrad([self.x[i] for i in block],
                                               [grads[i] for i in block],
                                               [self.states[i] for i in block], **self.rule)
            for i, x, s in zip(block, xs, states):
                self.x[i], self.states[i] = x, s


# -- closed forms ----------------------------------------------------------------------

def test_first_three_steps_by_hand():
    """Step 1 moves every coordinate by r_ε·sign(g); steps 2 and 3 take r̄ from the
    sqrt(G)-weighted distance of x1 and x2, and a coordinate's step shrinks by sqrt(G)."""
    x0 = torch.tensor([0.5, -2.0], dtype=torch.float64)
    param = torch.nn.Parameter(x0.clone())
    opt = DoGAdagrad([param], reps_rel=0.1, eps=0.0)
    r_eps = 0.1 * (1 + 2.0)
    param.grad = torch.tensor([3.0, -4.0], dtype=torch.float64)
    opt.step()
    x1 = x0 - r_eps * torch.tensor([1.0, -1.0], dtype=torch.float64)
    torch.testing.assert_close(param.detach(), x1, rtol=1e-15, atol=0)
    # d = sqrt((3·r² + 4·r²) / (3 + 4)) = r: r̄ stays r_ε.
    param.grad = torch.tensor([1.0, 0.0], dtype=torch.float64)
    opt.step()
    x2 = x1 - torch.tensor([r_eps * 1 / math.sqrt(10), 0.0], dtype=torch.float64)
    torch.testing.assert_close(param.detach(), x2, rtol=1e-15, atol=0)
    # Step 3: d² = (sqrt(10)·(x2-x0)[0]² + 4·r²) / (sqrt(10) + 4).
    moved = math.sqrt(10) * (x2 - x0)[0].item() ** 2 + 4 * r_eps ** 2
    d = math.sqrt(moved / (math.sqrt(10) + 4))
    param.grad = torch.tensor([0.0, 1.0], dtype=torch.float64)
    opt.step()
    expected = max(d, r_eps)
    assert opt.state[param]["distance"].item() == pytest.approx(expected, rel=1e-14)
    assert param.detach()[1].item() == pytest.approx(x2[1].item() - expected / math.sqrt(17),
                                                     rel=1e-14)


def test_rare_coordinates_get_larger_steps():
    """Row 0 gets a gradient every step, row 1 only at the last: with one shared r̄, the
    rare row's last step is sqrt(T) times the frequent row's (G = T against G = 1)."""
    steps = 16
    table = torch.nn.Parameter(torch.zeros(3, 2, dtype=torch.float64))
    opt = DoGAdagrad([table], eps=0.0)
    for t in range(steps):
        before = table.detach().clone()
        rows = [0, 1] if t == steps - 1 else [0]
        table.grad = coo(rows, torch.ones(len(rows), 2, dtype=torch.float64), (3, 2))
        opt.step()
    moved = (before - table.detach()).abs()
    assert moved[1, 0] > moved[0, 0] > 0
    assert (moved[1] / moved[0]).tolist() == pytest.approx([math.sqrt(steps)] * 2, rel=1e-12)
    assert moved[2].eq(0).all()


@pytest.mark.parametrize("target", [1e-3, 1.0, 1e3])
def test_reaches_a_quadratic_minimum_at_any_scale_without_a_learning_rate(target):
    """The scale r̄ grows to the distance to the minimum: 1e-3 and 1e3 away alike."""
    param = torch.nn.Parameter(torch.zeros(4, dtype=torch.float64))
    goal = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64) * target
    opt = DoGAdagrad([param])
    for _ in range(400):
        param.grad = 2 * (param.detach() - goal)
        opt.step()
    assert (param.detach() - goal).abs().max().item() < 1e-2 * target


# -- dense and sparse against the reference ---------------------------------------------

@st.composite
def dense_cases(draw, large: bool = False):
    shapes = draw(st.lists(st.sampled_from([(3,), (4, 2), (2, 3, 2), (0,), (1,)]),
                           min_size=1, max_size=3))
    if large:
        shapes = [(300, 500)] + shapes[:1]
    return dict(shapes=shapes, steps=draw(st.integers(1, 6)),
                scope=draw(st.sampled_from(["group", "tensor"])),
                dtype=draw(st.sampled_from([torch.float64, torch.float32])),
                lr=draw(st.sampled_from([1.0, 0.5])),
                reps_rel=draw(st.sampled_from([1e-4, 1e-2])),
                eps=draw(st.sampled_from([1e-8, 0.0])),
                weight_decay=draw(st.sampled_from([0.0, 0.1])),
                maximize=draw(st.booleans()), seed=draw(st.integers(0, 2**16)),
                skip=draw(st.integers(0, 3)))


def _run_dense(case: dict) -> None:
    gen = torch.Generator().manual_seed(case["seed"])
    params = [torch.nn.Parameter(torch.randn(s, generator=gen).to(case["dtype"]))
              for s in case["shapes"]]
    rule = {k: case[k] for k in ("lr", "eps", "weight_decay", "maximize")}
    ref = _Reference(params, case["scope"], case["reps_rel"], **rule)
    opt = DoGAdagrad(params, reps_rel=case["reps_rel"], scope=case["scope"], **rule)
    for t in range(case["steps"]):
        grads = [None if (i + t) % 4 == case["skip"] else torch.randn(p.shape, generator=gen)
                 .to(case["dtype"]) for i, p in enumerate(params)]
        for p, g in zip(params, grads):
            p.grad = g
        opt.step()
        ref.step([None if g is None else _np64(g) for g in grads])
        for p, expected in zip(params, ref.x):
            np.testing.assert_allclose(_np64(p), expected, **_tolerance(case["dtype"]))


@given(case=dense_cases())
@settings(max_examples=30, deadline=None)
def test_dense_against_the_reference(case):
    _run_dense(case)


@given(case=dense_cases(large=True))
@settings(max_examples=2, deadline=None)
def test_dense_against_the_reference_large_tensor(case):
    _run_dense(case)


@given(case=dense_cases())
@settings(max_examples=300, deadline=None)
@pytest.mark.slow
def test_dense_against_the_reference_slow(case):
    _run_dense(case)


def test_param_groups_keep_their_own_scale_and_options():
    """Two groups: each has its own r̄ and hyperparameters, as two reference runs."""
    gen = torch.Generator().manual_seed(11)
    first = [torch.nn.Parameter(torch.randn(4, 3, generator=gen, dtype=torch.float64)),
             torch.nn.Parameter(torch.randn(3, generator=gen, dtype=torch.float64))]
    second = [torch.nn.Parameter(10 * torch.randn(5, generator=gen, dtype=torch.float64))]
    opt = DoGAdagrad([{"params": first},
                      {"params": second, "reps_rel": 1e-2, "scope": "tensor", "maximize": True}])
    refs = [_Reference(first, "group"), _Reference(second, "tensor", 1e-2, maximize=True)]
    for _ in range(4):
        for params, ref in zip((first, second), refs):
            grads = [torch.randn(p.shape, generator=gen, dtype=torch.float64) for p in params]
            for p, g in zip(params, grads):
                p.grad = g
            ref.step([_np64(g) for g in grads])
        opt.step()
        for params, ref in zip((first, second), refs):
            for p, expected in zip(params, ref.x):
                np.testing.assert_allclose(_np64(p), expected, rtol=1e-12, atol=1e-14)
    assert opt.state[first[0]]["distance"] == opt.state[first[1]]["distance"]
    assert opt.state[first[0]]["distance"] != opt.state[second[0]]["distance"]


def _run_sparse(rows, width, nnz, id_range, steps, scope, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    table = torch.nn.Parameter(torch.randn(rows, width, generator=gen).to(dtype))
    bias = torch.nn.Parameter(torch.randn(width, generator=gen).to(dtype))
    dense_table = torch.nn.Parameter(table.detach().clone())
    dense_bias = torch.nn.Parameter(bias.detach().clone())
    opt = DoGAdagrad([table, bias], scope=scope)
    dense = DoGAdagrad([dense_table, dense_bias], scope=scope)
    ref = _Reference([table, bias], scope)
    for _ in range(steps):
        grad = random_row_grad(rows, width, nnz, dtype=dtype, id_range=id_range, gen=gen)
        bias_grad = torch.randn(width, generator=gen).to(dtype)
        table.grad, bias.grad = grad, bias_grad
        dense_table.grad, dense_bias.grad = torch.from_numpy(densify64(grad)).to(dtype), bias_grad
        opt.step()
        dense.step()
        ref.step([densify64(grad), _np64(bias_grad)])
        np.testing.assert_allclose(_np64(table), ref.x[0], **_tolerance(dtype))
        np.testing.assert_allclose(_np64(bias), ref.x[1], **_tolerance(dtype))
    if dtype == torch.float64:  # sparse = dense with zero rows, up to the sums' rounding
        torch.testing.assert_close(table, dense_table, rtol=1e-12, atol=1e-14)
    return table, opt


_SPARSE_CASES = dict(rows=st.integers(1, 30), width=st.sampled_from([1, 3, 8]),
                     nnz=st.integers(0, 25), id_range=st.sampled_from([None, 3]),
                     steps=st.integers(1, 5), scope=st.sampled_from(["group", "tensor"]),
                     seed=st.integers(0, 2**16))


@given(**_SPARSE_CASES)
@settings(max_examples=30, deadline=None)
def test_sparse_against_the_reference(rows, width, nnz, id_range, steps, scope, seed):
    """Float64 tables: the torch-ops kernel (the numba one takes float32, below)."""
    _run_sparse(rows, width, nnz, id_range, steps, scope, torch.float64, seed)


@given(**_SPARSE_CASES)
@settings(max_examples=60, deadline=None)
@pytest.mark.slow
def test_sparse_float32_against_the_reference(rows, width, nnz, id_range, steps, scope, seed):
    """Float32 tables on the CPU: the numba row engine's kernel."""
    _run_sparse(rows, width, nnz, id_range, steps, scope, torch.float32, seed)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_sparse_against_the_reference_large_table(dtype):
    _run_sparse(20000, 32, 5000, None, 3, "group", dtype, 1)


def test_sparse_leaves_untouched_rows_and_their_state():
    table, opt = _run_sparse(40, 3, 6, 10, 4, "group", torch.float64, 5)
    state = opt.state[table]
    untouched = state["sum"].sum(1) == 0
    assert untouched[10:].all()
    torch.testing.assert_close(table.detach()[untouched], state["initial"][untouched],
                               rtol=0, atol=0)


def test_bf16_table_with_sparse_gradients_follows_the_reference():
    """bf16 tables take the torch-ops kernel, in float32, rounded once per step."""
    gen = torch.Generator().manual_seed(4)
    table = torch.nn.Parameter(torch.randn(20, 4, generator=gen).to(torch.bfloat16))
    opt = DoGAdagrad([table], reps_rel=1e-2)
    ref = _Reference([table], "group", reps_rel=1e-2)
    for _ in range(4):
        grad = random_row_grad(20, 4, 12, dtype=torch.bfloat16, id_range=6, gen=gen)
        table.grad = grad
        opt.step()
        ref.step([densify64(grad)])
    assert opt.state[table]["sum"].dtype == torch.float32
    np.testing.assert_allclose(_np64(table), ref.x[0], rtol=2e-2, atol=2e-2)


def test_bf16_parameters_keep_float32_state_and_an_exact_initial_copy():
    param = torch.nn.Parameter(torch.randn(5, 3).to(torch.bfloat16))
    opt = DoGAdagrad([param])
    start = param.detach().clone()
    param.grad = torch.randn(5, 3).to(torch.bfloat16)
    opt.step()
    state = opt.state[param]
    assert state["sum"].dtype == state["initial"].dtype == torch.float32
    assert state["distance"].dtype == torch.float64 and state["distance"].dim() == 0
    assert torch.equal(state["initial"], start.float())


# -- fused layers -----------------------------------------------------------------------

def _fused_against_torch_layer(kind: str, dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    rows, width = 25, 4
    if kind == "embedding":
        theirs, ours = torch.nn.Embedding(rows, width, sparse=True), adagrad.nn.Embedding(rows, width)
    else:
        theirs = torch.nn.EmbeddingBag(rows, width, sparse=True, mode="sum")
        ours = adagrad.nn.EmbeddingBag(rows, width, mode="sum")
    theirs, ours = theirs.to(dtype), ours.to(dtype)
    ours.load_state_dict(theirs.state_dict())
    head = torch.randn(width, 1, dtype=dtype)
    their_opt, our_opt = DoGAdagrad(theirs.parameters()), DoGAdagrad(ours.parameters())
    ours.update_in_backward(our_opt)
    gen = torch.Generator().manual_seed(3)
    for _ in range(6):
        ids = torch.randint(0, 8, (12,), generator=gen)
        if kind == "embedding":
            args = (ids.view(4, 3),)
        else:
            weights = torch.rand(12, generator=gen).to(dtype) if kind == "bag-weights" else None
            args = (ids, torch.tensor([0, 4, 4, 9]), weights)
        for layer, opt in ((theirs, their_opt), (ours, our_opt)):
            opt.zero_grad()
            ((layer(*args) @ head - 1) ** 2).sum().backward()
            opt.step()
        torch.testing.assert_close(ours.weight, theirs.weight, rtol=1e-6, atol=1e-7)
    assert our_opt.state[ours.weight]["step"].item() == 6


@pytest.mark.parametrize("kind", ["bag", "bag-weights", "embedding"])
def test_fused_layer_equals_torch_sparse_layer_and_step(kind):
    _fused_against_torch_layer(kind, torch.float64)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["bag", "bag-weights", "embedding"])
def test_fused_float32_layer_equals_torch_sparse_layer_and_step(kind):
    """Float32 tables: the numba kernel, fed the bags' output gradient directly."""
    _fused_against_torch_layer(kind, torch.float32)


def test_fused_table_in_a_shared_group_follows_the_reference():
    """The table steps alone inside backward, the head at `step()`: each measures r̄ from
    every parameter's current state (the reference, stepped in that order)."""
    torch.manual_seed(1)
    layer = adagrad.nn.EmbeddingBag(12, 3, mode="sum").double()
    head = torch.nn.Linear(3, 1).double()
    params = [layer.weight, head.weight, head.bias]
    opt = DoGAdagrad(params)
    layer.update_in_backward(opt)
    ref = _Reference(params, "group")
    gen = torch.Generator().manual_seed(2)
    for _ in range(5):
        ids = torch.randint(0, 12, (10,), generator=gen)
        offsets = torch.tensor([0, 3, 6])
        opt.zero_grad()
        # the table's gradient as torch's own sparse layer gives it, before the step
        mirror = torch.nn.EmbeddingBag(12, 3, mode="sum", sparse=True).double()
        mirror.weight.data.copy_(layer.weight.detach())
        mirror_loss = ((head(mirror(ids, offsets)) - 1) ** 2).sum()
        g_table = torch.autograd.grad(mirror_loss, mirror.weight)[0]
        ((head(layer(ids, offsets)) - 1) ** 2).sum().backward()
        ref.step([densify64(g_table), None, None])
        opt.step()
        ref.step([None, _np64(head.weight.grad), _np64(head.bias.grad)])
        for p, expected in zip(params, ref.x):
            np.testing.assert_allclose(_np64(p), expected, rtol=1e-10, atol=1e-12)


# -- checkpoints ------------------------------------------------------------------------

_RUN = textwrap.dedent("""
    import io, sys, torch, adagrad, adagrad.nn
    def build(fused, dtype):
        torch.manual_seed(0)
        bag = adagrad.nn.EmbeddingBag(30, 4, mode="sum") if fused else \\
            torch.nn.EmbeddingBag(30, 4, mode="sum", sparse=True)
        model = torch.nn.ModuleDict({"bag": bag, "head": torch.nn.Linear(4, 2)}).to(dtype)
        opt = adagrad.DoGAdagrad(model.parameters())
        if fused:
            bag.update_in_backward(opt)
        return model, opt
    def train(model, opt, start, stop):
        for step in range(start, stop):
            gen = torch.Generator().manual_seed(step)
            ids = torch.randint(0, 30, (24,), generator=gen)
            opt.zero_grad()
            out = model["head"](model["bag"](ids, torch.arange(0, 24, 4)))
            ((out - torch.randn(6, 2, generator=gen).to(out.dtype)) ** 2).sum().backward()
            opt.step()
    def resume(fused, dtype, saved):
        model, opt = build(fused, dtype)
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        train(model, opt, 5, 12)
        return {"model": model.state_dict(), "optimizer": opt.state_dict()}
""")
_RESUME_ALL = _RUN + textwrap.dedent("""
    torch.set_num_threads(1)
    for fused, source, target in zip((False, True), sys.argv[1::2], sys.argv[2::2]):
        torch.save(resume(fused, torch.float32, torch.load(source, weights_only=False)), target)
""")


def _bits(obj):
    if isinstance(obj, torch.Tensor):
        t = obj.detach().contiguous()
        return t.view(torch.int64) if t.dtype == torch.float64 else \
            t.view(torch.int32) if t.dtype == torch.float32 else t
    if isinstance(obj, dict):
        return {k: _bits(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_bits(v) for v in obj]
    return obj


def _assert_bit_identical(a, b):
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            _assert_bit_identical(a[key], b[key])
    elif isinstance(a, list):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_bit_identical(x, y)
    else:
        assert a == b


def _checkpointed_runs(fused: bool, dtype: torch.dtype, namespace: dict) -> tuple[dict, dict]:
    """Steps 0-4, a checkpoint (taking it changes nothing), steps 5-11: the checkpoint
    and the end of the uninterrupted run."""
    model, opt = namespace["build"](fused, dtype)
    namespace["train"](model, opt, 0, 5)
    saved = copy.deepcopy({"model": model.state_dict(), "optimizer": opt.state_dict()})
    namespace["train"](model, opt, 5, 12)
    return saved, {"model": model.state_dict(), "optimizer": opt.state_dict()}


@pytest.mark.parametrize("fused", [False, True])
def test_resumed_run_is_bit_identical(fused):
    """A fresh model and optimizer loaded from the checkpoint end with the same bits as
    the run that never stopped (model and optimizer state). Float64 (the torch-ops
    kernel); the float32 numba path in the new-process test below."""
    namespace: dict = {}
    exec(_RUN, namespace)
    saved, uninterrupted = _checkpointed_runs(fused, torch.float64, namespace)
    resumed = namespace["resume"](fused, torch.float64, saved)
    _assert_bit_identical(_bits(resumed), _bits(uninterrupted))


@pytest.mark.slow
def test_resumed_in_a_new_process_is_bit_identical(tmp_path):
    """As above, float32 (the numba row kernel), the checkpoints resumed in a fresh
    process (one for both paths)."""
    namespace: dict = {}
    exec(_RUN, namespace)
    args, ends = [], []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the fresh process: the same arithmetic on both sides
    try:
        runs = [_checkpointed_runs(fused, torch.float32, namespace) for fused in (False, True)]
    finally:
        torch.set_num_threads(threads)
    for fused, (saved, uninterrupted) in zip((False, True), runs):
        torch.save(saved, tmp_path / f"ck{fused}.pt")
        args += [str(tmp_path / f"ck{fused}.pt"), str(tmp_path / f"end{fused}.pt")]
        ends.append(uninterrupted)
    subprocess.run([sys.executable, "-c", _RESUME_ALL, *args], check=True)
    for fused, uninterrupted in zip((False, True), ends):
        resumed = torch.load(tmp_path / f"end{fused}.pt", weights_only=False)
        _assert_bit_identical(_bits(resumed), _bits(uninterrupted))


def _stepped() -> tuple[torch.nn.Parameter, DoGAdagrad]:
    param = torch.nn.Parameter(torch.linspace(-1, 1, 6).reshape(3, 2))
    opt = DoGAdagrad([param])
    for _ in range(3):
        param.grad = torch.linspace(0.5, -0.5, 6).reshape(3, 2)
        opt.step()
    return param, opt


@pytest.mark.parametrize("key, value, match", [
    ("distance", torch.tensor(float("nan"), dtype=torch.float64), "not finite"),
    ("distance", torch.tensor(0.0, dtype=torch.float64), "distance.*> 0"),
    ("moved", torch.tensor(-1.0, dtype=torch.float64), "moved.*>= 0"),
    ("weight", torch.zeros(2, dtype=torch.float64), "weight"),
    ("weight", None, "lacks 'weight'"),
    ("initial", torch.zeros(2, 3), "initial.*shape"),
    ("sum", -torch.ones(3, 2), "negative"),
])
def test_a_bad_checkpoint_is_refused_and_changes_nothing(key, value, match):
    param, opt = _stepped()
    saved = opt.state_dict()
    if value is None:
        del saved["state"][0][key]
    else:
        saved["state"][0][key] = value
    before = _bits(opt.state_dict())
    with pytest.raises(ValueError, match=match):
        opt.load_state_dict(saved)
    _assert_bit_identical(_bits(opt.state_dict()), before)


def test_a_torch_adagrad_checkpoint_is_refused():
    param = torch.nn.Parameter(torch.ones(3, 2))
    theirs = torch.optim.Adagrad([param])
    param.grad = torch.ones(3, 2)
    theirs.step()
    opt = DoGAdagrad([param])
    with pytest.raises(ValueError, match="not a checkpoint of DoGAdagrad"):
        opt.load_state_dict(theirs.state_dict())


# -- refused input ----------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, name", [
    (dict(lr=-1.0), "lr"), (dict(reps_rel=0.0), "reps_rel"), (dict(eps=-1e-8), "eps"),
    (dict(weight_decay=-0.1), "weight_decay"), (dict(scope="layer"), "scope"),
    (dict(lr=float("nan")), "lr"),
])
def test_invalid_hyperparameters_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        DoGAdagrad([torch.nn.Parameter(torch.ones(2))], **kwargs)


def test_sparse_gradient_with_weight_decay_raises_before_anything_is_written():
    table = torch.nn.Parameter(torch.ones(4, 2))
    other = torch.nn.Parameter(torch.ones(3))
    opt = DoGAdagrad([other, table], weight_decay=0.1)
    other.grad = torch.ones(3)
    table.grad = coo([1, 2], torch.ones(2, 2), (4, 2))
    with pytest.raises(RuntimeError, match="weight_decay"):
        opt.step()
    assert not opt.state
    assert other.detach().eq(1).all() and table.detach().eq(1).all()


def test_out_of_range_sparse_index_raises_before_anything_is_written():
    table = torch.nn.Parameter(torch.ones(4, 2))
    opt = DoGAdagrad([table])
    table.grad = coo([1, 9], torch.ones(2, 2), (4, 2))
    with pytest.raises(IndexError, match="9"):
        opt.step()
    assert table.detach().eq(1).all()


# -- the two sparse kernels -------------------------------------------------------------

def _row_step_reference(table, state_sum, initial, grad, scale, eps, maximize):
    """One :ref:`algo-dog` row step of a table in float64 from the formula, on the densified gradient:
    the new table and G, and the change of the distance terms over the touched rows."""
    x, G, x0 = _np64(table), _np64(state_sum), _np64(initial)
    g = densify64(grad) * (-1 if maximize else 1)
    touched = np.zeros(x.shape[0], bool)
    touched[grad._indices()[0].numpy()] = True

    def terms(x, G):
        return (np.sqrt(G) * (x - x0) ** 2)[touched].sum(), np.sqrt(G)[touched].sum()

    before = terms(x, G)
    G = G + g * g
    denom = np.sqrt(G) + eps
    x = x - scale * np.divide(g, denom, out=np.zeros_like(g), where=denom > 0)
    after = terms(x, G)
    return x, G, (after[0] - before[0], after[1] - before[1])


_KERNEL_CASES = [(kernel, dtype, rows, nnz, id_range)
                 for rows, nnz, id_range in [(30, 20, 5), (6000, 2500, None)]
                 for kernel, dtype in [("portable", torch.float64), ("portable", torch.float32),
                                       ("numba", torch.float32)]]


@pytest.mark.parametrize("kernel, dtype, rows, nnz, id_range", [
    pytest.param(*case, marks=[pytest.mark.slow] if case[0] == "numba" else [])
    for case in _KERNEL_CASES])
def test_sparse_kernels_against_the_reference(kernel, dtype, rows, nnz, id_range):
    """Both kernels (numba: the small, serial and the large, parallel engine path, in the
    slow pass, which pays their compile): the table, G and the change of the distance
    terms."""
    from adagrad.kernels.dog import torch_ops as dog_ops
    from adagrad.kernels.dog import cpu as dog_cpu
    gen = torch.Generator().manual_seed(rows)
    width = 32
    table = torch.randn(rows, width, generator=gen).to(dtype)
    initial = table + 0.1 * torch.randn(rows, width, generator=gen).to(dtype)
    state_sum = torch.rand(rows, width, generator=gen).to(dtype) * (torch.rand(rows, 1) > 0.5)
    grad = random_row_grad(rows, width, nnz, dtype=dtype, id_range=id_range, gen=gen)
    expected = _row_step_reference(table, state_sum, initial, grad, 0.3, 1e-8, maximize=True)
    indices, values = grad._indices()[0], grad._values()
    if kernel == "numba":
        assert dog_cpu.supports(table, state_sum, initial, values)
        change = dog_cpu.sparse_dog_adagrad_(table, state_sum, initial, indices, values, 0.3,
                                             1e-8, True)
    else:
        from adagrad.kernels.norm import torch_ops as norm_ops
        rows_, grads = norm_ops.summed_rows(indices, values, None, None, dtype)
        change = dog_ops.sparse_dog_adagrad_(table, state_sum, initial, rows_, grads,
                                             dog_ops.DogStep(0.3, 1e-8, maximize=True))
    tol = _tolerance(dtype)
    np.testing.assert_allclose(_np64(table), expected[0], **tol)
    np.testing.assert_allclose(_np64(state_sum), expected[1], **tol)
    np.testing.assert_allclose(change, expected[2], rtol=1e-9 if dtype == torch.float64 else 1e-4,
                               atol=1e-9)


@pytest.mark.slow
def test_parallel_sparse_kernel_is_bit_identical_on_any_thread_count():
    """The distance sums use fixed partitions: 1 and 2 numba threads give the same bits."""
    import numba

    from adagrad.kernels.dog import cpu as dog_cpu
    gen = torch.Generator().manual_seed(9)
    table0 = torch.randn(5000, 32, generator=gen)
    grad = random_row_grad(5000, 32, 3000, gen=gen)
    results = []
    threads = numba.get_num_threads()
    for count in (1, min(2, numba.config.NUMBA_NUM_THREADS)):
        numba.set_num_threads(count)
        table, state_sum, initial = table0.clone(), torch.zeros_like(table0), table0.clone()
        change = dog_cpu.sparse_dog_adagrad_(table, state_sum, initial, grad._indices()[0],
                                             grad._values(), 0.5, 1e-8, False)
        results.append((table, state_sum, change))
    numba.set_num_threads(threads)
    (t1, s1, c1), (t2, s2, c2) = results
    assert torch.equal(t1, t2) and torch.equal(s1, s2) and c1 == c2
