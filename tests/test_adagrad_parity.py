"""adagrad.Adagrad against torch.optim.Adagrad: same arguments, same numbers (issue 2, item 1/6)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.testing._internal.common_optimizers import optim_inputs_func_adagrad

from adagrad import Adagrad

TORCH_INPUTS = optim_inputs_func_adagrad("cpu")
# (foreach, fused) combinations torch supports: never both True
IMPLS = [(None, None), (False, False), (True, False), (False, True)]
DTYPES = [torch.float32, torch.float64, torch.complex64]
STEPS = 100


def tol(dtype):
    """rtol 1e-6 as issue 2 demands; atol covers coordinates that pass near zero."""
    if dtype in (torch.float64, torch.complex128):
        return dict(rtol=1e-6, atol=1e-12)
    return dict(rtol=1e-6, atol=1e-6)


def make_params(dtype, gen):
    """Three groups' worth of parameters, incl. 0-d, empty and one that never gets a grad."""
    shapes = [(5, 3), (3,), (), (4, 2, 2), (0, 3), (6,)]
    return [torch.randn(s, dtype=dtype, generator=gen).requires_grad_() for s in shapes]


def make_groups(params):
    """Several param groups; the second overrides lr_decay, the last param has no grad."""
    return [
        {"params": params[0:2]},
        {"params": params[2:4], "lr_decay": 0.05},
        {"params": params[4:6]},
    ]


NO_GRAD = 5  # index of the parameter that never receives a gradient


def clone_params(params):
    return [p.detach().clone().requires_grad_() for p in params]


def run_pair(ours, theirs, ps_ours, ps_theirs, dtype, steps, gen):
    for _ in range(steps):
        for i, (a, b) in enumerate(zip(ps_ours, ps_theirs)):
            if i == NO_GRAD:
                continue
            g = torch.randn(a.shape, dtype=dtype, generator=gen)
            a.grad = g.clone()
            b.grad = g.clone()
        ours.step()
        theirs.step()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("foreach,fused", IMPLS, ids=lambda v: f"{v}")
@pytest.mark.parametrize("inp", TORCH_INPUTS, ids=lambda i: i.desc)
def test_parity_with_torch(inp, foreach, fused, dtype):
    """100 steps, every torch input, several groups: params and sums equal torch's."""
    if fused and dtype.is_complex:
        pytest.skip("torch's fused Adagrad does not support complex parameters")
    gen = torch.Generator().manual_seed(1234)
    ps_theirs = make_params(dtype, gen)
    ps_ours = clone_params(ps_theirs)
    kw = dict(copy.deepcopy(inp.kwargs), foreach=foreach, fused=fused)
    kw_theirs = copy.deepcopy(kw)
    if fused and dtype == torch.float64:
        # torch's fused CPU kernel takes ~50 ms a step in float64; its for-loop path is the
        # same math, so ours(fused=True) is held to that one instead
        kw_theirs.update(fused=False, foreach=False)
    theirs = torch.optim.Adagrad(make_groups(ps_theirs), **kw_theirs)
    ours = Adagrad(make_groups(ps_ours), **copy.deepcopy(kw))
    run_pair(ours, theirs, ps_ours, ps_theirs, dtype, STEPS, gen)
    for i, (a, b) in enumerate(zip(ps_ours, ps_theirs)):
        torch.testing.assert_close(a, b, **tol(dtype), msg=lambda m, i=i: f"param {i}: {m}")
        if i == NO_GRAD:
            continue
        sa, sb = ours.state[a], theirs.state[b]
        torch.testing.assert_close(sa["sum"], sb["sum"], **tol(dtype), msg=lambda m, i=i: f"sum {i}: {m}")
        assert float(sa["step"]) == float(sb["step"]) == STEPS
    # the parameter without a gradient is untouched and has taken no step
    p = ps_ours[NO_GRAD]
    torch.testing.assert_close(p, ps_theirs[NO_GRAD], rtol=0, atol=0)
    st = ours.state.get(p, {})
    assert "step" not in st or float(st["step"]) == 0


