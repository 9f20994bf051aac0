"""`adagrad.FullMatrixAdagrad` (:ref:`algo-full-matrix`).

Oracles: the float64 rule `adagrad.reference.full_matrix_adagrad` (numpy: ``eigh`` for
``S^{1/2}``, a linear solve with ``H``, true smaller last blocks, where the optimizer
inverts through the eigenbasis with a zero-padded last block), a first step worked out by
hand, and diagonal Adagrad on an ill-conditioned quadratic (measured, not timed).

Trajectory bound (`_check_trajectory`): the gradients never depend on θ, so S and H follow
the reference's whatever θ is and θ_T = θ_0 − lr·Σ H_t⁻¹·g_t. A correct run then differs
from the float64 one by the rounding of θ to its dtype each step, plus float64 error in
``H⁻¹·g``; for the latter, an eigenvalue λ of S is known to ~``d·u·||S||``, which moves
``1/(δ + sqrt(λ))`` by up to ``sqrt(d·u·||S||)/δ²``: the tests keep δ ≥ 0.05 so that this
stays far below the differences a wrong rule makes.
"""

from __future__ import annotations

import copy
import io
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sparse_support import coo

import adagrad.nn
from adagrad import Adagrad, FullMatrixAdagrad, reference

pytestmark = pytest.mark.filterwarnings("ignore:Sparse invariant checks")

UNIT = {torch.float64: 2.0 ** -53, torch.float32: 2.0 ** -24, torch.bfloat16: 2.0 ** -8,
        torch.float16: 2.0 ** -11}


def _real64(t: torch.Tensor) -> np.ndarray:
    t = t.detach()
    if t.is_complex():
        t = torch.view_as_real(t)
    return t.to(torch.float64).cpu().numpy().copy()


def _grads(shape, steps, gen, dtype):
    return [torch.randn(shape, generator=gen, dtype=torch.float64).to(dtype) for _ in range(steps)]


def _check_trajectory(param, grads, opt, *, lr, eps, block_size, every):
    """Step ``opt`` through ``grads`` and hold every step to the reference run."""
    dtype = param.dtype
    u_p = UNIT[torch.float32 if dtype == torch.complex64 else dtype]
    theta = _real64(param)
    state = reference.full_matrix_adagrad_init(theta, block_size)
    bound = np.zeros(theta.shape)
    for t, grad in enumerate(grads, 1):
        param.grad = grad.clone()
        opt.step()
        theta, state = reference.full_matrix_adagrad(theta, _real64(grad), state, lr=lr, eps=eps,
                                                     block_size=block_size,
                                                     precondition_every=every)
        s_norm = max((np.abs(S).sum() for S in state["sum"]), default=0.0)
        g_norm = float(np.abs(_real64(grad)).sum())
        solve = lr * g_norm * (math.sqrt(theta.size * 2.0 ** -53 * s_norm) / eps ** 2
                               + 1e-12 / eps)
        bound = bound + u_p * np.abs(theta) + solve + 1e-300
        excess = np.abs(_real64(param) - theta) - bound
        assert (excess <= 0).all(), f"step {t}: |θ − θ*| exceeds the bound by {excess.max():.3g}"


@st.composite
def full_matrix_cases(draw):
    shape = draw(st.sampled_from([(), (1,), (5,), (3, 4), (2, 3, 3), (40,)]))
    numel = math.prod(shape)
    block_size = draw(st.sampled_from([None, 1, 2, 3, 4, 7, 64]))
    return dict(shape=shape, block_size=block_size,
                every=draw(st.sampled_from([1, 1, 2, 3, 5])),
                dtype=draw(st.sampled_from([torch.float64, torch.float32, torch.bfloat16,
                                            torch.float16])),
                lr=draw(st.sampled_from([0.01, 0.1, 1.0])),
                eps=draw(st.sampled_from([0.05, 0.3, 1.0])),
                steps=draw(st.integers(1, 8)), seed=draw(st.integers(0, 2 ** 16)),
                numel=numel)


