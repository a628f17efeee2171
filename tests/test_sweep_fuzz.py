"""Bad invocations of ``inertia sweep`` (and ``race --start``): each is refused before training, in one
line naming the argument, with exit code 2, and a finished folder it points at is left as it was."""
from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import inertia
from inertia.cli import main as cli_main
from inertia.sweeps import SweepSpec, TaskSpec
from inertia.sweeps.specs import TrainSpec

GOOD = ["sweep", "--data", "digits", "--model", "mlp", "--lr", "0.05,0.2", "--momentum", "0,0.9", "--steps", "10",
        "--batch-size", "32", "--quiet"]

pytestmark = pytest.mark.usefixtures("one_thread")


def _with(*extra: str, drop: tuple[str, ...] = ()) -> list[str]:
    """GOOD with the options ``drop`` removed (with their values) and ``extra`` added."""
    args, i = [], 0
    while i < len(GOOD):
        if GOOD[i] in drop:
            i += 1 if GOOD[i] == "--quiet" else 2
            continue
        args.append(GOOD[i])
        i += 1
    return [*args, *extra]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("finished")
    assert cli_main([*GOOD, "--out", str(out)]) == 0
    return out


def _snapshot(folder: Path) -> dict[str, str]:
    """Every file's hash (SQLite's write-ahead log and its index come and go with connections)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.endswith(("-wal", "-shm"))}


def _rows(db: Path) -> list[str]:
    """The database's content as SQL (its file's bytes also change when SQLite moves the write-ahead log of
    an earlier connection into it, which writes no row)."""
    with contextlib.closing(sqlite3.connect(db)) as connection:
        return list(connection.iterdump())


def _csv(tmp_path: Path, rows: list[str]) -> str:
    path = tmp_path / f"data-{len(rows)}.csv"
    path.write_text("\n".join(rows) + "\n")
    return str(path)


CASES = {
    "checkpoint-every 0": (("--checkpoint-every", "0"), "checkpoint_every"),
    "checkpoint-every -1": (("--checkpoint-every", "-1"), "checkpoint_every"),
    "checkpoint-every nan": (("--checkpoint-every", "nan"), "checkpoint_every"),
    "checkpoint-every inf": (("--checkpoint-every", "inf"), "checkpoint_every"),
    "max-batch 0": (("--max-batch", "0"), "max_batch"),
    "max-batch -3": (("--max-batch", "-3"), "max_batch"),
    "parallel 0": (("--parallel", "0"), "parallel"),
    "memory-budget 0": (("--memory-budget", "0"), "memory_budget"),
    "batch-size above the data": (("--batch-size", "100000"), "batch_size"),
    "trials with the grid": (("--trials", "5"), "trials"),
    "hyper lr": (("--hyper", "lr=0.1"), "lr"),
    "hyper lr empty": (("--hyper", "lr="), "lr"),
    "top -1": (("--top", "-1"), "--top"),
    "study-name empty": (("--study-name", ""), "study_name"),
    "seed -1": (("--seed", "-1"), "seed"),
    "device tpu": (("--device", "tpu"), "device"),
    "lr nan": (("--lr", "nan,0.1"), "lr"),
    "round-size above the grid": (("--round-size", "5"), "round_size"),
    "round-size 0": (("--round-size", "0"), "round_size"),
    "eval-every 0": (("--eval-every", "0"), "eval_every"),
    "diverge-factor nan": (("--diverge-factor", "nan"), "diverge_factor"),
    "a grid of 16 million points": (("--lr", "1e-4:1:4000", "--momentum", "0:0.99:4000"), "grid"),
    "lr of 100 million values": (("--lr", "1e-3:1:100000000"), "lr"),
    "a billion tpe trials": (("--sampler", "tpe", "--trials", "1000000000"), "trials"),
    "fixed for a swept lr": (("--fixed", "lr=0.1"), "lr"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_a_bad_value_is_one_line_naming_it_and_the_folder_stays(finished, capsys, monkeypatch, name):
    from inertia.sweeps import engine

    extra, named = CASES[name]
    before = _snapshot(finished)
    monkeypatch.setattr(engine.Members, "train_step", lambda self: pytest.fail("training started"))
    drop = tuple(a for a in extra if a.startswith("--") and a in GOOD)
    assert cli_main(_with(*extra, "--out", str(finished), drop=drop)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and named in err, err
    assert _snapshot(finished) == before


PYTHON_CASES = {
    "steps 1.7": (dict(steps=1.7), "steps"),
    "steps '10'": (dict(steps="10"), "steps"),
    "folds 2.9": (dict(folds=2.9), "folds"),
    "seeds True": (dict(seeds=True), "seeds"),
    "batch_size 32.0": (dict(batch_size=32.0), "batch_size"),
    "trials 2.5": (dict(sampler="random", trials=2.5), "trials"),
    "eval_every 2.5": (dict(eval_every=2.5), "eval_every"),
    "max_batch True": (dict(max_batch=True), "max_batch"),
    "dtype 'float33'": (dict(dtype="float33"), "dtype"),
    "dtype int64": (dict(dtype=torch.int64), "dtype"),
    "out 123": (dict(out=123), "out"),
    "pruner object()": (dict(pruner=object()), "pruner"),
    "fixed lr beside the swept lr": (dict(fixed={"lr": 0.1}), "lr"),
}


@pytest.mark.parametrize("name", list(PYTHON_CASES))
def test_a_bad_python_value_is_one_line_naming_it(monkeypatch, name):
    from inertia.sweeps import engine

    settings, named = PYTHON_CASES[name]
    monkeypatch.setattr(engine.Members, "train_step", lambda self: pytest.fail("training started"))
    with pytest.raises(ValueError) as error:
        inertia.sweep("digits", "mlp", lr=[0.05, 0.2], momentum=[0, 0.9], **{"steps": 10, **settings})
    assert "\n" not in str(error.value) and named in str(error.value), str(error.value)


@pytest.mark.parametrize("values,named", [
    (["--lr", "1e-3:1:100000000"], "lr 1e-3:1:100000000: 100,000,000 points"),
    (["--lr=1e-4:1:4000", "--momentum", "0:0.99:4000"], "the grid 4000 x 4000: 16,000,000 points"),
    (["--hyper", "weight_decay=0:1:100000000"], "weight_decay 0:1:100000000"),
    (["--sampler", "tpe", "--trials", "1000000000"], "trials must be at most 1,000,000"),
])
def test_a_sweep_too_large_is_refused_before_torch_is_imported(tmp_path, values, named):
    """Importing torch takes seconds: the values are read and bounded before it, so the refusal is instant."""
    code = ("import sys\nfrom inertia.cli import main\n"
            f"rc = main({['sweep', '--data', 'digits', *values, '--out', str(tmp_path / 'out')]!r})\n"
            "print(rc, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["2", "False"], done.stdout + done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(f"inertia sweep: error: {named}"), line
    assert not (tmp_path / "out").exists()


def test_a_dtype_by_name_is_that_dtype():
    assert TrainSpec(dtype="float64").dtype is torch.float64 and TrainSpec(dtype="float32").dtype is torch.float32


def test_bad_places_and_data_are_one_line_each(tmp_path, capsys, finished):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    signed = _csv(tmp_path, [f"{i},{i % 3},{i % 2 * 2 - 1}" for i in range(41)])            # labels -1 and 1
    ids = _csv(tmp_path, [f"{i},{i % 3},{i % 2 * 10**12 + i % 3}" for i in range(42)])   # 0..2 and 10**12 + 0..2
    cases = [
        (["--out", ""], "out"),
        (["--out", str(a_file)], "out"),
        (["--out", str(tmp_path / "t"), "--tensorboard", str(a_file)], "--tensorboard"),
        (["--out", str(tmp_path / "d"), "--data", _csv(tmp_path, ["1,2,0", "2,3,1", "3,4,0"])], "data"),
        (["--out", str(tmp_path / "e"), "--data", _csv(tmp_path, [f"{i},{i % 3},7" for i in range(40)])], "one class"),
        (["--out", str(tmp_path / "f"), "--data", signed], f"dataset '{signed}': the targets hold negative class "
                                                          "labels (-1)"),
        (["--out", str(tmp_path / "g"), "--data", ids], f"dataset '{ids}': the targets hold class labels far beyond "
                                                       "their 6 classes (1000000000002, 1000000000001, 1000000000000;"),
    ]
    for extra, named in cases:
        drop = ("--data",) if "--data" in extra else ()
        assert cli_main(_with(*extra, drop=drop)) == 2, extra
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and named in err, (extra, err)
    if os.geteuid() != 0:   # root writes into read-only folders
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        assert cli_main(_with("--out", str(locked / "run"))) == 2
        assert "cannot write" in capsys.readouterr().err


def test_race_start_must_be_finite(tmp_path, capsys):
    rc = cli_main(["race", "--surface", "rosenbrock", "--optimizer", "sgd:lr=0.001", "--steps", "5",
                   "--start", "nan,1", "--out", str(tmp_path / "race")])
    assert rc == 2 and "--start" in capsys.readouterr().err


def test_the_same_grid_in_another_order_is_the_same_sweep_and_duplicates_train_once(finished, capsys):
    before = _rows(finished / "sweep.db")
    again = _with("--lr", "0.2,0.05,0.2", "--momentum", "0.9,0", "--out", str(finished), drop=("--lr", "--momentum"))
    assert cli_main(again) == 0
    assert "nothing left to do" in capsys.readouterr().out
    assert _rows(finished / "sweep.db") == before
    assert TaskSpec.from_values(lr=[0.1, 0.1, 0.01], momentum=[0.9]).space["lr"] == (0.1, 0.01)


def test_a_default_is_never_invalid_for_its_rule():
    """Schedule-Free rejects momentum 0, which the default momentum grid holds: it gets the others."""
    task = TaskSpec.from_values(optimizer="schedulefree", lr=[0.5, 2.0])
    assert 0.0 not in task.space["momentum"] and len(task.space["momentum"]) == 7
    assert SweepSpec(task).configurations == 14


def test_ctrl_c_swallowed_by_an_import_still_interrupts(monkeypatch, capsys):
    """A library whose import swallows the KeyboardInterrupt (a bare except:) does not lose the Ctrl-C."""
    import signal

    from inertia import cli

    real = cli.build_parser

    def swallowing_import():
        try:
            os.kill(os.getpid(), signal.SIGINT)
        except KeyboardInterrupt:
            pass
        return real()

    monkeypatch.setattr(cli, "build_parser", swallowing_import)
    # Python's own Ctrl-C handler, as in a terminal (a shell's background job starts with SIGINT ignored)
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        assert cli_main(["sweep", "--data", "digits", "--lr", "0.1", "--momentum", "0", "--steps", "5"]) == 130
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler   # put back
    finally:
        signal.signal(signal.SIGINT, before)
    assert capsys.readouterr().err.strip() == "inertia sweep: interrupted; run the same command again to resume"
