"""Sweeps of models that torch's own vmap cannot batch equal separately trained torch models.

GRU / LSTM / RNN models run batched (their cells as matrix products, :mod:`inertia.sweeps.recurrent`);
a model with no batching rule (``.item()``, control flow on the data) is found by a trial step before the
study opens and trains member after member; either way each member equals a torch model trained alone
with ``torch.optim.SGD`` on the same initialization and batches.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from inertia import rules
from inertia.pipeline import batch_at, make_folds
from inertia.sweeps.engine import Job, Members, run_members

SEED, BATCH, STEPS = 3, 10, 8
CONFIGS = [dict(lr=0.1, momentum=0.9), dict(lr=0.3, momentum=0.0)]


class Recurrent(nn.Module):
    def __init__(self, kind=nn.GRU, layers=1, batch_first=True):
        super().__init__()
        self.batch_first = batch_first
        self.rnn = kind(2, 6, num_layers=layers, batch_first=batch_first)
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        out, _ = self.rnn(x if self.batch_first else x.transpose(0, 1))
        return self.head(out[:, -1] if self.batch_first else out[-1])


class Itemized(nn.Module):
    """A forward that reads a Python number from its data: vmap cannot batch it."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(10, 8), nn.Linear(8, 3)

    def forward(self, x):
        h = torch.tanh(self.a(x.flatten(1)))
        return self.b(h * 2 if h.sum().item() > 0 else h)


def _data(n=60, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5, 2, generator=g)
    return x, (x.sum((1, 2)) > 0).long() + (x[:, -1, 0] > 0.5).long()


def _job(factory, **kw):
    x, y = _data()
    x_test, y_test = _data(20, seed=1)
    return Job(factory, x, y, make_folds(len(y), 2, SEED), rules.get("momentum"), {}, STEPS, BATCH, seed=SEED,
               x_test=x_test, y_test=y_test, dtype=torch.float64, **kw)


def _check_against_separate_runs(job, factory):
    members = run_members(Members(job, CONFIGS, [0, 1]))
    for c, cfg in enumerate(CONFIGS):
        for k, split in enumerate(job.splits):
            torch.manual_seed(SEED)
            model = factory().to(torch.float64)
            opt = torch.optim.SGD(model.parameters(), lr=cfg["lr"], momentum=cfg["momentum"])
            for t in range(STEPS):
                idx = batch_at(split.train, t, BATCH, SEED, split.fold)
                opt.zero_grad()
                F.cross_entropy(model(job.x[idx]), job.y[idx]).backward()
                opt.step()
            row = k * len(CONFIGS) + c
            for (name, p), stacked in zip(model.named_parameters(), members.params):
                torch.testing.assert_close(stacked[row], p.detach(), rtol=1e-9, atol=1e-11, msg=name)


CASES = [(nn.GRU, 1, True), (nn.GRU, 2, False), (nn.LSTM, 1, True), (nn.LSTM, 2, True), (nn.RNN, 1, False)]


@pytest.mark.parametrize("kind,layers,batch_first", CASES)
def test_a_recurrent_sweep_runs_batched_and_equals_torch_modules_trained_alone(kind, layers, batch_first):
    factory = lambda: Recurrent(kind, layers, batch_first)  # noqa: E731
    job = _job(factory)
    assert job.backend == "vmap" and job.fallback is None
    _check_against_separate_runs(job, factory)


def test_a_model_vmap_cannot_batch_trains_member_after_member_with_the_numbers_of_separate_runs():
    job = _job(Itemized)
    assert job.backend == "loop"
    assert "Itemized" in job.fallback and ".item()" in job.fallback and "\n" not in job.fallback
    _check_against_separate_runs(job, Itemized)


def test_the_fallback_is_said_in_one_line_before_the_study_opens_and_leaves_no_waiting_trials(tmp_path):
    import optuna

    import inertia

    x, y = _data(80)
    said: list[str] = []
    results = inertia.sweep((x, y, x[:20], y[:20]), Itemized, lr=[0.1, 0.2], momentum=[0.0], steps=4,
                            batch_size=10, out=str(tmp_path), log=said.append)
    assert results.meta["backend"] == "loop"
    assert [m for m in said if "vmap cannot batch" in m] == [said[0]] and said[0].startswith("warning: model Itemized")
    study = optuna.load_study(study_name=results.meta["study_name"], storage=f"sqlite:///{tmp_path}/sweep.db")
    assert {t.state for t in study.trials} == {optuna.trial.TrialState.COMPLETE}


def test_a_model_that_fails_before_training_leaves_no_study_behind(tmp_path):
    import inertia

    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(10, 3)

        def forward(self, x):
            raise RuntimeError("boom\nsecond line")

    x, y = _data(80)
    with pytest.raises(ValueError, match="boom") as info:
        inertia.sweep((x, y, x[:20], y[:20]), Broken, lr=[0.1, 0.2], momentum=[0.0], steps=4, batch_size=10,
                      out=str(tmp_path))
    assert "second line" not in str(info.value)
    assert not (tmp_path / "sweep.db").exists()


def test_a_model_that_cannot_take_a_training_step_fails_before_the_study_opens(tmp_path):
    import inertia

    class Detached(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(10, 3)

        def forward(self, x):
            return self.a(x.flatten(1)).detach()   # no gradient reaches the parameters

    x, y = _data(80)
    with pytest.raises(ValueError, match=r"model Detached: a training step fails on a batch of inputs of shape "
                                         r"\(10, 5, 2\), dtype float32: RuntimeError") as info:
        inertia.sweep((x, y, x[:20], y[:20]), Detached, lr=[0.1, 0.2], momentum=[0.0], steps=4, batch_size=10,
                      out=str(tmp_path))
    assert "\n" not in str(info.value)
    assert not (tmp_path / "sweep.db").exists()
