"""YellowFin per configuration: every member of a sweep's stack against inertia.YellowFin trained alone in a
plain torch loop on the same minibatches, dropped members and resumes, the tuner over every momentum rule,
the tuned values in TensorBoard (read with TensorBoard's own reader), and the one-line refusals."""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import inertia
from inertia import rules
from inertia.cli import main
from inertia.pipeline import batch_at, make_folds
from inertia.sweeps.engine import Job, Members, run_members

FEATURES, CLASSES, EXAMPLES, STEPS, BATCH, SEED = 6, 3, 96, 60, 16, 5
CONFIGS = [{"beta": 0.99, "weight_decay": 0.0}, {"beta": 0.999, "weight_decay": 1e-3},
           {"beta": 0.95, "weight_decay": 0.0}]


def _data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(EXAMPLES, FEATURES, generator=g)
    y = (x @ torch.randn(FEATURES, CLASSES, generator=g) + 0.5 * torch.randn(EXAMPLES, CLASSES, generator=g)).argmax(1)
    return x, y


def mlp():
    return nn.Sequential(nn.Linear(FEATURES, 8), nn.ReLU(), nn.Linear(8, CLASSES))


class TanhNet(nn.Module):
    """Not an MLP the batched path runs: it goes through functional_call under vmap."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(FEATURES, 8), nn.Linear(8, CLASSES)

    def forward(self, x):
        return self.b(torch.tanh(self.a(x)))


def _job(optimizer: str, factory=mlp, backend: str = "batched", **settings) -> Job:
    x, y = _data()
    return Job(factory, x, y, make_folds(EXAMPLES, 2, SEED), rules.get(optimizer), {}, STEPS, BATCH, seed=SEED,
               dtype=torch.float64, backend=backend, **settings)


def _alone(job: Job, fold: int, rule: str, config: dict) -> tuple[nn.Module, list[tuple[float, float]]]:
    """inertia.YellowFin on one copy of the job's model in a plain loop over the fold's minibatches; the
    model and the (lr, momentum) its groups held after each step."""
    model = copy.deepcopy(job.template)
    opt = inertia.YellowFin(model.parameters(), rule=rule, **config)
    train_idx = job.folds[fold][0]
    used = []
    for t in range(STEPS):
        idx = batch_at(train_idx, t, BATCH, SEED, fold)
        opt.zero_grad()
        F.cross_entropy(model(job.x[idx]), job.y[idx]).backward()
        opt.step()
        used.append((opt.param_groups[0]["lr"], opt.param_groups[0]["momentum"]))
    return model, used


@pytest.mark.parametrize("optimizer, factory, backend", [("yellowfin", mlp, "batched"), ("yellowfin", TanhNet, "vmap"),
                                                         ("yellowfin:nesterov", mlp, "batched"),
                                                         ("yellowfin:qhm", mlp, "batched")])
def test_each_member_of_a_stack_equals_yellowfin_trained_alone(optimizer, factory, backend):
    """Configurations x folds in one stack, the first configuration dropped at step 20: each surviving
    member's parameters and tuned (lr, momentum) are those of inertia.YellowFin alone on its minibatches."""
    job = _job(optimizer, factory, backend, eval_every=20)
    assert job.backend == backend
    members = run_members(Members(job, CONFIGS, list(range(len(CONFIGS)))),
                          on_eval=lambda m, means: [0] if m.step == 20 else [])
    records, stacked, n = members.results(), members.stack.params, len(CONFIGS)
    assert records[0]["status"] == "pruned"
    live = members.live.tolist()
    for c in (1, 2):
        used_by_fold = []
        for k in range(job.n_folds):
            model, used = _alone(job, k, rules.get(optimizer).base, CONFIGS[c])
            used_by_fold.append(used)
            row = live.index(k * n + c)
            for p, s in zip(model.parameters(), stacked):
                torch.testing.assert_close(s[row], p.detach(), rtol=1e-6, atol=1e-9)
        mean = [[sum(fold[t][i] for fold in used_by_fold) / job.n_folds for t in range(STEPS)] for i in (0, 1)]
        assert records[c]["lr_curve"] == pytest.approx(mean[0], rel=1e-6)
        assert records[c]["momentum_curve"] == pytest.approx(mean[1], rel=1e-6)
        assert max(mean[1]) - min(mean[1]) > 0.05, "the momentum barely moved: the test would not see a stale value"