def _run_case(case):
    gen = torch.Generator().manual_seed(case["seed"])
    param = (torch.rand(case["shape"], generator=gen, dtype=torch.float64) * 4 - 2)
    param = param.to(case["dtype"]).requires_grad_()
    opt = FullMatrixAdagrad([param], lr=case["lr"], eps=case["eps"],
                            block_size=case["block_size"], precondition_every=case["every"])
    _check_trajectory(param, _grads(case["shape"], case["steps"], gen, case["dtype"]), opt,
                      lr=case["lr"], eps=case["eps"], block_size=case["block_size"],
                      every=case["every"])


@given(case=full_matrix_cases())
@settings(max_examples=40)
def test_against_the_reference(case):
    _run_case(case)


@given(case=full_matrix_cases())
@settings(max_examples=300)
@pytest.mark.slow
def test_against_the_reference_slow(case):
    _run_case(case)


@pytest.mark.parametrize("every", [2, 3, 7])
@pytest.mark.parametrize("block_size", [None, 4, 5])
def test_precondition_every_against_the_reference(every, block_size):
    """H⁻¹ reused between steps 1, k+1, 2k+1, …: 20 steps of a 13-coordinate parameter."""
    gen = torch.Generator().manual_seed(every * 10 + (block_size or 0))
    start = torch.randn(13, generator=gen, dtype=torch.float64)
    grads = _grads((13,), 20, gen, torch.float64)
    param = start.clone().requires_grad_()
    opt = FullMatrixAdagrad([param], lr=0.1, eps=0.2, block_size=block_size,
                            precondition_every=every)
    _check_trajectory(param, grads, opt, lr=0.1, eps=0.2, block_size=block_size, every=every)
    assert opt.state[param]["h_inverse"].shape == opt.state[param]["sum"].shape
    # the reuse is real: recomputing every step is another trajectory
    every_step = start.clone().requires_grad_()
    _train(every_step, FullMatrixAdagrad([every_step], lr=0.1, eps=0.2, block_size=block_size),
           grads)
    assert (every_step - param).abs().max() > 1e-3


def test_complex_parameters_are_their_real_coordinates():
    gen = torch.Generator().manual_seed(5)
    z = torch.randn(3, generator=gen, dtype=torch.complex128, requires_grad=True)
    x = torch.view_as_real(z.detach()).clone().requires_grad_()
    opt_z = FullMatrixAdagrad([z], lr=0.1, eps=0.1, block_size=4)
    opt_x = FullMatrixAdagrad([x], lr=0.1, eps=0.1, block_size=4)
    for _ in range(4):
        g = torch.randn(3, generator=gen, dtype=torch.complex128)
        z.grad, x.grad = g, torch.view_as_real(g).clone()
        opt_z.step()
        opt_x.step()
    assert torch.equal(torch.view_as_real(z.detach()), x.detach())
    assert opt_z.state[z]["sum"].shape == (2, 4, 4)


# ------------------------------------------------------------------ closed forms and the method


@pytest.mark.parametrize("block_size", [None, 3, 4])
def test_first_step_is_the_normalised_gradient_of_each_block(block_size):
    """S₁ = g·gᵀ, so S₁^{1/2} = g·gᵀ/||g|| and H₁⁻¹·g = g/(δ + ||g||) for each block: the
    first step moves each block by lr·g_i/(δ + ||g_i||) (here d = 10: blocks 3+3+3+1 or
    4+4+2)."""
    g = torch.arange(1.0, 11.0, dtype=torch.float64) * torch.tensor([1, -1] * 5)
    theta = torch.zeros(10, dtype=torch.float64, requires_grad=True)
    opt = FullMatrixAdagrad([theta], lr=0.5, eps=0.25, block_size=block_size)
    theta.grad = g.clone()
    opt.step()
    size = block_size or 10
    expected = torch.cat([-0.5 * b / (0.25 + b.norm()) for b in g.split(size)])
    torch.testing.assert_close(theta.detach(), expected, rtol=1e-12, atol=1e-14)


