"""A length-n hyperparameter on a parameter that is not stacked is an error."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import inertia


def test_a_length_n_hyperparameter_on_an_unstacked_model_is_a_one_line_error():
    with pytest.raises(ValueError, match=r"lr holds 8 values .* is not stacked: build the model with "
                                         r"inertia\.stack\(factory, 8\)") as info:
        inertia.SGD(nn.Linear(40, 8).parameters(), lr=torch.full((8,), 0.1))
    assert "\n" not in str(info.value)
    opt = inertia.Adam(nn.Linear(4, 2).parameters(), lr=0.1)
    with pytest.raises(ValueError, match=r"betas holds 2 values"):
        opt.add_param_group({"params": [nn.Parameter(torch.zeros(2, 4))], "betas": (torch.tensor([0.9, 0.8]), 0.99)})
    assert len(opt.param_groups) == 1
    linear = nn.Linear(4, 2)
    opt = inertia.SGD(linear.parameters(), lr=0.1)
    opt.param_groups[0]["lr"] = torch.tensor([0.1, 0.2])  # set later: refused at the step
    linear.weight.grad, linear.bias.grad = torch.ones(2, 4), torch.ones(2)
    with pytest.raises(ValueError, match="lr holds 2 values .* not stacked"):
        opt.step()
    assert torch.equal(linear.bias.grad, torch.ones(2))


def test_stacks_of_two_sizes_in_one_optimizer_are_refused():
    with pytest.raises(ValueError, match="stacked with 3 members and others with 2: use one optimizer per stack"):
        inertia.SGD([*inertia.stack(lambda: nn.Linear(2, 1), 2).parameters(),
                     *inertia.stack(lambda: nn.Linear(2, 1), 3).parameters()], lr=0.1)
