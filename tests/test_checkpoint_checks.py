"""Checkpoints: refused ones name the group, the parameter and the problem and change
nothing; load hooks are honoured; state_dict() does not allocate again (issue 8).

Oracles: `torch.optim.Adagrad` (its checkpoints, its hook semantics, its continued run)
and the expected error text written from the issue.
"""

from __future__ import annotations

import copy
import re

import pytest
import torch

from adagrad import Adagrad


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))


def _trained(named: bool = True, **options):
    model = _model()
    params = model.named_parameters() if named else model.parameters()
    opt = Adagrad(params, lr=0.1, **options)
    for seed in range(2):
        torch.manual_seed(seed)
        opt.zero_grad()
        model(torch.randn(5, 4)).pow(2).sum().backward()
        opt.step()
    return model, opt


def _snapshot(opt):
    groups = [{k: (list(map(id, v)) if k == "params" else copy.deepcopy(v)) for k, v in g.items()}
              for g in opt.param_groups]
    state = {id(p): {k: v.clone() for k, v in s.items()} for p, s in opt.state.items()}
    return groups, state


def _assert_unchanged(opt, snapshot):
    groups, state = _snapshot(opt)
    assert groups == snapshot[0]
    assert state.keys() == snapshot[1].keys()
    for pid, saved in snapshot[1].items():
        assert state[pid].keys() == saved.keys()
        for key, value in saved.items():
            assert torch.equal(state[pid][key], value) and state[pid][key].dtype == value.dtype


def _set(path, value):
    def edit(sd):
        target = sd
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value(target[path[-1]]) if callable(value) else value
    return edit


def _drop(path):
    def edit(sd):
        target = sd
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]
    return edit


def _adam_state(sd):
    """The per-parameter state of a torch.optim.Adam checkpoint of the same model (its
    groups would be refused first: see the next case)."""
    model = _model()
    adam = torch.optim.Adam(model.parameters())
    model(torch.randn(2, 4)).sum().backward()
    adam.step()
    sd["state"] = copy.deepcopy(adam.state_dict()["state"])


def _sgd_checkpoint(sd):
    """An optimizer without per-parameter state (plain SGD): only its groups tell."""
    sgd = torch.optim.SGD(_model().parameters(), lr=0.1)
    sd["param_groups"] = copy.deepcopy(sgd.state_dict()["param_groups"])
    sd["state"] = {}


def _one_group_too_many(sd):
    sd["param_groups"].append(copy.deepcopy(sd["param_groups"][0]))


def _one_parameter_too_many(sd):
    sd["param_groups"][0]["params"].append(99)


