"""inertia.stack against n separately built and trained models (torch.optim.SGD, plain modules)."""
from __future__ import annotations

import copy
import pickle
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import inertia
from inertia.stacked import members


def small_cnn(dropout: float = 0.0) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Flatten(), nn.Dropout(dropout), nn.Linear(4 * 6 * 6, 3),
    ).double()


def batches(steps: int, size: int = 8):
    g = torch.Generator().manual_seed(11)
    return [(torch.randn(size, 1, 8, 8, generator=g, dtype=torch.float64),
             torch.randint(0, 3, (size,), generator=g)) for _ in range(steps)]


def test_members_are_built_under_seed_plus_i_and_the_global_generator_is_restored():
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    stacked = inertia.stack(small_cnn, 3, seed=40)
    assert torch.equal(torch.rand(1), expected_next)
    for i in range(3):
        torch.manual_seed(40 + i)
        reference = small_cnn()
        for key, value in reference.state_dict().items():
            assert torch.equal(stacked.state_dict()[key][i], value), (i, key)
    weights = stacked.state_dict()["0.weight"]
    assert not torch.equal(weights[0], weights[1])


def test_a_module_or_an_unseeded_factory_gives_one_initialization():
    model = small_cnn()
    for stacked in (inertia.stack(model, 2), inertia.stack(small_cnn, 2)):
        w = stacked.state_dict()["5.weight"]
        assert w.shape == (2, 3, 144) and torch.equal(w[0], w[1])
    assert torch.equal(inertia.stack(model, 2).state_dict()["0.bias"][1], model[0].bias.detach())
    with pytest.raises(ValueError, match="seed needs a factory"):
        inertia.stack(model, 2, seed=0)
    with pytest.raises(ValueError, match="n must be"):
        inertia.stack(small_cnn, 0)


def test_parameters_are_stacked_marked_and_named_like_the_template():
    stacked = inertia.stack(small_cnn, 4, seed=0)
    names = [name for name, _ in stacked.named_parameters()]
    assert names == [name for name, _ in small_cnn().named_parameters()]
    assert all(isinstance(p, nn.Parameter) and p.shape[0] == 4 and members(p) == 4 for p in stacked.parameters())
    assert set(stacked.state_dict()) == set(small_cnn().state_dict())
    for clone in (copy.deepcopy(stacked), pickle.loads(pickle.dumps(stacked))):
        assert all(members(p) == 4 for p in clone.parameters())
    assert members(small_cnn()[0].weight) is None


def test_shared_and_per_member_inputs_match_each_member_alone():
    stacked = inertia.stack(small_cnn, 3, seed=1).eval()
    x = torch.randn(5, 1, 8, 8, dtype=torch.float64)
    xs = torch.randn(3, 5, 1, 8, 8, dtype=torch.float64)
    shared, own = stacked(x), stacked(xs, per_member=True)
    assert shared.shape == own.shape == (3, 5, 3)
    for i in range(3):
        torch.manual_seed(1 + i)
        alone = small_cnn().eval()
        torch.testing.assert_close(shared[i], alone(x))
        torch.testing.assert_close(own[i], alone(xs[i]))


def train(opt, loss_of, data, before_step=lambda t: None):
    """``opt`` over ``data``: at step t, ``before_step(t)`` (set a hyperparameter), then one update of
    ``loss_of(x, y)``."""
    for t, (x, y) in enumerate(data):
        before_step(t)
        opt.zero_grad()
        loss_of(x, y).backward()
        opt.step()


def stacked_loss(stacked, n):
    """The members' summed mean cross-entropy on a shared batch (each member's gradient is its own)."""
    return lambda x, y: F.cross_entropy(stacked(x).flatten(0, 1), y.repeat(n), reduction="none").view(n, -1).mean(1).sum()


