"""Sweeps through Optuna: API and outputs, samplers, pruning, bad input, resume after SIGKILL, two workers."""
from __future__ import annotations

import json
import re
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import scratch_database

import inertia
from inertia.cli import main as cli_main
from inertia.commands.reproduce import train_command
from inertia.outputs import results_table
from inertia.sweeps import parse_values
from inertia.plots.sweep import heatmap
from inertia.sweeps import StorageError

SMALL = dict(data="digits", model="mlp", steps=40, batch_size=32, seeds=1, metric="val_loss")  # one seed, by loss
RECORD_KEYS = {"lr", "momentum", "status", "diverged_step", "val_loss_mean", "val_loss_std", "val_accuracy_mean",
               "val_accuracy_std", "train_loss_final", "train_loss_curve"}



def _study(out: Path):
    import optuna

    return optuna.load_study(study_name="sweep", storage=f"sqlite:///{out / 'sweep.db'}")


def test_parse_values():
    assert parse_values("1e-3:1:4") == pytest.approx([1e-3, 1e-2, 1e-1, 1.0])
    assert parse_values("0,0.5, 0.9") == [0.0, 0.5, 0.9]
    assert parse_values("0:0.9:4") == pytest.approx([0.0, 0.3, 0.6, 0.9])
    with pytest.raises(ValueError, match="lr"):
        parse_values("1:2", "lr")


def test_sweep_api_outputs_and_rerun_never_recomputes(tmp_path):
    out = tmp_path / "run"
    res = inertia.sweep(**SMALL, lr=[0.01, 0.1, 50.0], momentum=[0.0, 0.9], folds=2, out=out)
    recs = res.records()
    assert len(recs) == 6 and all(RECORD_KEYS <= set(r) for r in recs)
    assert {(r["lr"], r["momentum"]) for r in recs} == {(a, b) for a in (0.01, 0.1, 50.0) for b in (0.0, 0.9)}
    diverged = [r for r in recs if r["status"] == "diverged"]
    assert diverged and all(r["diverged_step"] >= 1 for r in diverged)
    best = res.best
    assert best["status"] == "ok" and best["val_loss_mean"] == min(
        r["val_loss_mean"] for r in recs if r["status"] == "ok")
    assert 0 <= best["test_accuracy_mean"] <= 1 and best["val_loss_std"] >= 0
    from rich.console import Console

    console = Console(record=True, width=160)
    console.print(results_table(res))
    assert "val loss" in console.export_text()
    png = tmp_path / "heat.png"
    heatmap(res, png)
    assert png.stat().st_size > 10_000
    res.to_csv(tmp_path / "r.csv")
    data = json.loads(res.to_json(tmp_path / "r.json").read_text())
    assert len(data["records"]) == 6 and data["best"]["lr"] == best["lr"]
    cmd = train_command(res)
    assert cmd.startswith("inertia train --data digits --model mlp --optimizer momentum --lr ")
    # the same call again: everything is already in the study, nothing is trained again
    finished = {t.number: t.datetime_complete for t in _study(out).trials}
    again = inertia.sweep(**SMALL, lr=[0.01, 0.1, 50.0], momentum=[0.0, 0.9], folds=2, out=out)
    assert sorted(map(str, again.records())) == sorted(map(str, recs))
    assert {t.number: t.datetime_complete for t in _study(out).trials} == finished


def test_random_and_tpe_samplers_stay_in_range(tmp_path):
    for sampler in ("random", "tpe"):
        res = inertia.sweep(**SMALL, lr="1e-3:1e-1:3", momentum=[0.0, 0.95], sampler=sampler, trials=5)
        recs = res.records()
        assert len(recs) == 5
        assert all(1e-3 <= r["lr"] <= 1e-1 and 0 <= r["momentum"] <= 0.95 for r in recs)
        heatmap(res, tmp_path / f"{sampler}.png")  # scattered points, not a grid
        assert (tmp_path / f"{sampler}.png").stat().st_size > 10_000


def test_pruned_configurations_are_recorded_and_leave_the_others_alone():
    import optuna

    kwargs = dict(SMALL, steps=60, lr=[1e-6, 0.3], momentum=[0.9], eval_every=10, folds=2)
    plain = {r["lr"]: r for r in inertia.sweep(**kwargs).records()}
    res = inertia.sweep(**kwargs, pruner=optuna.pruners.ThresholdPruner(upper=2.2))
    recs = {r["lr"]: r for r in res.records()}
    assert recs[1e-6]["status"] == "pruned" and recs[1e-6]["pruned_step"] == 10
    assert recs[0.3]["status"] == "ok"
    assert recs[0.3]["val_loss_mean"] == plain[0.3]["val_loss_mean"]


