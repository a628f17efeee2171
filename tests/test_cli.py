"""The command line's one vocabulary (``inertia.commands.options``) as a newcomer meets it: --version,
help with defaults, one-line errors, negative values, devices, output paths, SIGTERM."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
import torch

import inertia
from inertia.cli import build_parser, main
from inertia.commands.options import mean_std
from inertia.data import DATASETS
from inertia.models import MODELS
from inertia.rules import PRESETS
from inertia.sweeps.objective import LOSSES

SWEEP = ["sweep", "--data", "digits", "--lr", "0.1", "--momentum", "0", "--steps", "5", "--seeds", "1", "--quiet"]


def _help(command: str, capsys) -> str:
    assert main([command, "--help"]) == 0
    return " ".join(capsys.readouterr().out.split())


def _error(argv: list[str], capsys) -> str:
    """The one line ``inertia ARGV`` prints on stderr (exit status 2)."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "usage:" not in err and "Traceback" not in err, err
    return err


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"inertia {inertia.__version__}"


def test_every_option_of_the_sweep_shows_its_default(capsys):
    text = _help("sweep", capsys)
    for shown in ["--steps STEPS optimizer steps", "(default: 2000", "--batch-size BATCH_SIZE examples per minibatch "
                  "(default: 100)", "(default: 1)", "(default: 3,", "(default: 60.0)", "(default: 10)",
                  "(default: mnist1d)", "(default: mlp)", "(default: momentum)", "(default: 1e-3:1:8)"]:
        assert shown in text, shown
    assert "inertia train's 3000" in text and "inertia train's is 1" in text   # why they differ


@pytest.mark.parametrize("command", ["train", "sweep", "race", "surfaces"])
def test_every_option_that_has_a_default_says_it(command):
    import argparse
    import importlib

    from inertia.commands.options import HelpFormatter

    module = importlib.import_module(f"inertia.commands.{command}")
    parser = module.add_parser(argparse.ArgumentParser().add_subparsers())
    help_of = HelpFormatter("inertia")._get_help_string
    for action in parser._actions:
        if action.option_strings and action.nargs != 0 and action.default not in (None, []):
            assert "default" in help_of(action), (command, action.option_strings)


def test_train_says_why_its_defaults_differ_from_the_sweeps(capsys):
    text = _help("train", capsys)
    assert "(default: 3000; more than inertia sweep's 2000" in text
    assert "(default: 1; one plain run; inertia sweep trains 3" in text


@pytest.mark.parametrize("command", ["train", "sweep"])
def test_choices_come_from_the_registries(command, capsys):
    text = _help(command, capsys)
    for name in [*PRESETS, *LOSSES, *DATASETS, *MODELS]:
        assert name in text, name


def test_the_sweep_takes_every_backend_its_spec_takes():
    from inertia.commands.sweep import sweep_spec
    from inertia.sweeps.specs import BACKENDS

    parser = build_parser()
    for backend in BACKENDS:
        args = parser.parse_args([*SWEEP, "--out", "o", "--backend", backend])
        assert sweep_spec(args).train.backend == backend
    assert "conv" in BACKENDS


@pytest.mark.parametrize("argv, words", [
    (["sweep", "--out"], ["argument --out: expected one argument", "see inertia sweep --help"]),
    (["sweep", "--out", "o", "--backend", "warp"], ["argument --backend: invalid choice: 'warp'"]),
    (["train", "--loss", "nosuch"], ["argument --loss: invalid choice: 'nosuch'"]),
    (["train", "--steps", "x"], ["argument --steps: must be a positive integer, got 'x'"]),
    (["nosuch"], ["argument COMMAND: invalid choice: 'nosuch'"]),
    (["surfaces", "--bogus"], ["inertia surfaces: error: unrecognized arguments: --bogus", "inertia surfaces --help"]),
    (["train", "--schedule", "warp"], ["--schedule expects NAME=SPEC such as lr=cosine, or one of constant, cosine"]),
    (["train", "--schedule", "lr"], ["--schedule expects NAME=SPEC"]),
    (["sweep", "--out", "o", "--hyper", "weight_decay"], ["--hyper expects NAME=VALUES"]),
    (["sweep", "--out", "o", "--fixed", "nesterov=true", "--fixed", "nesterov=false"],
     ["--fixed nesterov is given twice"]),
    (["race", "--schedule", "lr=warp"], ["--schedule lr=warp: unknown schedule 'warp'", "cosine"]),
])
def test_usage_errors_are_one_line_without_the_usage_block(argv, words, capsys):
    err = _error(argv, capsys)
    for word in words:
        assert word in err


@pytest.mark.parametrize("option, values, name", [
    ("--lr", "-0.1,0.1", "lr"), ("--momentum", "-0.5,0.5", "momentum"), ("--lr", "-1e-3:1:4", "lr")])
def test_negative_numbers_in_a_list_reach_the_value_check(option, values, name, tmp_path, capsys):
    err = _error([*SWEEP, "--out", str(tmp_path / "o"), option, values], capsys)
    assert "expected one argument" not in err and name in err and "-" in err
    assert not (tmp_path / "o").exists()


