"""Every member refuses a parameter group with an invalid hyperparameter and is left as it
was: the group is not added, so its parameters can be added again correctly."""

import pytest
import torch

import adagrad

MEMBERS = [adagrad.Adagrad, adagrad.RowWiseAdagrad, adagrad.ProximalAdagrad, adagrad.AdagradDA,
           adagrad.FTRL, adagrad.AdagradNorm, adagrad.FullMatrixAdagrad]


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