@pytest.mark.parametrize("fused", [None, True])
def test_per_tensor_step_count_with_intermittent_grads(fused):
    """Params that get gradients on different steps keep their own t (lr_decay uses it), like torch."""
    gen = torch.Generator().manual_seed(21)
    ps_t = [torch.randn(4, 3, generator=gen).requires_grad_() for _ in range(3)]
    ps_o = clone_params(ps_t)
    opt_t = torch.optim.Adagrad(ps_t, lr=0.1, lr_decay=0.3, fused=fused)
    opt_o = Adagrad(ps_o, lr=0.1, lr_decay=0.3, fused=fused)
    for it in range(30):
        for i, (a, b) in enumerate(zip(ps_o, ps_t)):
            if it % (i + 1) == 0:
                g = torch.randn(4, 3, generator=gen)
                a.grad, b.grad = g.clone(), g.clone()
            else:
                a.grad = b.grad = None
        opt_o.step()
        opt_t.step()
    for i, (a, b) in enumerate(zip(ps_o, ps_t)):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
        assert float(opt_o.state[a]["step"]) == float(opt_t.state[b]["step"]) == len(range(0, 30, i + 1))


def test_mixed_dtypes_in_one_group():
    """float32, float64 and complex64 parameters in one group: each equals torch's."""
    gen = torch.Generator().manual_seed(8)
    dts = [torch.float32, torch.float64, torch.complex64, torch.float32, torch.float64]
    ps_t = [torch.randn(3, 2, dtype=dt, generator=gen).requires_grad_() for dt in dts]
    ps_o = clone_params(ps_t)
    opt_t = torch.optim.Adagrad(ps_t, lr=0.1, weight_decay=0.1, initial_accumulator_value=0.1)
    opt_o = Adagrad(ps_o, lr=0.1, weight_decay=0.1, initial_accumulator_value=0.1)
    for _ in range(20):
        for a, b in zip(ps_o, ps_t):
            g = torch.randn(a.shape, dtype=a.dtype, generator=gen)
            a.grad, b.grad = g.clone(), g.clone()
        opt_o.step()
        opt_t.step()
    for a, b in zip(ps_o, ps_t):
        torch.testing.assert_close(a, b, **tol(a.dtype))
        torch.testing.assert_close(opt_o.state[a]["sum"], opt_t.state[b]["sum"], **tol(a.dtype))


def test_fused_with_differentiable_raises_like_torch():
    p = torch.zeros(2, requires_grad=True)
    with pytest.raises(RuntimeError) as theirs:
        torch.optim.Adagrad([p], fused=True, differentiable=True)
    with pytest.raises(RuntimeError) as ours:
        Adagrad([p], fused=True, differentiable=True)
    assert str(ours.value) == str(theirs.value)