@pytest.mark.parametrize("bad,match", [
    (dict(lr=[]), "empty"),
    (dict(lr=[-0.1, 0.1]), "lr"),
    (dict(momentum=[0.5, 1.0]), "momentum"),
    (dict(data="no-such-dataset"), "no-such-dataset"),
    (dict(model="no-such-model"), "no-such-model"),
    (dict(storage="postgresql://inertia:inertia@127.0.0.1:1/nowhere"), "storage"),
    (dict(storage="sqlite:////no/such/folder/x.db"), "storage"),
    (dict(steps=50), "different sweep"),
])
def test_bad_input_fails_before_training_and_keeps_what_is_stored(tmp_path, bad, match, monkeypatch):
    out = tmp_path / "run"
    inertia.sweep(**SMALL, lr=[0.05], momentum=[0.0, 0.9], out=out)
    before = [(t.number, t.state, t.value) for t in _study(out).trials]
    from inertia.sweeps import engine

    def no_training(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(engine.Members, "train_step", no_training)
    kwargs = {**SMALL, "lr": [0.05], "momentum": [0.0, 0.9], "out": out, **bad}
    with pytest.raises(ValueError, match=match):
        inertia.sweep(**kwargs)
    assert [(t.number, t.state, t.value) for t in _study(out).trials] == before


def test_unreachable_storage_is_a_storage_error():
    with pytest.raises(StorageError, match="cannot"):
        inertia.sweep(**SMALL, lr=[0.1], momentum=[0.0], storage="postgresql://x:y@127.0.0.1:1/none")


def test_cli_sweep_writes_outputs_and_prints_the_train_command(tmp_path, capsys):
    out = tmp_path / "cli"
    rc = cli_main(["sweep", "--data", "digits", "--model", "mlp", "--lr", "1e-2:1e-1:2", "--momentum", "0,0.9",
                   "--steps", "30", "--batch-size", "32", "--out", str(out), "--quiet"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "inertia train --data digits" in text
    for name in ("results.csv", "results.json", "heatmap.png", "sweep.db"):
        assert (out / name).exists(), name
    rc = cli_main(["sweep", "--data", "digits", "--lr=-1,0.1", "--out", str(tmp_path / "bad"), "--quiet"])
    assert rc == 2 and "lr" in capsys.readouterr().err


# ---------------------------------------------------------------- processes

def _command(out: Path, *extra: str, steps: int = 300, lrs: str = "0.01,0.05,0.2") -> list[str]:
    return [sys.executable, "-m", "inertia.cli", "sweep", "--data", "digits", "--model", "mlp",
            "--lr", lrs, "--momentum", "0,0.9", "--steps", str(steps), "--batch-size", "32",
            "--out", str(out), "--max-batch", "2", "--quiet", *extra]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _sqlite_states(out: Path) -> list[tuple[int, str]]:
    try:
        with sqlite3.connect(out / "sweep.db", timeout=5) as db:
            return db.execute("SELECT number, state FROM trials ORDER BY number").fetchall()
    except sqlite3.Error:
        return []


def _checkpoints(out: Path) -> list[Path]:
    """The checkpoint files in ``out`` (each study has a folder of its own there)."""
    return [p for p in (out / "checkpoints").glob("*/batch-*") if not p.name.endswith(".tmp")]


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            out.append(int(stat.parent.name))
    return out


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.parametrize("threads", ["1", "2"])
def test_resume_after_sigkill_never_recomputes_a_finished_configuration(tmp_path, threads):
    """Two batches of two configurations: the first finishes, the second is killed mid-way and resumed.
    With 2 threads the two configurations of a batch train in two forked processes, which
    must die with the killed sweep (else they would write the checkpoint the restart resumes)."""
    out = tmp_path / "killed"
    cmd = _command(out, "--checkpoint-every", "0.2", steps=6000, lrs="0.01,0.2")  # a batch lasts seconds
    env = {**_env(), "OMP_NUM_THREADS": threads}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 150
    killed_at = None
    while time.time() < deadline and proc.poll() is None:
        states = _sqlite_states(out)
        complete = sum(1 for _, s in states if s == "COMPLETE")
        ckpts = _checkpoints(out)
        if complete >= 2 and ckpts and time.time() - max(p.stat().st_mtime for p in ckpts) < 0.3:
            time.sleep(0.5)  # let it write a checkpoint past step 0
            lanes = _children(proc.pid)
            proc.send_signal(signal.SIGKILL)
            killed_at = states
            break
        time.sleep(0.05)
    proc.wait()
    assert killed_at is not None, "the sweep finished (or hung) before it could be killed"
    assert len(lanes) == (2 if threads == "2" else 0)
    deadline = time.time() + 1.5   # the kernel kills them at once; a batch would last longer
    while any(_running(pid) for pid in lanes) and time.time() < deadline:
        time.sleep(0.05)
    assert not any(_running(pid) for pid in lanes), "a training process outlived the killed sweep"
    before = {n: s for n, s in _sqlite_states(out)}
    done_before = {n for n, s in before.items() if s == "COMPLETE"}
    assert "RUNNING" in before.values()
    import optuna

    stamps = {t.number: t.datetime_complete for t in _study(out).trials if t.number in done_before}
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "resuming" in again.stdout and "from step 0 " not in again.stdout
    trials = _study(out).trials
    assert len(trials) == 4 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert len({(t.params["lr"], t.params["1-momentum"]) for t in trials}) == 4
    assert {t.number: t.datetime_complete for t in trials if t.number in done_before} == stamps
    assert not _checkpoints(out)


@pytest.mark.parametrize("when", ["after claiming, before the first checkpoint", "while training, no checkpoints"])
def test_an_interrupted_sweep_gives_back_what_no_checkpoint_holds(tmp_path, monkeypatch, when):
    """Ctrl-C (or any error) at a moment no checkpoint covers: the trials taken go back to WAITING,
    and the same command trains each configuration once."""
    import optuna

    from inertia.sweeps.engine import Members

    grid = dict(lr=[0.01, 0.1], momentum=[0.0, 0.9])
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    if when.startswith("after claiming"):
        kw = dict(out=tmp_path / "run", storage=storage)

        def interrupt(self):
            raise KeyboardInterrupt

        monkeypatch.setattr(Members, "train_step", interrupt)   # before the first checkpoint is written
    else:
        def interrupt_after_some_steps(done, total):
            if done > 0:
                raise KeyboardInterrupt

        kw = dict(storage=storage, progress=interrupt_after_some_steps)
    with pytest.raises(KeyboardInterrupt):
        inertia.sweep(**{**SMALL, **kw}, **grid)
    study = optuna.load_study(study_name="sweep", storage=storage)
    states = [t.state for t in study.trials]
    assert len(states) == 4 and set(states) == {optuna.trial.TrialState.WAITING}, states
    monkeypatch.undo()
    res = inertia.sweep(**{**SMALL, **kw, "progress": None}, **grid)
    trials = optuna.load_study(study_name="sweep", storage=storage).trials
    assert len(trials) == 4 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert len(res.records()) == 4


@pytest.mark.parametrize("where", ["this machine", "another machine"])
def test_a_dead_workers_trials_are_trained_again(tmp_path, monkeypatch, where):
    """A worker dies (os._exit: no clean-up) holding every trial of the grid, with no checkpoint
    (no output folder). On this machine its PID is gone, so the next worker retries them at once;
    a holder on another machine is retried only once its heartbeats are older than the grace
    period (before that, a worker that does not wait says the results are partial)."""
    import optuna

    from inertia.sweeps import IncompleteSweep, study

    storage = f"sqlite:///{tmp_path / 'study.db'}"
    grid = dict(lr=[0.01, 0.1], momentum=[0.0, 0.9])
    dies = (f"import os, inertia, inertia.sweeps.study as study; study.HEARTBEAT_SECONDS = 1; "
            f"inertia.sweep(data='digits', model='mlp', steps=40, batch_size=32, seeds=1, metric='val_loss', "
            f"lr={grid['lr']}, "
            f"momentum={grid['momentum']}, storage={storage!r}, round_size=4, "
            f"progress=lambda done, total: os._exit(3) if done > 0 else None)")
    assert subprocess.run([sys.executable, "-c", dies], env=_env(), timeout=120).returncode == 3
    held = optuna.load_study(study_name="sweep", storage=storage).trials
    assert [t.state for t in held] == [optuna.trial.TrialState.RUNNING] * 4  # nobody will tell these
    monkeypatch.setattr(study, "HEARTBEAT_SECONDS", 1)
    if where == "another machine":
        with sqlite3.connect(tmp_path / "study.db") as db:
            db.execute("UPDATE trial_system_attributes SET value_json = '\"elsewhere:1:1\"' WHERE key = 'holder'")
        with pytest.raises(IncompleteSweep, match="4 configurations still held by other workers"):
            inertia.sweep(**SMALL, storage=storage, **grid, round_size=4, wait=False)
        time.sleep(3.2)  # past the grace period (2 heartbeats), in SQLite's whole seconds
    res = inertia.sweep(**SMALL, storage=storage, **grid, round_size=4)
    trials = optuna.load_study(study_name="sweep", storage=storage).trials
    states = [t.state for t in trials]
    assert states.count(optuna.trial.TrialState.FAIL) == 4 and states.count(optuna.trial.TrialState.COMPLETE) == 4
    done = [(t.params["lr"], t.params["1-momentum"]) for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert sorted(done) == sorted((a, 1 - b) for a in grid["lr"] for b in grid["momentum"])
    assert len(res.records()) == 4


def test_two_workers_on_postgresql_finish_the_grid_without_duplicates(tmp_path, postgres_url):
    import optuna

    with scratch_database(postgres_url) as (url, _):
        # one configuration per claim, each long enough (~1 s) that the second worker starts
        # before the first could finish the whole grid alone
        procs = [subprocess.Popen(_command(tmp_path / f"w{i}", "--storage", url, "--max-batch", "1", steps=2000),
                                  env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for i in range(2)]
        outputs = [p.communicate(timeout=300)[0] for p in procs]
        assert all(p.returncode == 0 for p in procs), outputs
        from inertia.sweeps.study import normalize_url

        trials = optuna.load_study(study_name="sweep", storage=normalize_url(url)).trials
        assert len(trials) == 6
        assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
        assert len({(t.params["lr"], t.params["1-momentum"]) for t in trials}) == 6
        workers = [t.user_attrs["worker"] for t in trials]
        assert len(set(workers)) == 2, f"one worker did all the work: {workers}"


def test_tensorboard_writes_one_run_per_configuration(tmp_path):
    logdir = tmp_path / "tb"
    from inertia.tensorboard import write_sweep

    res = inertia.sweep(**SMALL, lr=[0.05, 0.2], momentum=[0.0, 0.9])
    assert write_sweep(res, logdir) == 4
    runs = sorted(p for p in logdir.iterdir() if p.is_dir())
    assert len(runs) == len(res.records()) == 4
    assert all(list(run.rglob("events.out.tfevents*")) for run in runs)


@pytest.mark.parametrize("lanes", ["threads", "processes"])
def test_side_by_side_stacks_give_the_same_numbers_as_one_stack(lanes):
    """Also with pruning, whose decisions a forked lane asks of the parent (which owns the study)."""
    import optuna

    kwargs = dict(SMALL, lr=[1e-6, 0.02, 0.1, 0.5], momentum=[0.0, 0.9], folds=2, eval_every=10,
                  pruner=optuna.pruners.ThresholdPruner(upper=2.2))
    one = inertia.sweep(**kwargs, parallel=1).records()
    three = inertia.sweep(**kwargs, parallel=3, lanes=lanes).records()
    assert sorted(map(str, one)) == sorted(map(str, three))
    assert {r["status"] for r in one} == {"ok", "pruned"}


@pytest.mark.parametrize("lanes", ["threads", "processes"])
def test_progress_counts_every_configuration_step_once(lanes):
    """Across claimed batches and side-by-side stacks, progress only grows and ends at the total."""
    seen: list[tuple[int, int]] = []
    configs = 3 * 2
    inertia.sweep(**{**SMALL, "progress": lambda done, total: seen.append((done, total))}, lr=[0.02, 0.1, 0.5],
                  momentum=[0.0, 0.9], parallel=2, lanes=lanes, max_batch=4)
    assert {total for _, total in seen} == {configs * SMALL["steps"]}
    done = [d for d, _ in seen]
    assert done == sorted(done) and done[-1] == configs * SMALL["steps"]


def test_a_failing_training_process_fails_the_sweep(monkeypatch):
    from inertia.sweeps import engine

    original = engine.Members.train_step

    def failing(self):
        if self.step == 5:
            raise FloatingPointError("boom at step 5")
        original(self)

    monkeypatch.setattr(engine.Members, "train_step", failing)  # forked children inherit it
    with pytest.raises(ChildProcessError, match="2 training processes ended without results") as info:
        inertia.sweep(**SMALL, lr=[0.02, 0.1], momentum=[0.0, 0.9], parallel=2, lanes="processes", round_size=4)
    assert "(FloatingPointError: boom at step 5)" in str(info.value) and "\n" not in str(info.value)
    assert "Traceback" in str(info.value.__cause__)   # the lanes' own, for INERTIA_DEBUG=1
    with pytest.raises(ValueError, match="lanes"):
        inertia.sweep(**SMALL, lr=[0.1], momentum=[0.0], lanes="fibers")


def test_a_rule_without_momentum_sweeps_its_learning_rate(tmp_path):
    """`inertia sweep --optimizer adam` sweeps lr only: the default momentum grid applies to rules that have one."""
    res = inertia.sweep(**SMALL, optimizer="adam", lr=[1e-3, 1e-2], out=tmp_path / "adam")
    assert res.swept == ["lr"] and sorted(r["lr"] for r in res.records()) == [1e-3, 1e-2]
    with pytest.raises(ValueError, match="momentum"):
        inertia.sweep(**SMALL, optimizer="adam", lr=[1e-3], momentum=[0.9], out=tmp_path / "bad")


@pytest.mark.parametrize("sampler", ["random", "tpe"])
def test_a_trial_count_beyond_what_a_study_holds_is_refused_in_one_line(sampler, tmp_path, capsys):
    with pytest.raises(ValueError, match=r"^trials must be at most 1,000,000 .*got 1,000,000,000$"):
        inertia.sweep(**SMALL, sampler=sampler, trials=10 ** 9, out=tmp_path)
    assert not list(tmp_path.iterdir())   # refused before anything was opened
    assert cli_main(["sweep", "--sampler", sampler, "--trials", "1000000000", "--out", str(tmp_path), "--quiet"]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith("got 1,000,000,000")


def _damage(db: Path) -> None:
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    blob = bytearray(db.read_bytes())
    blob[100:4000] = bytes(3900)   # the first pages: the schema
    db.write_bytes(bytes(blob))


STORAGE_GRID = ["--lr", "0.05,0.1", "--momentum", "0,0.9", "--steps", "10", "--batch-size", "32", "--quiet"]


@pytest.fixture(scope="module")
def finished_sweep(tmp_path_factory) -> Path:
    """The folder of a finished sweep, made in its own process (no connection left open); tests damage copies."""
    out = tmp_path_factory.mktemp("finished") / "run"
    made = subprocess.run([sys.executable, "-m", "inertia.cli", "sweep", "--data", "digits", *STORAGE_GRID,
                           "--out", str(out)], env=_env(), capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    return out


@pytest.mark.parametrize("case, says", [
    ("damaged", r"storage .*sweep\.db is damaged \(database disk image is malformed\): move .*sweep\.db aside"),
    ("not a database", r"storage .*sweep\.db is damaged \(file is not a database\): move .*sweep\.db aside"),
    ("read-only", r"storage .*sweep\.db is read-only \(attempt to write a readonly database\): make it writable"),
    ("unreachable", r"cannot reach the database server of storage postgresql\+psycopg2://\*\*\*@127\.0\.0\.1:1/x "
                    r"\(.*Connection refused\): start it or check the URL, then run the same command again"),
    ("wrong password", r"wrong user or password for storage postgresql.*password authentication failed.*: "
                       r"check the storage URL$"),
])
def test_a_storage_failure_is_one_line_naming_the_cause_and_the_way_out(tmp_path, capsys, case, says, request,
                                                                         finished_sweep):
    out = shutil.copytree(finished_sweep, tmp_path / "run")
    db, storage = out / "sweep.db", []
    if case == "damaged":
        _damage(db)
    elif case == "not a database":
        db.write_bytes(b"not a database" * 1000)
    elif case == "read-only":
        storage = ["--storage", f"sqlite:///file:{db}?mode=ro&uri=true", "--lr", "0.05,0.1,0.2"]   # a new grid: writes
    elif case == "unreachable":
        storage = ["--storage", "postgresql://inertia:inertia@127.0.0.1:1/x"]
    else:
        server = request.getfixturevalue("postgres_url")
        storage = ["--storage", server.replace("inertia:inertia@", "inertia:wrong@")]
    capsys.readouterr()
    assert cli_main(["sweep", "--data", "digits", *STORAGE_GRID, "--out", str(out), *storage]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert re.search(says, line), line