def test_a_stack_resumed_from_its_checkpoint_tunes_as_if_never_stopped():
    job = _job("yellowfin")
    whole = run_members(Members(job, CONFIGS, [0, 1, 2]))
    first = Members(job, CONFIGS, [0, 1, 2])
    while first.step < STEPS // 2:
        first.train_step()
    saved = copy.deepcopy(first.state_dict())
    again = Members(job, CONFIGS, [0, 1, 2])
    again.load_state_dict(saved)
    run_members(again)
    for a, b in zip(whole.stack.params, again.stack.params):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert again.results()[1]["lr_curve"] == whole.results()[1]["lr_curve"]


@pytest.mark.parametrize("name", sorted(n for n, p in rules.PRESETS.items() if "momentum" in p.rule.numeric))
def test_the_tuner_drives_every_momentum_rule(name):
    """YellowFin over rule NAME steps as NAME's own optimizer given the tuned (lr, momentum) at each step."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)).double()
    replay = copy.deepcopy(model)
    opt = inertia.YellowFin(model.parameters(), rule=name)
    ref = inertia.make_optimizer(name, replay.parameters())
    for _ in range(40):
        x, y = torch.randn(8, 5, dtype=torch.float64), torch.randint(0, 3, (8,))
        for net, o in ((model, opt), (replay, ref)):
            o.zero_grad()
            F.cross_entropy(net(x), y).backward()
        opt.step()
        for group in ref.param_groups:
            group["lr"], group["momentum"] = opt.param_groups[0]["lr"], opt.param_groups[0]["momentum"]
        ref.step()
    assert 0 < opt.param_groups[0]["momentum"] < 1
    for a, b in zip(model.parameters(), replay.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def _series(path, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(path), size_guidance={"scalars": 0})
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def _used_alone(steps: int, seeds: int, beta: float, dtype=torch.float32) -> dict[str, list[float]]:
    """The lr and momentum inertia.fit's YellowFin used at every step, mean over seeds."""
    seen: dict[str, list[list[float]]] = {"lr": [[] for _ in range(steps)], "momentum": [[] for _ in range(steps)]}

    def record(info):
        for name in seen:
            seen[name][info.step].append(info.optimizer.param_groups[0][name])

    inertia.fit("digits", "mlp", optimizer="yellowfin", hyper={"beta": beta}, steps=steps, seeds=seeds, dtype=dtype,
                on_step=record)
    return {name: [sum(v) / len(v) for v in values] for name, values in seen.items()}


def test_sweep_runs_in_tensorboard_hold_the_tuned_values_used(tmp_path):
    from inertia.tensorboard import write_sweep

    steps = 30
    results = inertia.sweep("digits", "mlp", optimizer="yellowfin", hyper={"beta": [0.99, 0.999]}, steps=steps,
                            seeds=2, dtype="float64", eval_every=10)
    assert write_sweep(results, tmp_path) == 2
    for run, beta in zip(sorted(tmp_path.iterdir()), (0.99, 0.999)):
        assert f"beta={beta}" in run.name
        alone = _used_alone(steps, 2, beta, torch.float64)
        for name in ("lr", "momentum"):
            logged = _series(run, name)
            assert [s for s, _ in logged] == list(range(1, steps + 1))
            assert [v for _, v in logged] == pytest.approx(alone[name], rel=1e-5)
        lr, mu = dict(_series(run, "lr")), dict(_series(run, "momentum"))
        assert dict(_series(run, "effective_lr"))[steps] == pytest.approx(lr[steps] / (1 - mu[steps]), rel=1e-5)