SPARSE_INPUTS = [
    {},
    {"lr": 0.1},
    {"lr": 0.1, "lr_decay": 0.5},
    {"initial_accumulator_value": 0.1},
    {"maximize": True, "lr": 0.05},
    {"eps": 1e-3},
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("kwargs", SPARSE_INPUTS, ids=str)
def test_sparse_parity_with_torch(kwargs, dtype):
    """Uncoalesced sparse gradients with duplicate rows: equal to torch's sparse Adagrad."""
    gen = torch.Generator().manual_seed(99)
    w_theirs = torch.randn(20, 4, dtype=dtype, generator=gen).requires_grad_()
    w_ours = w_theirs.detach().clone().requires_grad_()
    theirs = torch.optim.Adagrad([w_theirs], **kwargs)
    ours = Adagrad([w_ours], **kwargs)
    for _ in range(25):  # torch's sparse path costs ~30 ms a step
        idx = torch.randint(0, 20, (12,), generator=gen)  # duplicates are likely
        idx[1] = idx[0]  # and certain
        vals = torch.randn(12, 4, dtype=dtype, generator=gen)
        g = torch.sparse_coo_tensor(idx[None], vals, (20, 4))
        assert not g.is_coalesced()
        w_theirs.grad = g.clone()
        w_ours.grad = g.clone()
        theirs.step()
        ours.step()
    torch.testing.assert_close(w_ours, w_theirs, **tol(dtype))
    torch.testing.assert_close(ours.state[w_ours]["sum"], theirs.state[w_theirs]["sum"], **tol(dtype))


def test_sparse_parity_through_embedding():
    """nn.Embedding(sparse=True) end to end: same weights as torch after a few batches."""
    gen = torch.Generator().manual_seed(5)
    emb_t = torch.nn.Embedding(30, 8, sparse=True)
    emb_o = copy.deepcopy(emb_t)
    opt_t = torch.optim.Adagrad(emb_t.parameters(), lr=0.1)
    opt_o = Adagrad(emb_o.parameters(), lr=0.1)
    for _ in range(10):
        ids = torch.randint(0, 30, (16, 3), generator=gen)
        for emb, opt in ((emb_t, opt_t), (emb_o, opt_o)):
            opt.zero_grad()
            emb(ids).pow(2).sum().backward()
            opt.step()
    torch.testing.assert_close(emb_o.weight, emb_t.weight, rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------- works with what users combine


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 10), torch.nn.ReLU(), torch.nn.Linear(10, 1))


def _data():
    gen = torch.Generator().manual_seed(7)
    return torch.randn(64, 5, generator=gen), torch.randn(64, 1, generator=gen)


