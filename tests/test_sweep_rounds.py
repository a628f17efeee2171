"""Rounds: random/TPE trials are asked a round at a time, each round after the earlier ones are told."""
from __future__ import annotations

import pytest

import inertia
from inertia.sweeps import SearchSpec

SMALL = dict(data="digits", model="mlp", steps=20, batch_size=32, lr="1e-3:1e-1:3", momentum=[0.0, 0.95])


def test_the_default_round_is_a_quarter_of_a_budget_half_of_a_grid_and_never_all_of_it():
    tpe = SearchSpec(sampler="tpe", trials=64)
    assert [tpe.rounds(n) for n in (1, 2, 3, 4, 5, 8, 64)] == [1, 1, 1, 1, 2, 2, 16]
    assert [SearchSpec().rounds(n) for n in (1, 2, 3, 64)] == [1, 1, 2, 32]   # a grid: half, so stacks stay full
    assert SearchSpec(round_size=3).rounds(64) == 3


@pytest.mark.parametrize("sampler,round_size", [("tpe", 2), ("tpe", None), ("random", 3)])
def test_each_round_is_asked_after_the_earlier_rounds_are_told(tmp_path, sampler, round_size):
    import optuna

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    trials = 8
    inertia.sweep(**SMALL, sampler=sampler, trials=trials, round_size=round_size, storage=storage)
    done = sorted(optuna.load_study(study_name="sweep", storage=storage).trials, key=lambda t: t.number)
    assert len(done) == trials and all(t.state == optuna.trial.TrialState.COMPLETE for t in done)
    size = round_size or SearchSpec(sampler=sampler, trials=trials).rounds(trials)
    rounds = [done[i:i + size] for i in range(0, trials, size)]
    for k in range(1, len(rounds)):
        told = max(t.datetime_complete for r in rounds[:k] for t in r)
        assert min(t.datetime_start for t in rounds[k]) >= told, f"round {k} was asked before round {k - 1} was told"
        # and within a round, everything is asked before anything is told
        assert max(t.datetime_start for t in rounds[k]) <= min(t.datetime_complete for t in rounds[k])


def test_a_warning_when_tpe_or_a_pruner_would_have_nothing_to_learn_from():
    with pytest.warns(UserWarning, match="one round"):
        inertia.sweep(**SMALL, sampler="tpe", trials=4, round_size=4)
    with pytest.warns(UserWarning, match="one round"):
        inertia.sweep(**SMALL, pruner="median", max_batch=64, round_size=6)
