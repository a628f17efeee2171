"""The command a sweep prints keeps each schedule's length: a run stopped at the selected step takes the
sweep's values, not a schedule squeezed into fewer steps."""
from __future__ import annotations

import json
import shlex

import pytest

import inertia
from inertia import schedules as S
from inertia.cli import build_parser, main
from inertia.commands import train as train_face
from inertia.commands.reproduce import train_command
from inertia.sweeps import SweepResults

SWEEP_STEPS, BEST_STEP = 30, 18


def _schedule_names() -> list[str]:
    """Every name a schedule spec takes (the public schedule functions that ScheduleSpec knows)."""
    names = []
    for name in S.__all__:
        try:
            S.ScheduleSpec(name)
        except ValueError:
            continue
        names.append(name)
    return names


DRIVES = {"sutskever_ramp": "momentum", "one_cycle_momentum": "momentum", "demon": "momentum"}
"""The hyperparameter each schedule drives here (the learning rate unless named)."""


@pytest.mark.parametrize("name", _schedule_names())
def test_the_reproduce_command_takes_the_sweeps_schedule_values_at_every_step(name):
    hyper = DRIVES.get(name, "lr")
    config = {"lr": 0.05, "momentum": 0.9, "status": "ok", "best_step": BEST_STEP}
    meta = {"data": "digits", "model": "mlp", "optimizer": "momentum", "steps": SWEEP_STEPS, "batch_size": 20,
            "folds": 1, "seed": 0, "seeds": 1, "schedules": {hyper: name}}
    command = shlex.split(train_command(SweepResults([config], ["lr", "momentum"], meta=meta), config))
    kwargs = train_face.fit_arguments(build_parser().parse_args(command[1:]))
    assert kwargs["steps"] == BEST_STEP
    base = config[hyper]
    swept = S.from_spec(name, base=base, steps=SWEEP_STEPS)                         # as the sweep ran it
    reproduced = S.from_spec(kwargs["schedules"][hyper], base=base, steps=kwargs["steps"])
    assert [float(reproduced(t)) for t in range(BEST_STEP)] == [float(swept(t)) for t in range(BEST_STEP)]


def test_a_schedule_that_does_not_depend_on_the_length_is_printed_as_given():
    config = {"lr": 0.05, "momentum": 0.9, "status": "ok", "best_step": BEST_STEP}
    meta = {"data": "digits", "model": "mlp", "optimizer": "momentum", "steps": SWEEP_STEPS,
            "schedules": {"momentum": "sutskever_ramp(0.99, every=5)", "lr": "cosine(end=1e-4)"}}
    command = train_command(SweepResults([config], ["lr", "momentum"], meta=meta), config)
    assert "momentum=sutskever_ramp(0.99, every=5)" in command
    assert f"lr=cosine(steps={SWEEP_STEPS}, end=0.0001)" in command and f"--steps {BEST_STEP}" in command


def test_the_reproduce_command_of_a_scheduled_sweep_gives_its_validation_loss(tmp_path):
    """lr ramps up linearly over the sweep's 60 steps and the best validation loss comes before the end:
    the printed command (which stops there) must give the sweep's numbers."""
    results = inertia.sweep("digits", "mlp", lr=[0.3], momentum=[0.9], steps=60, batch_size=32, seeds=1,
                            eval_every=6, metric="val_loss", schedules={"lr": "linear"})
    best = results.best
    assert best["best_step"] < 60, "the test needs a best point before the end"
    command = shlex.split(train_command(results))
    out = tmp_path / "r.json"
    assert main([*command[1:], "--json", str(out), "--quiet", "--device", "cpu"]) == 0
    ours = json.loads(out.read_text())
    assert ours["val_loss_mean"] == best["val_loss_mean"]
    # the same command with the schedule squeezed into the shorter run gives other numbers
    squeezed = [word if not word.startswith("lr=") else "lr=linear" for word in command]
    assert main([*squeezed[1:], "--json", str(out), "--quiet", "--device", "cpu"]) == 0
    assert json.loads(out.read_text())["val_loss_mean"] != pytest.approx(best["val_loss_mean"], rel=1e-2)