SCHEDULERS = {
    "StepLR": lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=10, gamma=0.5),
    "ExponentialLR": lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.95),
    "LambdaLR": lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda e: 1.0 / (1 + e)),
    "OneCycleLR": lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.1, total_steps=40, cycle_momentum=False),
    "CosineAnnealingLR": lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=15),
    "ReduceLROnPlateau": lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(o, patience=1, factor=0.5),
}


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_lr_schedulers_match_torch(name):
    """Under the same scheduler, ours and torch.optim.Adagrad train identically."""
    x, y = _data()
    m_t = _model()
    m_o = copy.deepcopy(m_t)
    opt_t = torch.optim.Adagrad(m_t.parameters(), lr=0.05, lr_decay=0.01)
    opt_o = Adagrad(m_o.parameters(), lr=0.05, lr_decay=0.01)
    s_t, s_o = SCHEDULERS[name](opt_t), SCHEDULERS[name](opt_o)
    for _ in range(40):
        for m, opt, s in ((m_t, opt_t, s_t), (m_o, opt_o, s_o)):
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(m(x), y)
            loss.backward()
            opt.step()
            if name == "ReduceLROnPlateau":
                s.step(loss.item())
            else:
                s.step()
    assert opt_o.param_groups[0]["lr"] == pytest.approx(opt_t.param_groups[0]["lr"])
    for a, b in zip(m_o.parameters(), m_t.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("fused", [None, True])
def test_grad_scaler_matches_torch_and_skips_inf_steps(fused):
    """GradScaler on CPU: normal steps match torch; a step with inf grads changes nothing."""
    x, y = _data()
    m_t = _model()
    m_o = copy.deepcopy(m_t)
    opt_t = torch.optim.Adagrad(m_t.parameters(), lr=0.05, fused=fused)
    opt_o = Adagrad(m_o.parameters(), lr=0.05, fused=fused)
    sc_t = torch.amp.GradScaler("cpu", init_scale=1024.0)
    sc_o = torch.amp.GradScaler("cpu", init_scale=1024.0)
    for it in range(12):
        for m, opt, sc in ((m_t, opt_t, sc_t), (m_o, opt_o, sc_o)):
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(m(x), y)
            sc.scale(loss).backward()
            if it == 6:
                next(m.parameters()).grad[0, 0] = float("inf")
                if opt is opt_o:
                    before_p = [p.detach().clone() for p in m.parameters()]
                    before_s = {k: v.clone() for k, v in opt.state[next(m.parameters())].items()}
            sc.step(opt)
            sc.update()
            if it == 6 and opt is opt_o:
                for p, q in zip(m.parameters(), before_p):
                    torch.testing.assert_close(p.detach(), q, rtol=0, atol=0)
                after_s = opt.state[next(m.parameters())]
                for k, v in before_s.items():
                    torch.testing.assert_close(after_s[k], v, rtol=0, atol=0)
    assert sc_o.get_scale() == sc_t.get_scale()
    for a, b in zip(m_o.parameters(), m_t.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    for a, b in zip(m_o.parameters(), m_t.parameters()):
        torch.testing.assert_close(opt_o.state[a]["sum"], opt_t.state[b]["sum"], rtol=1e-6, atol=1e-6)
        assert float(opt_o.state[a]["step"]) == float(opt_t.state[b]["step"]) == 11


@pytest.mark.slow
def test_torch_compile_training_step_matches_eager_torch():
    """A torch.compile'd training step with ours equals eager torch.optim.Adagrad."""
    x, y = _data()
    m_t = _model()
    m_o = copy.deepcopy(m_t)
    opt_t = torch.optim.Adagrad(m_t.parameters(), lr=0.05, weight_decay=0.01)
    opt_o = Adagrad(m_o.parameters(), lr=0.05, weight_decay=0.01)

    @torch.compile
    def train_step():
        opt_o.zero_grad()
        loss = torch.nn.functional.mse_loss(m_o(x), y)
        loss.backward()
        opt_o.step()
        return loss

    for _ in range(4):
        train_step()
        opt_t.zero_grad()
        torch.nn.functional.mse_loss(m_t(x), y).backward()
        opt_t.step()
    for a, b in zip(m_o.parameters(), m_t.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(opt_o.state[a]["sum"], opt_t.state[b]["sum"], rtol=1e-5, atol=1e-6)


def test_torch_compile_optimizer_step_eager_backend():
    """torch.compile(backend='eager') of opt.step(): fast smoke of the dynamo path, vs torch."""
    torch._dynamo.reset()
    x, y = _data()
    m_t = _model()
    m_o = copy.deepcopy(m_t)
    opt_t = torch.optim.Adagrad(m_t.parameters(), lr=0.05)
    opt_o = Adagrad(m_o.parameters(), lr=0.05)
    step = torch.compile(opt_o.step, backend="eager")
    for _ in range(3):
        for m, opt, fn in ((m_t, opt_t, opt_t.step), (m_o, opt_o, step)):
            opt.zero_grad()
            torch.nn.functional.mse_loss(m(x), y).backward()
            fn()
    for a, b in zip(m_o.parameters(), m_t.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_share_memory_creates_shared_state():
    """share_memory() before any step creates state with `sum` in shared memory; steps keep it."""
    m_t = _model()
    m_o = copy.deepcopy(m_t)
    opt_t = torch.optim.Adagrad(m_t.parameters(), lr=0.05, initial_accumulator_value=0.1)
    opt_o = Adagrad(m_o.parameters(), lr=0.05, initial_accumulator_value=0.1)
    opt_o.share_memory()
    for p in m_o.parameters():
        s = opt_o.state[p]["sum"]
        assert s.is_shared()
        torch.testing.assert_close(s, torch.full_like(p, 0.1))
    x, y = _data()
    for _ in range(5):
        for m, opt in ((m_t, opt_t), (m_o, opt_o)):
            opt.zero_grad()
            torch.nn.functional.mse_loss(m(x), y).backward()
            opt.step()
    for a, b in zip(m_o.parameters(), m_t.parameters()):
        assert opt_o.state[a]["sum"].is_shared()
        torch.testing.assert_close(opt_o.state[a]["sum"], opt_t.state[b]["sum"], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