def test_training_with_per_member_lr_and_momentum_equals_separate_torch_sgd_runs():
    n, steps = 3, 12
    lr, momentum = [0.05, 0.1, 0.2], [0.0, 0.5, 0.9]
    data = batches(steps)
    stacked = inertia.stack(small_cnn, n, seed=7)
    opt = inertia.SGD(stacked.parameters(), lr=torch.tensor(lr, dtype=torch.float64),
                      momentum=torch.tensor(momentum, dtype=torch.float64))
    train(opt, stacked_loss(stacked, n), data)
    for i in range(n):
        torch.manual_seed(7 + i)
        model = small_cnn()
        train(torch.optim.SGD(model.parameters(), lr=lr[i], momentum=momentum[i]),
              lambda x, y: F.cross_entropy(model(x), y), data)
        mine = stacked.member(i)
        assert type(mine) is nn.Sequential and mine.training
        for key, value in model.state_dict().items():  # weights AND running statistics
            torch.testing.assert_close(stacked.state_dict()[key][i], value, rtol=1e-9, atol=1e-11, msg=key)
            torch.testing.assert_close(mine.state_dict()[key], value, rtol=1e-9, atol=1e-11, msg=key)
        assert int(mine.state_dict()["1.num_batches_tracked"]) == steps


def test_momentum_set_per_step_from_zero_equals_separate_torch_sgd_runs():
    """A per-member momentum that starts at 0 and is raised later (a warm-up set each step, as a
    scheduler does): torch makes its buffer at the first step with momentum != 0 (b = g there), so
    each member must, whatever its neighbours' momenta."""
    n, steps = 3, 10
    momentum_at = [lambda t: min(0.9, 0.15 * t), lambda t: 0.0, lambda t: 0.0 if t < 4 else 0.8]
    data = batches(steps)
    stacked = inertia.stack(small_cnn, n, seed=3)
    opt = inertia.SGD(stacked.parameters(), lr=0.1, momentum=torch.zeros(n, dtype=torch.float64))

    def momenta(t):
        opt.param_groups[0]["momentum"] = torch.tensor([m(t) for m in momentum_at], dtype=torch.float64)

    train(opt, stacked_loss(stacked, n), data, momenta)
    for i in range(n):
        torch.manual_seed(3 + i)
        model = small_cnn()
        ref = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.0)
        train(ref, lambda x, y: F.cross_entropy(model(x), y), data,
              lambda t: ref.param_groups[0].update(momentum=momentum_at[i](t)))
        for key, value in model.state_dict().items():
            torch.testing.assert_close(stacked.state_dict()[key][i], value, rtol=1e-9, atol=1e-11, msg=key)


def test_eval_mode_uses_running_statistics_and_leaves_them_alone():
    stacked = inertia.stack(small_cnn, 2, seed=3)
    stacked(torch.randn(6, 1, 8, 8, dtype=torch.float64))
    before = copy.deepcopy(stacked.state_dict())
    x = torch.randn(4, 1, 8, 8, dtype=torch.float64)
    out = stacked.eval()(x)
    assert all(torch.equal(before[k], v) for k, v in stacked.state_dict().items())
    torch.testing.assert_close(out[1], stacked.member(1).eval()(x))


def test_dropout_draws_per_member_and_is_reproducible_under_a_seed():
    stacked = inertia.stack(lambda: small_cnn(dropout=0.5), 1, seed=0)
    many = inertia.stack(stacked.member(0), 4)  # four identical members
    x = torch.randn(6, 1, 8, 8, dtype=torch.float64)
    torch.manual_seed(99)
    first = many(x)
    torch.manual_seed(99)
    again = many(x)
    assert torch.equal(first, again)
    assert not torch.allclose(first[0], first[1])  # same weights, different dropout masks
    torch.testing.assert_close(many.eval()(x)[0], many.eval()(x)[3])


def test_member_index_is_checked():
    stacked = inertia.stack(small_cnn, 2)
    with pytest.raises(ValueError, match="member index"):
        stacked.member(2)