def test_a_block_size_that_does_not_divide_d_pads_the_last_block_with_zeros():
    theta = torch.zeros(10, dtype=torch.float64, requires_grad=True)
    opt = FullMatrixAdagrad([theta], lr=0.5, block_size=4)
    for _ in range(3):
        theta.grad = torch.randn(10, dtype=torch.float64)
        opt.step()
    S = opt.state[theta]["sum"]
    assert S.shape == (3, 4, 4) and S.dtype == torch.float64
    assert torch.equal(S[2, 2:], torch.zeros(2, 4, dtype=torch.float64))
    assert torch.equal(S[2, :, 2:], torch.zeros(4, 2, dtype=torch.float64))
    one = FullMatrixAdagrad([torch.zeros(3, requires_grad=True)], block_size=64)
    assert one._init_state(torch.zeros(3), one.param_groups[0])["sum"].shape == (1, 3, 3)


def _quadratic_run(cls, lr, matrix, start, steps):
    x = start.clone().requires_grad_()
    opt = cls([x], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        (0.5 * x @ matrix @ x).backward()
        opt.step()
    with torch.no_grad():
        return float(0.5 * x @ matrix @ x)


def test_converges_faster_than_diagonal_adagrad_on_an_ill_conditioned_quadratic():
    """f(x) = xᵀAx/2, A with eigenvalues 1 … 1000 in a random basis (so no coordinate
    scaling fixes it), 100 steps, each method at its best learning rate of a grid.
    Measured: full-matrix reaches ~1e-33·f₀, diagonal ~1e-3·f₀."""
    gen = torch.Generator().manual_seed(0)
    basis, _ = torch.linalg.qr(torch.randn(6, 6, generator=gen, dtype=torch.float64))
    matrix = basis @ torch.diag(torch.logspace(0, 3, 6, dtype=torch.float64)) @ basis.T
    start = torch.randn(6, generator=gen, dtype=torch.float64)
    f0 = float(0.5 * start @ matrix @ start)
    lrs = [0.1, 0.3, 1.0, 3.0, 10.0]
    full = min(_quadratic_run(FullMatrixAdagrad, lr, matrix, start, 100) for lr in lrs)
    diagonal = min(_quadratic_run(Adagrad, lr, matrix, start, 100) for lr in lrs)
    assert full < 1e-12 * f0
    assert diagonal > 1e-4 * f0
    assert full < 1e-6 * diagonal


# ------------------------------------------------------------------ resume and checkpoints


def _train(param, opt, grads):
    for g in grads:
        param.grad = g.clone()
        opt.step()


@pytest.mark.parametrize("stop", [1, 2, 4, 5])
def test_resume_mid_interval_is_bit_identical(stop):
    """precondition_every=3: stopping after step 1, 2, 4 (mid-interval: the H⁻¹ in use
    was made at step 1 or 4) or 5 and resuming from a saved checkpoint."""
    gen = torch.Generator().manual_seed(7)
    start = torch.randn(11, generator=gen, dtype=torch.float32)
    grads = _grads((11,), 9, gen, torch.float32)
    straight = start.clone().requires_grad_()
    opt = FullMatrixAdagrad([straight], lr=0.1, eps=0.1, block_size=4, precondition_every=3)
    _train(straight, opt, grads)
    first = start.clone().requires_grad_()
    opt1 = FullMatrixAdagrad([first], lr=0.1, eps=0.1, block_size=4, precondition_every=3)
    _train(first, opt1, grads[:stop])
    buffer = io.BytesIO()
    torch.save({"param": first, "optimizer": opt1.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer)
    resumed = saved["param"].detach().clone().requires_grad_()
    opt2 = FullMatrixAdagrad([resumed], lr=0.5, eps=1.0, block_size=4)  # the checkpoint's win
    opt2.load_state_dict(saved["optimizer"])
    _train(resumed, opt2, grads[stop:])
    assert torch.equal(straight, resumed)
    assert set(opt.state[straight]) == set(opt2.state[resumed]) == {"step", "sum", "h_inverse"}
    for key, value in opt.state[straight].items():
        assert torch.equal(value, opt2.state[resumed][key]), key


def test_precondition_every_one_keeps_no_h_inverse():
    p = torch.zeros(5, requires_grad=True)
    opt = FullMatrixAdagrad([p])
    p.grad = torch.ones(5)
    opt.step()
    assert set(opt.state[p]) == {"step", "sum"}


def test_state_is_lazy_float64_on_the_parameters_device():
    ps = [torch.zeros(4, dtype=dtype, requires_grad=True)
          for dtype in (torch.float32, torch.bfloat16, torch.float16, torch.float64)]
    opt = FullMatrixAdagrad(ps, lr=0.1)
    assert not opt.state
    for p in ps:
        p.grad = torch.ones_like(p)
    opt.step()
    for p in ps:
        assert opt.state[p]["sum"].dtype == torch.float64
        assert opt.state[p]["sum"].device == p.device and p.dtype in (torch.float32, torch.bfloat16,
                                                                      torch.float16, torch.float64)
    saved = opt.state_dict()
    other = FullMatrixAdagrad([p.detach().clone().requires_grad_() for p in ps])
    other.load_state_dict(saved)
    assert all(s["sum"].dtype == torch.float64 for s in other.state.values())


@pytest.mark.parametrize("shape", [(), (0,), (0, 3)])
def test_tiny_and_empty_parameters(shape):
    p = torch.full(shape, 2.0, requires_grad=True)
    opt = FullMatrixAdagrad([p], lr=0.5, eps=0.5, block_size=2)
    p.grad = torch.full(shape, 3.0)
    opt.step()
    if p.numel():
        assert p.item() == pytest.approx(2.0 - 0.5 * 3 / (0.5 + 3))
    assert opt.state[p]["step"].item() == 1
    FullMatrixAdagrad([p.detach().clone().requires_grad_()]).load_state_dict(opt.state_dict())


def test_checkpoints_are_refused_across_classes():
    p = torch.zeros(3, requires_grad=True)
    full, plain = FullMatrixAdagrad([p]), Adagrad([p])
    p.grad = torch.ones(3)
    full.step()
    plain.step()
    with pytest.raises(ValueError, match="lacks 'block_size'.*not a checkpoint of FullMatrixAdagrad"):
        FullMatrixAdagrad([p]).load_state_dict(plain.state_dict())
    with pytest.raises(ValueError, match="not a checkpoint of Adagrad"):
        Adagrad([p]).load_state_dict(full.state_dict())


def test_bad_checkpoints_are_refused_and_change_nothing():
    p = torch.zeros(10, requires_grad=True)
    opt = FullMatrixAdagrad([p], block_size=4, precondition_every=2)
    p.grad = torch.ones(10)
    opt.step()
    target = FullMatrixAdagrad([torch.zeros(10, requires_grad=True)], block_size=4)
    bad_cases = {
        "sum": (torch.zeros(3, 5, 5, dtype=torch.float64), "'sum' is"),
        "h_inverse": (torch.zeros(2, 5, 5, dtype=torch.float64), "'h_inverse'"),
    }
    for key, (value, message) in bad_cases.items():
        saved = copy.deepcopy(opt.state_dict())
        saved["state"][0][key] = value
        with pytest.raises(ValueError, match=message):
            target.load_state_dict(saved)
    saved = copy.deepcopy(opt.state_dict())
    saved["state"][0]["sum"][0, 0, 0] = -1.0
    with pytest.raises(ValueError, match="negative diagonal"):
        target.load_state_dict(saved)
    saved = copy.deepcopy(opt.state_dict())
    saved["state"][0]["sum"][1, 0, 1] = float("nan")
    with pytest.raises(ValueError, match="not finite"):
        target.load_state_dict(saved)
    saved = copy.deepcopy(opt.state_dict())
    del saved["state"][0]["sum"]
    with pytest.raises(ValueError, match="lacks 'sum'"):
        target.load_state_dict(saved)
    assert not target.state and target.param_groups[0]["precondition_every"] == 1
    # a layout valid for another block size loads, and the step names the mismatch
    saved = copy.deepcopy(opt.state_dict())
    saved["param_groups"][0]["block_size"] = 5
    target.load_state_dict(saved)
    target.param_groups[0]["params"][0].grad = torch.ones(10)
    with pytest.raises(RuntimeError, match="block_size=5 needs"):
        target.step()


# ------------------------------------------------------------------ refusals


def test_a_large_parameter_without_block_size_is_refused():
    with pytest.raises(ValueError, match="4097 real coordinates.*Set block_size"):
        FullMatrixAdagrad([torch.zeros(4097, requires_grad=True)])
    with pytest.raises(ValueError, match="Set block_size"):
        FullMatrixAdagrad([torch.zeros(2049, dtype=torch.complex64, requires_grad=True)])
    FullMatrixAdagrad([torch.zeros(64, 64, requires_grad=True)])  # 4096: allowed
    FullMatrixAdagrad([torch.zeros(10_000, requires_grad=True)], block_size=128)
    opt = FullMatrixAdagrad([torch.zeros(3, requires_grad=True)])
    with pytest.raises(ValueError, match="Set block_size"):
        opt.add_param_group({"params": [torch.zeros(5000, requires_grad=True)]})
    opt.add_param_group({"params": [torch.zeros(5000, requires_grad=True)], "block_size": 100})


@pytest.mark.parametrize("kwargs, name", [
    (dict(lr=-1.0), "lr"), (dict(eps=0.0), "eps"), (dict(eps=-1e-3), "eps"),
    (dict(block_size=0), "block_size"), (dict(block_size=-4), "block_size"),
    (dict(block_size=2.5), "block_size"), (dict(block_size=4.0), "block_size"),
    (dict(block_size=True), "block_size"), (dict(block_size="4"), "block_size"),
    (dict(precondition_every=0), "precondition_every"),
    (dict(precondition_every=1.5), "precondition_every"),
    (dict(precondition_every=None), "precondition_every"),
])
def test_invalid_hyperparameters_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=f"argument `{name}`"):
        FullMatrixAdagrad([torch.zeros(2, requires_grad=True)], **kwargs)
    opt = FullMatrixAdagrad([torch.zeros(2, requires_grad=True)])
    with pytest.raises(ValueError, match=f"argument `{name}`"):
        opt.add_param_group({"params": [torch.zeros(1, requires_grad=True)], **kwargs})
    saved = opt.state_dict()
    saved["param_groups"][0].update(kwargs)
    with pytest.raises(ValueError, match=f"argument `{name}`"):
        opt.load_state_dict(saved)


def test_numpy_integers_are_block_sizes():
    opt = FullMatrixAdagrad([torch.zeros(6, requires_grad=True)], block_size=np.int64(4),
                            precondition_every=np.int32(2))
    assert opt.param_groups[0]["block_size"] == 4


def test_sparse_gradients_are_refused_at_the_first_step_and_nothing_changes():
    table = torch.ones(5, 2, requires_grad=True)
    other = torch.ones(3, requires_grad=True)
    opt = FullMatrixAdagrad([other, table])
    other.grad = torch.ones(3)
    table.grad = coo([1, 1], torch.ones(2, 2), (5, 2))
    with pytest.raises(RuntimeError, match="does not support sparse gradients"):
        opt.step()
    assert not opt.state and torch.equal(other.detach(), torch.ones(3))
    layer = adagrad.nn.Embedding(5, 2)
    layer.update_in_backward(FullMatrixAdagrad(layer.parameters()))
    with pytest.raises(RuntimeError, match="does not support sparse gradients"):
        layer(torch.tensor([1, 2])).sum().backward()