def test_a_negative_learning_rate_in_train_is_the_rules_error(capsys):
    err = _error(["train", "--lr", "-0.1", "--steps", "1"], capsys)
    assert "lr must be a finite number >= 0, got -0.1" in err


def _no_training(monkeypatch):
    from inertia import fits

    def fail(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(fits, "fit", fail)


@pytest.mark.parametrize("option, value, words", [
    ("--json", "a-file/x.json", ["--json", "a-file is a file, not a folder"]),
    ("--json", ".", ["--json", "is a folder"]),
    ("--tensorboard", "a-file", ["--tensorboard", "is a file; give a folder"]),
    ("--tensorboard", "a-file/runs", ["--tensorboard", "a-file is a file, not a folder"]),
])
def test_output_paths_are_checked_before_training(option, value, words, tmp_path, monkeypatch, capsys):
    _no_training(monkeypatch)
    (tmp_path / "a-file").write_text("x")
    monkeypatch.chdir(tmp_path)
    err = _error(["train", "--data", "digits", "--steps", "5", "--quiet", option, value], capsys)
    for word in words:
        assert word in err


def _missing_devices() -> list[str]:
    """Devices of every kind that this machine does not have."""
    missing = [f"cuda:{torch.cuda.device_count()}"]
    missing += [kind for kind in ("cuda", "mps", "xpu") if not getattr(torch, kind).is_available()]
    return missing


@pytest.mark.parametrize("device", _missing_devices())
@pytest.mark.parametrize("command", ["train", "sweep"])
def test_an_unavailable_device_of_any_kind_is_one_line(command, device, tmp_path, monkeypatch, capsys):
    _no_training(monkeypatch)
    argv = (["train", "--data", "digits", "--steps", "5"] if command == "train"
            else [*SWEEP, "--out", str(tmp_path / "o")])
    err = _error([*argv, "--device", device], capsys)
    assert f"--device {device}: this machine has" in err and "device" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("device", ["tpu", "meta"])
def test_a_device_that_is_not_one_to_train_on_is_one_line(device, capsys):
    assert f"--device {device}: not a device" in _error(["train", "--device", device], capsys)


def test_a_different_sweep_in_the_folder_names_each_differing_setting(tmp_path, capsys):
    out = str(tmp_path / "o")
    assert main([*SWEEP, "--out", out]) == 0
    capsys.readouterr()
    err = _error([*SWEEP, "--steps", "6", "--lr", "0.1,0.2", "--out", out], capsys)
    assert "holds a different sweep (space.lr: [0.1] stored, [0.1, 0.2] asked; steps: 5 stored, 6 asked)" in err
    assert "use another --out folder or --study-name" in err


def test_mean_std_is_one_format_for_every_command():
    assert mean_std(0.5, 0.25) == "0.5000 ± 0.2500"
    assert mean_std(0.987, 0.0123, "{:.1f}", 100) == "98.7 ± 1.2"
    assert mean_std(0.5) == "0.5000" and mean_std(0.5, float("nan")) == "0.5000"
    assert mean_std(None) == "-" and mean_std(float("inf"), 0.1) == "-"


def _states(db) -> list[str]:
    """The trials' states; none while the study's tables are still being made."""
    try:
        with sqlite3.connect(db) as connection:
            return [state for (state,) in connection.execute("SELECT state FROM trials")]
    except sqlite3.OperationalError:
        return []


def test_sigterm_stops_a_sweep_as_ctrl_c_does(tmp_path):
    """``kill PID``: the sweep gives its trials back (none stays RUNNING), prints one line with the resume
    hint and exits 128 + 15; the same command run again completes the grid."""
    args = [sys.executable, "-m", "inertia.cli", "sweep", "--data", "digits", "--lr", "0.01,0.05,0.2",
            "--momentum", "0,0.9", "--steps", "400", "--batch-size", "32", "--seeds", "1", "--round-size", "2",
            "--parallel", "2", "--checkpoint-every", "1000", "--out", str(tmp_path), "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (tmp_path / "sweep.db").exists() and "RUNNING" in _states(tmp_path / "sweep.db"):
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    time.sleep(0.5)   # past the claim: its trials are held (a signal inside the claim leaves them to fail_stale)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, out + err
    assert err.strip().splitlines() == ["inertia sweep: stopped by SIGTERM; run the same command again to resume"]
    states = _states(tmp_path / "sweep.db")
    assert "RUNNING" not in states and "WAITING" in states
    again = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    assert _states(tmp_path / "sweep.db") == ["COMPLETE"] * 6


def test_a_checkpoint_of_another_sweep_names_what_differs(tmp_path):
    from types import SimpleNamespace

    from inertia.sweeps.checkpoints import CheckpointError, Checkpoints

    path = str(tmp_path / "batch-000000.pt")
    Checkpoints(str(tmp_path), {"steps": 5, "lr": [0.1]}).save(SimpleNamespace(state_dict=dict), path)
    with pytest.raises(CheckpointError, match=r"another sweep \(steps: 5 stored, 6 asked\)"):
        Checkpoints(str(tmp_path), {"steps": 6, "lr": [0.1]}).load(path)