@pytest.mark.parametrize("members_built,message", [
    ([nn.Linear(2, 3), nn.Linear(2, 3), nn.Linear(2, 4)],
     r"^member 2's 'weight' is \(4, 2\) torch.float32 but member 0's is \(3, 2\) torch.float32; "),
    ([nn.Linear(2, 3), nn.Linear(2, 3).double()], r"^member 1's 'weight' is \(3, 2\) torch.float64 but member 0's"),
    ([nn.Linear(2, 3), nn.Linear(2, 3, bias=False)], r"^member 1 of the stack differs .*only member 0 has 'bias'"),
    ([nn.BatchNorm1d(3), nn.BatchNorm1d(3, track_running_stats=False)], r"only member 0 has 'num_batches_tracked'"),
])
def test_members_of_different_shapes_are_refused_naming_the_member_and_the_tensor(members_built, message):
    built = iter(members_built)
    with pytest.raises(ValueError, match=message) as error:
        inertia.stack(lambda: next(built), len(members_built), seed=0)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("make,name", [
    (lambda params, bad: inertia.SGD(params, lr=0.1, momentum=bad), "momentum"),
    (lambda params, bad: inertia.SGD(params, lr=bad, momentum=0.9), "lr"),
    (lambda params, bad: inertia.Adam(params, lr=0.1, betas=(bad, 0.999)), "betas"),
])
def test_a_hyperparameter_tensor_of_two_dimensions_is_refused_at_construction(make, name):
    """One value per member is ``[n]``; ``[n, 1]`` or ``[2, 2]`` would fail at the first step without naming it."""
    stacked = inertia.stack(small_cnn, 2, seed=0)
    for bad in (torch.full((2, 1), 0.5), torch.full((2, 2), 0.5)):
        with pytest.raises(ValueError, match=rf"^{name}.* got a tensor of shape {re.escape(str(tuple(bad.shape)))}"):
            make(stacked.parameters(), bad)
    make(stacked.parameters(), torch.tensor([0.5, 0.25]))   # one value per member: accepted


def test_a_two_dimensional_tensor_set_in_a_param_group_later_is_named_at_the_step():
    stacked = inertia.stack(small_cnn, 2, seed=0)
    opt = inertia.SGD(stacked.parameters(), lr=0.1, momentum=torch.tensor([0.5, 0.25]))
    opt.param_groups[0]["momentum"] = torch.full((2, 2), 0.5)
    for p in stacked.parameters():
        p.grad = torch.ones_like(p)
    with pytest.raises(ValueError, match=r"^momentum must be 1-D \(one value per configuration\), got shape \(2, 2\)"):
        opt.step()


class TiedLM(nn.Module):
    """An embedding shared with the output layer (weight tying, as in language models)."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(7, 5)
        self.hidden = nn.Linear(5, 5)
        self.out = nn.Linear(5, 7, bias=False)
        self.out.weight = self.embed.weight

    def forward(self, tokens):
        return self.out(torch.tanh(self.hidden(self.embed(tokens))))


def test_a_weight_tied_model_keeps_its_tie_in_every_member_and_trains_as_separate_torch_runs():
    n, lr = 3, [0.05, 0.1, 0.2]
    g = torch.Generator().manual_seed(3)
    data = [(torch.randint(0, 7, (6,), generator=g), torch.randint(0, 7, (6,), generator=g)) for _ in range(8)]
    stacked = inertia.stack(TiedLM, n, seed=5)
    assert stacked.out.weight is stacked.embed.weight and stacked.embed.weight.shape == (n, 7, 5)
    opt = inertia.SGD(stacked.parameters(), lr=torch.tensor(lr), momentum=0.9)
    train(opt, stacked_loss(stacked, n), data)
    for i in range(n):
        torch.manual_seed(5 + i)
        model = TiedLM()
        train(torch.optim.SGD(model.parameters(), lr=lr[i], momentum=0.9),
              lambda x, y: F.cross_entropy(model(x), y), data)
        mine = stacked.member(i)
        assert mine.out.weight is mine.embed.weight
        for name, value in model.named_parameters():
            torch.testing.assert_close(mine.get_parameter(name), value, msg=name)
