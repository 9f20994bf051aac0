"""Every member refuses a parameter group with an invalid hyperparameter, and every other
member's checkpoint, and is left as it was."""

import pytest
import torch

import adagrad

MEMBERS = [member.load() for member in adagrad.members.MEMBERS]  # tests/test_members.py


@pytest.mark.parametrize("member", MEMBERS, ids=lambda cls: cls.__name__)
def test_refused_group_is_not_added(member):
    first, second = torch.nn.Parameter(torch.ones(3, 2)), torch.nn.Parameter(torch.ones(4, 2))
    optimizer = member([first], lr=0.1)
    with pytest.raises(ValueError, match="lr"):
        optimizer.add_param_group({"params": [second], "lr": -1.0})
    assert len(optimizer.param_groups) == 1
    assert optimizer.param_groups[0]["params"] == [first]
    optimizer.add_param_group({"params": [second], "lr": 0.2})  # not "already in another group"
    assert [group["lr"] for group in optimizer.param_groups] == [0.1, 0.2]


def _stepped_checkpoint(member) -> dict:
    param = torch.nn.Parameter(torch.linspace(-1, 1, 8).reshape(4, 2))
    optimizer = member([param], lr=0.1)
    param.grad = torch.linspace(0.5, -0.5, 8).reshape(4, 2)
    optimizer.step()
    return optimizer.state_dict()


@pytest.mark.parametrize("saved_by", MEMBERS, ids=lambda cls: cls.__name__)
@pytest.mark.parametrize("loaded_by", MEMBERS, ids=lambda cls: cls.__name__)
def test_checkpoint_of_another_member_is_refused(saved_by, loaded_by):
    """A member loads its own checkpoint and refuses every other member's with a
    ValueError, leaving its state as it was."""
    checkpoint = _stepped_checkpoint(saved_by)
    param = torch.nn.Parameter(torch.zeros(4, 2))
    optimizer = loaded_by([param], lr=0.1)
    before = optimizer.state_dict()
    if saved_by is loaded_by:
        optimizer.load_state_dict(checkpoint)
        assert float(optimizer.state[param]["step"]) == 1
        return
    with pytest.raises(ValueError, match=r"state[_ ]dict"):
        optimizer.load_state_dict(checkpoint)
    after = optimizer.state_dict()
    assert after["param_groups"] == before["param_groups"]
    for key, value in before["state"][0].items():
        assert torch.equal(after["state"][0][key], value)
