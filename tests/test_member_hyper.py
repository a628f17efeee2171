"""core.member_hyper: the one place where configurations become members' hyperparameters."""
from __future__ import annotations

import dataclasses

import pytest
import torch

import inertia
from inertia import rules
from inertia.core import Columns, check_members, member_hyper
from inertia.rules.base import broadcast_hyper, is_schedule
from inertia.schedules import cosine


@pytest.fixture
def counted(monkeypatch):
    """A preset "counted" of a fresh SGD rule whose validate counts its calls."""
    calls = []
    base = rules.SGD_RULE

    def validate(hyper):
        calls.append(hyper)
        base.validate(hyper)

    preset = rules.Preset("counted", dataclasses.replace(base, validate=validate), {"momentum": 0.9})
    monkeypatch.setitem(rules.PRESETS, "counted", preset)
    return calls


def _data(n=120, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    return x, (x[:, :3].sum(1) > 0).long()


def _sweep(**settings):
    (x, y), (x_test, y_test) = _data(), _data(40, 1)
    return inertia.sweep((x, y, x_test, y_test), "mlp", optimizer="counted", lr=[0.01, 0.05, 0.1], momentum=[0, 0.9],
                         steps=6, batch_size=16, seeds=2, lanes="threads", parallel=2, round_size=2, **settings)


def test_a_six_configuration_sweep_validates_its_values_once(counted):
    results = _sweep()
    assert len(results.records()) == 6
    assert len(counted) == 1                      # the grid's six points at once, not once per spec and stack
    lrs = counted[0]["lr"]
    assert isinstance(lrs, torch.Tensor) and sorted(set(lrs.tolist())) == [0.01, 0.05, 0.1]


def test_under_a_schedule_each_checked_step_validates_the_grid_once_and_training_adds_none(counted):
    _sweep(schedules={"lr": "cosine"})
    assert 1 < len(counted) <= 1 + 10      # the values, then the schedule at each checked step (at most 10)
    assert all(len(call["lr"]) == 6 for call in counted)   # the grid's six points, never a stack's members


def test_a_new_value_is_checked_and_a_known_one_is_not(counted):
    preset = rules.get("counted")
    check_members(preset, [{"lr": 0.1}, {"lr": 0.2}], columns=["lr"])
    check_members(preset, [{"lr": 0.2}, {"lr": 0.1}, {"lr": 0.2}], columns=["lr"])
    assert len(counted) == 1
    with pytest.raises(ValueError, match=r"lr must be .* got -1\.0"):
        check_members(preset, [{"lr": 0.1}, {"lr": -1.0}], columns=["lr"])
    assert counted[-1]["lr"].tolist() == [-1.0]    # only the member not checked before
    with pytest.raises(ValueError, match="nesterov"):   # other shared values: checked again
        check_members(preset, [{"lr": 0.1, "nesterov": "yes"}], columns=["lr"])


def test_members_get_a_number_where_they_agree_and_one_value_each_where_they_differ():
    adam = rules.get("adam")
    hyper = member_hyper(adam, [{"lr": 0.1, "betas": (0.9, 0.99)}, {"lr": 0.1, "betas": (0.8, 0.99)}],
                         dtype=torch.float32)
    assert hyper.values["lr"] == 0.1 and hyper.values["betas"][1] == 0.99
    assert torch.equal(hyper.values["betas"][0], torch.tensor([0.9, 0.8]))
    assert hyper.fixed == frozenset(adam.rule.numeric) and not hyper.dynamic
    swept = member_hyper(adam, [{"lr": 0.1}, {"lr": 0.1}], columns=["lr"])
    assert torch.equal(swept.values["lr"], torch.tensor([0.1, 0.1], dtype=torch.float64))


def test_a_members_own_schedule_makes_a_column_of_values_at_each_step():
    hyper = member_hyper(rules.get("momentum"), [{"lr": lambda t: 0.1 / (t + 1)}, {"lr": 0.05}], steps=10)
    assert isinstance(hyper.values["lr"], Columns) and "lr" not in hyper.fixed
    torch.testing.assert_close(hyper.at(3)["lr"], torch.tensor([0.025, 0.05], dtype=torch.float64))
    spec = member_hyper(rules.get("momentum"), [{"lr": 0.1}, {"lr": 0.2}], schedules={"lr": "cosine"}, steps=10)
    torch.testing.assert_close(spec.at(0)["lr"], torch.tensor([0.1, 0.2], dtype=torch.float64))
    torch.testing.assert_close(spec.at(5)["lr"], torch.tensor([0.05, 0.1], dtype=torch.float64))


@pytest.mark.parametrize("given, options, words", [
    ({"bogus": 1.0}, {}, ["bogus", "unknown"]),
    ({"lr": 0.1}, {"schedules": {"nesterov": "cosine"}}, ["nesterov", "cannot be swept or scheduled"]),
    ({"lr": 0.1}, {"columns": ["convention"]}, ["convention", "cannot be swept or scheduled"]),
    ({"lr": "fast"}, {"columns": ["lr"]}, ["lr must be a number", "fast"]),
    ({"momentum": 1.5}, {"schedules": {"lr": "cosine"}, "steps": 10}, ["momentum", "1.5"]),
])
def test_bad_members_are_refused_in_one_line_naming_the_argument(given, options, words):
    with pytest.raises(ValueError) as info:
        member_hyper(rules.get("momentum"), [given], **options)
    assert all(word in str(info.value) for word in words) and "\n" not in str(info.value)


def test_shaping_is_one_function_and_shaping_twice_is_shaping_once():
    param = torch.zeros(3, 4, 5, dtype=torch.float32)
    lr, betas = torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64), (torch.tensor([0.9, 0.8, 0.7]), 0.999)
    once = broadcast_hyper(lr, param)
    assert once.shape == (3, 1, 1) and once.dtype == torch.float32
    assert torch.equal(broadcast_hyper(once, param), once)
    shaped = broadcast_hyper(betas, param)
    assert shaped[0].shape == (3, 1, 1) and shaped[1] == 0.999
    with pytest.raises(ValueError, match="first dimension is 3"):
        broadcast_hyper(lr, torch.zeros(4, 2))


def test_a_schedule_is_a_callable_that_is_not_a_tensor_or_a_class():
    assert is_schedule(cosine(0.1, 10)) and is_schedule(lambda t: 0.1) and is_schedule((0.9, cosine(0.1, 10)))
    assert not any(is_schedule(v) for v in (0.1, torch.tensor(0.1), (0.9, 0.99), cosine, "cosine"))