def test_train_logs_the_tuned_values_used(tmp_path):
    steps = 25
    assert main(["train", "--data", "digits", "--model", "mlp", "--optimizer", "yellowfin", "--hyper", "beta=0.99",
                 "--steps", str(steps), "--tensorboard", str(tmp_path), "--quiet"]) == 0
    (run,) = tmp_path.iterdir()
    alone = _used_alone(steps, 1, 0.99)
    for name in ("lr", "momentum"):
        logged = _series(run, name)
        assert [s for s, _ in logged] == list(range(1, steps + 1))
        assert [v for _, v in logged] == pytest.approx(alone[name], rel=1e-6)
    assert len({round(v, 6) for _, v in _series(run, "momentum")}) > 5   # tuned, not one value


def _one_line(argv, capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_lr_and_momentum_are_the_tuners_one_line_each(capsys, tmp_path):
    sweep = ["sweep", "--data", "digits", "--optimizer", "yellowfin", "--steps", "5", "--out", str(tmp_path), "--quiet"]
    assert "lr cannot be swept" in _one_line([*sweep, "--lr", "0.1,0.2"], capsys)
    assert "momentum cannot be swept" in _one_line([*sweep, "--momentum", "0.9"], capsys)
    assert "lr cannot be scheduled" in _one_line([*sweep, "--schedule", "lr=cosine"], capsys)
    assert "beta cannot be scheduled" in _one_line([*sweep, "--schedule", "beta=cosine"], capsys)
    train = ["train", "--data", "digits", "--optimizer", "yellowfin", "--steps", "5", "--quiet"]
    assert "lr cannot be given" in _one_line([*train, "--lr", "0.1"], capsys)
    assert "momentum cannot be given" in _one_line([*train, "--momentum", "0.5"], capsys)
    assert "lr cannot be scheduled" in _one_line([*train, "--schedule", "cosine"], capsys)
    assert "yellowfin is a tuner" in _one_line(["race", "--surface", "quadratic", "--optimizer", "yellowfin",
                                                "--steps", "5", "--out", str(tmp_path / "race")], capsys)
    with pytest.raises(ValueError, match="momentum cannot be given"):
        inertia.YellowFin([nn.Parameter(torch.zeros(2))], momentum=0.9)
    with pytest.raises(ValueError, match="beta must be in \\(0, 1\\)"):
        inertia.sweep("digits", optimizer="yellowfin", hyper={"beta": [0.9, 1.0]}, steps=5)


@pytest.mark.parametrize("rule", ["adam", "lion"])
def test_a_tuner_on_a_rule_without_momentum_is_one_line_naming_it(rule, capsys, tmp_path):
    message = f"yellowfin: rule '{rule}' has no momentum to tune"
    with pytest.raises(ValueError, match=message):
        inertia.YellowFin([nn.Parameter(torch.zeros(2))], rule=rule)
    with pytest.raises(ValueError, match=message):
        inertia.sweep("digits", optimizer=f"yellowfin:{rule}", steps=5)
    assert message in _one_line(["train", "--data", "digits", "--optimizer", f"yellowfin:{rule}", "--steps", "5"],
                                capsys)
    assert message in _one_line(["sweep", "--data", "digits", "--optimizer", f"yellowfin:{rule}", "--steps", "5",
                                 "--out", str(tmp_path)], capsys)


def test_a_sweep_of_seeds_alone_is_one_configuration_reproduced_by_train():
    results = inertia.sweep("digits", "mlp", optimizer="yellowfin", steps=20, seeds=2, select="final", dtype="float64")
    (record,) = results.records()
    assert results.swept == ["beta"] and record["beta"] == 0.999
    alone = inertia.fit("digits", "mlp", optimizer="yellowfin", steps=20, seeds=2, dtype=torch.float64).record()
    assert record["val_loss_mean"] == pytest.approx(alone["val_loss_mean"], rel=1e-9)
    assert math.isfinite(record["test_accuracy_mean"])
