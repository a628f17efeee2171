"""The range test: stacked members against separate torch.optim runs, the rules on known curves,
RangeTest restoring what it was used around, the CLI's outputs, and bad input."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import inertia
from inertia.cli import main
from inertia.finder import Ramp, RangeTest, find, smooth, suggestions


def test_each_stacked_member_is_a_separate_torch_sgd_run_on_the_ramp():
    """momenta x seeds in one stack == torch.optim.SGD + ExponentialLR per (momentum, seed), same batches."""
    from inertia.models import model_factory
    from inertia.pipeline import batch_at, make_folds

    ramp = Ramp(start=1e-3, end=0.05, steps=25)
    result = find("digits", "mlp", momentum=(0.0, 0.9), start=ramp.start, end=ramp.end, steps=ramp.steps, seeds=2,
                  seed=4, dtype=torch.float64, measure_sharpness=False, device="cpu")
    data = inertia.data.as_dataset("digits", seed=4)
    x, y = data.x_train.double(), data.y_train
    for s in range(2):
        train, _ = make_folds(len(y), 1, 4 + s)[0]
        for i, mu in enumerate((0.0, 0.9)):
            torch.manual_seed(4 + s)
            model = model_factory("mlp", data)().double()
            opt = torch.optim.SGD(model.parameters(), lr=ramp.start, momentum=mu)
            scheduler = torch.optim.lr_scheduler.ExponentialLR(opt, ramp.gamma)
            expected = []
            for t in range(ramp.steps):
                b = batch_at(train, t, 100, 4 + s, 0)
                loss = F.cross_entropy(model(x[b]), y[b])
                expected.append(float(loss.detach()))
                opt.zero_grad()
                loss.backward()
                opt.step()
                scheduler.step()
            np.testing.assert_allclose(result.losses[i, s], expected, rtol=1e-9)


def test_smooth_is_the_bias_corrected_ema():
    losses = np.array([3.0, 1.0, 4.0, 1.0, 5.0, math.nan, 2.0])
    beta, s, expected = 0.9, 0.0, []
    for t, value in enumerate(losses[:5], start=1):
        s = beta * s + (1 - beta) * value
        expected.append(s / (1 - beta ** t))
    np.testing.assert_allclose(smooth(losses, beta)[:5], expected)
    assert np.isnan(smooth(losses, beta)[5:]).all()


def test_the_rules_on_a_known_curve():
    """Loss = 1 − tanh(log10 lr + 2) + (lr/0.5)²: steepest descent per decade at lr = 1e-2, minimum near 0.2."""
    lrs = np.logspace(-5, 0, 501)
    curve = 1 - np.tanh(np.log10(lrs) + 2) + (lrs / 0.5) ** 2
    found = suggestions(lrs, curve)
    assert found["steepest"] == pytest.approx(1e-2, rel=0.03)
    assert found["min/10"] == pytest.approx(lrs[np.argmin(curve)] / 10)
    decreasing = lrs[: np.argmin(curve) + 1]       # the whole decreasing part: its middle in log lr
    assert found["valley"] == pytest.approx(math.sqrt(decreasing[0] * decreasing[-1]), rel=0.03)


def test_an_early_spike_does_not_fool_the_steepest_rule():
    lrs = np.logspace(-5, 0, 300)
    curve = 1 - np.tanh(np.log10(lrs) + 2)
    clean = suggestions(lrs, smooth(curve, 0.9))["steepest"]
    assert clean == pytest.approx(1e-2, rel=0.5)          # the EMA's lag moves it up a little
    curve[3] += 5.0
    assert suggestions(lrs, smooth(curve, 0.9))["steepest"] == clean


def _model_and_data():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
    return model, torch.randn(64, 5), torch.randint(0, 3, (64,))


@pytest.mark.parametrize("make", [lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
                                  lambda p: inertia.SGD(p, lr=0.05, momentum=0.9, convention="sutskever"),
                                  lambda p: torch.optim.Adam(p, lr=1e-3)], ids=["torch-sgd", "inertia-sgd", "adam"])
def test_range_test_restores_the_model_and_the_optimizer(make):
    model, x, y = _model_and_data()
    opt = make(model.parameters())
    for _ in range(3):                       # a momentum buffer to keep
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    params = {k: v.clone() for k, v in model.state_dict().items()}
    state = {k: {n: v.clone() if isinstance(v, torch.Tensor) else v for n, v in s.items()}
             for k, s in opt.state_dict()["state"].items()}
    groups = opt.state_dict()["param_groups"]
    with RangeTest(model, opt, start=1e-4, end=10.0, steps=40) as test:
        for _ in range(100):
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            if test.record(loss):
                break
    assert all(torch.equal(params[k], v) for k, v in model.state_dict().items())
    after = opt.state_dict()
    assert [{k: g[k] for k in before} for g, before in zip(after["param_groups"], groups)] == groups
    for k, s in state.items():
        assert all(torch.equal(v, after["state"][k][n]) if isinstance(v, torch.Tensor) else v == after["state"][k][n]
                   for n, v in s.items())
    assert 1 < len(test.losses) <= 40


@pytest.mark.parametrize("momentum, smoothing", [(0.0, 0.0), (0.5, 0.5), (0.9, 0.9), (0.99, 0.98)])
def test_range_test_diverges_just_past_the_heavy_ball_edge_on_a_quadratic(momentum, smoothing):
    """On f = ½λ‖w‖², heavy ball is stable for lr < (2 + 2μ)/λ: the ramp must stop just after that lr
    (with a smoothing short enough for the speed at which gradient descent converges on a quadratic)."""
    lam = 4.0
    w = nn.Parameter(torch.ones(3, dtype=torch.float64))
    model = nn.Module()
    model.w = w
    opt = torch.optim.SGD([w], lr=0.1, momentum=momentum)
    with RangeTest(model, opt, start=1e-3, end=100.0, steps=600, smoothing=smoothing) as test:
        while True:
            opt.zero_grad()
            loss = 0.5 * lam * (w * w).sum()
            loss.backward()
            opt.step()
            if test.record(loss):
                break
    edge = (2 + 2 * momentum) / lam
    assert edge <= test.result().diverged_at(0) <= 1.5 * edge
    assert torch.equal(w.detach(), torch.ones(3, dtype=torch.float64))


def test_bad_ramps_are_one_line_errors_naming_the_argument():
    with pytest.raises(ValueError, match=r"start \(1\) must be below end \(0.1\)"):
        Ramp(start=1.0, end=0.1)
    for steps in (0, -3):
        with pytest.raises(ValueError, match="steps must be a positive integer"):
            Ramp(steps=steps)
    with pytest.raises(ValueError, match="has no momentum"):
        find("digits", "mlp", optimizer="adam")
    with pytest.raises(TypeError, match="unknown find setting"):
        find("digits", "mlp", folds=3)


def test_cli_writes_plot_json_suggestion_and_edge(tmp_path, capsys):
    plot, out = tmp_path / "finder.png", tmp_path / "finder.json"
    code = main(["find", "--data", "digits", "--model", "mlp", "--momentum", "0,0.9", "--steps", "40", "--seeds", "2",
                 "--start", "1e-4", "--end", "3", "--plot", str(plot), "--json", str(out), "--device", "cpu"])
    assert code == 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    written = json.loads(out.read_text())
    assert set(written["momenta"]) == {"0", "0.9"}
    for entry in written["momenta"].values():
        assert entry["lr_low"] <= entry["lr_high"]
        assert set(entry["rules"]) == {"steepest", "valley", "min/10"}
    assert written["sharpness"] > 0 and len(written["sharpness_along"]) == 4
    for key, mu in (("0", 0.0), ("0.9", 0.9)):
        assert written["stable_lr"][key] == pytest.approx((2 + 2 * mu) / written["sharpness"])
    printed = capsys.readouterr().out
    assert "inertia sweep --data digits --model mlp" in printed and "stable lr" in printed


@pytest.mark.parametrize("args, needle", [(["--start", "1", "--end", "0.1"], "start (1) must be below end (0.1)"),
                                          (["--steps", "0"], "--steps: must be a positive integer"),
                                          (["--optimizer", "adam"], "has no momentum"),
                                          (["--optimizer", "yellowfin"], "tunes lr itself at every step"),
                                          (["--threads", "0"], "--threads: must be a positive integer")])
def test_cli_bad_input_is_one_line(args, needle, capsys, tmp_path):
    assert main(["find", "--data", "digits", "--plot", str(tmp_path / "p.png"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and "\n" not in err


def test_find_chooses_its_threads_as_the_sweep_does(monkeypatch):
    """One thread for a small stack (inertia.threads.choose_threads from the step's work), --threads honoured,
    the previous count restored: a range test on a busy machine does not spin torch's default threads."""
    from inertia.sweeps.engine import Members

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    seen, real = [], Members.train_step
    monkeypatch.setattr(Members, "train_step", lambda self: seen.append(torch.get_num_threads()) or real(self))
    before = torch.get_num_threads()
    for threads, expected in ((None, 1), (2, 2)):
        seen.clear()
        find("digits", "linear", momentum=(0.0, 0.9), steps=4, seeds=1, measure_sharpness=False, device="cpu",
             threads=threads)
        assert set(seen) == {expected}
        assert torch.get_num_threads() == before