REFUSED = {
    # name: (edit of the state dict, regexes the message must contain)
    "wrong shape": (_set(["state", 2, "sum"], torch.zeros(3, 3)),
                    [r"group 0, parameter 2 \('1\.weight'\)", r"'sum' has shape \(3, 3\)",
                     r"expected \(2, 3\)"]),
    "wrong dtype": (_set(["state", 1, "sum"], lambda s: s.to(torch.int64)),
                    [r"parameter 1 \('0\.bias'\)", r"'sum' has dtype torch\.int64"]),
    "complex for real": (_set(["state", 0, "sum"], lambda s: s.to(torch.complex64)),
                         [r"parameter 0 \('0\.weight'\)", r"complex64"]),
    "missing sum": (_drop(["state", 3, "sum"]), [r"parameter 3 \('1\.bias'\)", r"lacks 'sum'"]),
    "missing step": (_drop(["state", 0, "step"]), [r"parameter 0", r"lacks 'step'"]),
    "NaN in sum": (_set(["state", 1, "sum"], lambda s: s.index_fill(0, torch.tensor([1]),
                                                                   float("nan"))),
                   [r"parameter 1 \('0\.bias'\)", r"'sum' holds NaN"]),
    "negative sum": (_set(["state", 2, "sum"], lambda s: -s),
                     [r"parameter 2 \('1\.weight'\)", r"'sum' holds negative values"]),
    "negative step": (_set(["state", 0, "step"], torch.tensor(-1.0)),
                      [r"parameter 0", r"'step'", r">= 0"]),
    "more groups": (_one_group_too_many, [r"2 parameter groups", r"has 1"]),
    "more parameters": (_one_parameter_too_many, [r"group 0 has 5 parameters there, 4 here"]),
    "another optimizer's state": (_adam_state,
                                  [r"group 0, parameter 0 \('0\.weight'\)", r"'exp_avg'",
                                   r"another optimizer"]),
    "another optimizer's groups": (_sgd_checkpoint,
                                   [r"group 0 lacks 'lr_decay'", r"not a checkpoint of Adagrad"]),
    "invalid hyperparameter": (_set(["param_groups", 0, "eps"], -1.0),
                               [r"group 0", r"argument `eps`"]),
    "lone clock": (_set(["state", 0, "param_log"], torch.tensor(-0.1, dtype=torch.float64)),
                   [r"parameter 0", r"only one of 'param_log' and 'row_param_log'"]),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_refused_checkpoint_names_group_parameter_and_problem_and_changes_nothing(name):
    edit, patterns = REFUSED[name]
    _, opt = _trained()
    sd = copy.deepcopy(opt.state_dict())
    edit(sd)
    snapshot = _snapshot(opt)
    with pytest.raises(ValueError) as error:
        opt.load_state_dict(sd)
    for pattern in patterns:
        assert re.search(pattern, str(error.value)), (pattern, str(error.value))
    _assert_unchanged(opt, snapshot)


def test_the_unedited_checkpoint_of_each_refused_case_loads():
    """The refusals above come from their edit, not from the checkpoint itself."""
    _, opt = _trained()
    _, other = _trained()
    other.load_state_dict(copy.deepcopy(opt.state_dict()))


def test_without_names_the_parameter_is_named_by_index():
    _, opt = _trained(named=False)
    sd = copy.deepcopy(opt.state_dict())
    sd["state"][3]["sum"] = torch.zeros(7)
    with pytest.raises(ValueError, match=r"group 0, parameter 3 of shape \(2,\).*\(7,\)"):
        opt.load_state_dict(sd)


def test_second_group_is_named():
    model = _model()
    opt = Adagrad([{"params": model[0].parameters()}, {"params": model[1].parameters()}])
    sd = copy.deepcopy(opt.state_dict())
    sd["state"][3]["sum"] = torch.zeros(5)
    with pytest.raises(ValueError, match=r"group 1, parameter 3 "):
        opt.load_state_dict(sd)


# -- hooks -------------------------------------------------------------------------------

def _torch_and_ours():
    models = [_model(), _model()]
    opts = [torch.optim.Adagrad(models[0].parameters(), lr=0.1),
            Adagrad(models[1].parameters(), lr=0.1)]
    for model, opt in zip(models, opts):
        model(torch.randn(3, 4, generator=torch.Generator().manual_seed(1))).sum().backward()
        opt.step()
    return opts


def test_a_load_pre_hook_that_edits_the_state_is_honoured():
    """As in torch.optim: the pre-hook's edits (in place, or a returned dict) are loaded."""
    def double_sums(optimizer, sd):  # edits the (shallow-copied) dict it is given
        sd["state"] = {key: dict(state, sum=state["sum"] * 2) for key, state in sd["state"].items()}

    def replace_lr(optimizer, sd):
        sd = dict(sd)
        sd["param_groups"] = [dict(g, lr=0.25) for g in sd["param_groups"]]
        return sd

    results = []
    for opt in _torch_and_ours():
        saved = copy.deepcopy(opt.state_dict())
        opt.register_load_state_dict_pre_hook(double_sums)
        opt.register_load_state_dict_pre_hook(replace_lr)
        opt.load_state_dict(saved)
        results.append(opt)
        assert opt.param_groups[0]["lr"] == 0.25
        for index, param in enumerate(opt.param_groups[0]["params"]):
            torch.testing.assert_close(opt.state[param]["sum"], saved["state"][index]["sum"] * 2)
    theirs, ours = results
    for p_t, p_o in zip(theirs.param_groups[0]["params"], ours.param_groups[0]["params"]):
        torch.testing.assert_close(ours.state[p_o]["sum"], theirs.state[p_t]["sum"])


def test_a_pre_hook_that_breaks_the_checkpoint_is_refused_and_a_post_hook_sees_the_load():
    _, opt = _trained()
    saved = copy.deepcopy(opt.state_dict())
    seen = []
    handle = opt.register_load_state_dict_pre_hook(
        lambda optimizer, sd: sd["state"][0].__setitem__("sum", torch.zeros(1)))
    opt.register_load_state_dict_post_hook(lambda optimizer: seen.append(
        float(next(iter(optimizer.state.values()))["step"])))
    snapshot = _snapshot(opt)
    with pytest.raises(ValueError, match=r"parameter 0 .*'sum' has shape \(1,\)"):
        opt.load_state_dict(copy.deepcopy(saved))
    _assert_unchanged(opt, snapshot)
    assert seen == []
    handle.remove()
    opt.load_state_dict(saved)
    assert seen == [2.0]


def test_loaded_state_is_a_copy():
    """Two optimizers loaded from one dict share no tensor (torch shares `step`)."""
    _, source = _trained()
    sd = source.state_dict()
    _, a = _trained()
    _, b = _trained()
    a.load_state_dict(sd)
    b.load_state_dict(sd)
    for pa, pb in zip(a.param_groups[0]["params"], b.param_groups[0]["params"]):
        for key in ("step", "sum"):
            assert a.state[pa][key].data_ptr() != b.state[pb][key].data_ptr()
            assert a.state[pa][key].data_ptr() != sd["state"][0][key].data_ptr()


# -- state_dict() of parameters never stepped ----------------------------------------------

def test_state_dict_of_unstepped_parameters_allocates_once_and_loads_into_torch():
    """torch.optim.Adagrad needs `sum` to load and step; ours creates it once (not at
    every call) and the first step then uses that same state."""
    model = _model()
    opt = Adagrad(model.parameters(), lr=0.1, initial_accumulator_value=0.5)
    first, second = opt.state_dict(), opt.state_dict()
    for index in first["state"]:
        assert first["state"][index]["sum"].data_ptr() == second["state"][index]["sum"].data_ptr()
    theirs_model = _model()
    theirs = torch.optim.Adagrad(theirs_model.parameters(), lr=0.1)
    theirs.load_state_dict(copy.deepcopy(first))
    batch = torch.randn(3, 4)
    for m, o in ((model, opt), (theirs_model, theirs)):
        m(batch).sum().backward()
        o.step()
    for p_o, p_t in zip(model.parameters(), theirs_model.parameters()):
        torch.testing.assert_close(p_o, p_t)
        torch.testing.assert_close(opt.state[p_o]["sum"], theirs.state[p_t]["sum"])
    assert opt.state[next(model.parameters())]["sum"].data_ptr() == \
        first["state"][0]["sum"].data_ptr()
