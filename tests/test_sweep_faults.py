"""Sweeps under faults, in real processes: SIGKILL at random points (enqueue, claim, checkpoint write,
inside and after a tell, any moment) and one immediate rerun; damaged checkpoints; two studies in one
folder; three PostgreSQL workers, one late and one killed. The results must equal an uninterrupted run
bit for bit, with no configuration missing or duplicated."""
from __future__ import annotations

import contextlib
import faulthandler
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import scratch_database

SEED = int(os.environ.get("INERTIA_FAULT_SEED") or random.SystemRandom().randrange(10 ** 6))
"""The kill points of this run are drawn from this seed (set INERTIA_FAULT_SEED to replay a run)."""

KILLER = r'''
import os, signal, sys, threading
point, nth = sys.argv[1], int(sys.argv[2])
hits = [0]

def die():  # the whole sweep: this process and its forked lanes (a session of their own)
    if point == "lane":  # only the lane that counts: as the out-of-memory killer does
        os.kill(os.getpid(), signal.SIGKILL)
    os.killpg(os.getpgid(0), signal.SIGKILL)

def wrap(owner, name, after=False):
    original = getattr(owner, name)
    def wrapped(*args, **kwargs):
        if not after:
            hits[0] += 1
            hits[0] == nth and die()
        out = original(*args, **kwargs)
        if after:
            hits[0] += 1
            hits[0] == nth and die()
        return out
    setattr(owner, name, wrapped)

import inertia.sweeps.checkpoints as ck, inertia.sweeps.study as study, inertia.sweeps.study.sql as sql
if point == "time":
    threading.Timer(nth / 1000, die).start()
else:
    owner, name, after = {
        "enqueue": (sql.SqlStore, "_add", False),        # inside the transaction that enqueues the grid
        "enqueued": (sql.SqlStore, "prepare", True),
        "claim": (sql.SqlStore, "_hold", False),         # inside a claim's transaction
        "claimed": (study.Study, "claim", True),         # claimed, before the first checkpoint
        "checkpoint": (ck.os, "fsync", False),           # a checkpoint written, not yet renamed
        "checkpointed": (ck.Checkpoints, "save", True),
        "lane": (ck.Checkpoints, "save", True),          # a forked lane, after its nth checkpoint
        "telling": (sql.SqlStore, "_last_steps", False), # inside a tell's transaction, its rows written
        "tell": (study.Study, "tell", True),             # some stacks told (a stack: one transaction)
    }[point]
    wrap(owner, name, after)
from inertia.cli import main
sys.exit(main(sys.argv[3:]))
'''

POINTS = [("enqueue", 1, 1), ("enqueued", 1, 1), ("claim", 1, 3), ("claimed", 1, 3), ("checkpoint", 1, 3),
          ("checkpointed", 1, 3), ("telling", 1, 3), ("tell", 1, 5), ("time", 300, 1400), ("time", 1400, 2500)]
"""Each named point once, and two random moments (one in each half of the range; every run draws new ones)."""


def _draw(case: int) -> tuple[str, int]:
    point, low, high = POINTS[case]
    return point, random.Random(SEED * 100 + case).randint(low, high)


def _sweep_args(out: Path, *extra: str) -> list[str]:
    return ["sweep", "--data", "digits", "--model", "mlp", "--lr", "0.01,0.05,0.2", "--momentum", "0,0.9",
            "--steps", "200", "--batch-size", "32", "--checkpoint-every", "0.02", "--parallel", "2", "--seeds", "1", "--round-size", "2",
            "--out", str(out), "--quiet", *extra]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def _run(args: list[str], kill: tuple[str, int] | None = None, **popen: object) -> subprocess.CompletedProcess:
    """``inertia ARGS`` in a session of its own, killed at ``kill`` = (point, nth)."""
    prefix = [sys.executable, "-c", KILLER, *map(str, kill)] if kill else [sys.executable, "-m", "inertia.cli"]
    return subprocess.run([*prefix, *args], env=_env(), capture_output=True, text=True, timeout=300,
                          start_new_session=True, **popen)


def _results(db: Path | str, study: str = "sweep") -> dict[tuple[float, ...], dict]:
    """(lr, momentum) -> the stored result of each COMPLETE trial of the SQLite file or storage URL
    ``db``; a duplicate fails."""
    import optuna

    from inertia.sweeps.study import normalize_url

    url = normalize_url(db) if isinstance(db, str) else f"sqlite:///{db}"
    trials = optuna.load_study(study_name=study, storage=url).trials
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    out = {}
    for t in done:
        key = (t.params["lr"], t.params["1-momentum"])   # momentum is stored as 1 - momentum
        assert key not in out, f"{key} trained twice"
        out[key] = {k: v for k, v in t.user_attrs.items() if k != "worker"}
    assert not [t for t in trials if t.state in (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)]
    return out


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> dict[str, dict]:
    """The uninterrupted runs: seed 0 (study "sweep") and seed 1."""
    runs = {}
    for seed in ("0", "1"):
        out = tmp_path_factory.mktemp(f"baseline{seed}")
        done = _run(_sweep_args(out, "--seed", seed))
        assert done.returncode == 0, done.stderr
        runs[seed] = _results(out / "sweep.db")
        assert len(runs[seed]) == 6
    return runs


@pytest.mark.parametrize("case", range(len(POINTS)))
def test_a_sweep_killed_anywhere_completes_bit_identical_after_one_rerun(tmp_path, baseline, case):
    point, nth = _draw(case)
    where = f"SIGKILL at {point} #{nth} (INERTIA_FAULT_SEED={SEED})"
    killed = _run(_sweep_args(tmp_path), kill=(point, nth))
    assert killed.returncode == -signal.SIGKILL, f"{where}: not killed (rc {killed.returncode}) {killed.stderr}"
    again = _run(_sweep_args(tmp_path))
    assert again.returncode == 0, f"{where}: {again.stdout}{again.stderr}"
    assert "waiting" not in again.stdout, where   # the dead holder's trials were retried at once
    assert _results(tmp_path / "sweep.db") == baseline["0"], where
    assert "6 configurations in the study" in again.stdout, where


@pytest.mark.parametrize("damage", ["corrupted", "truncated"])
def test_a_damaged_checkpoint_is_moved_aside_and_its_configurations_retrained(tmp_path, baseline, damage):
    killed = _run(_sweep_args(tmp_path), kill=("checkpointed", 2))
    assert killed.returncode == -signal.SIGKILL
    path = sorted(p for p in (tmp_path / "checkpoints").glob("*/batch-*") if not p.name.endswith(".tmp"))[0]
    blob = bytearray(path.read_bytes())
    if damage == "truncated":
        del blob[len(blob) // 2:]
    else:
        middle = len(blob) // 2
        blob[middle:middle + 64] = bytes((b + 1) % 256 for b in blob[middle:middle + 64])
    path.write_bytes(bytes(blob))
    again = _run(_sweep_args(tmp_path))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "warning: checkpoint" in again.stdout and "not used" in again.stdout
    assert list((tmp_path / "checkpoints").glob("*/rejected/batch-*"))
    assert _results(tmp_path / "sweep.db") == baseline["0"]


def test_two_studies_in_one_folder_never_touch_each_other(tmp_path, baseline):
    a, b = _sweep_args(tmp_path, "--study-name", "a"), _sweep_args(tmp_path, "--study-name", "b", "--seed", "1")
    assert _run(a, kill=("checkpointed", 2)).returncode == -signal.SIGKILL
    assert _run(b, kill=("checkpointed", 2)).returncode == -signal.SIGKILL
    folders = sorted((tmp_path / "checkpoints").iterdir())
    assert len(folders) == 2
    (b_folder,) = [f for f in folders if f.name.startswith("b-")]
    b_files = {p.name: p.read_bytes() for p in b_folder.glob("batch-*")}
    assert b_files
    assert _run(a).returncode == 0
    assert {p.name: p.read_bytes() for p in b_folder.glob("batch-*")} == b_files   # A left B's checkpoints alone
    assert _run(b).returncode == 0
    assert _results(tmp_path / "sweep.db", "a") == baseline["0"]
    assert _results(tmp_path / "sweep.db", "b") == baseline["1"]
    assert (tmp_path / "results-a.csv").read_text() != (tmp_path / "results-b.csv").read_text()


def test_three_postgresql_workers_one_late_one_killed_finish_the_grid_together(tmp_path, postgres_url):
    import optuna

    from inertia.sweeps.study import normalize_url

    with scratch_database(postgres_url) as (url, _):
        grid = ["--lr", "0.01,0.02,0.05,0.1,0.2,0.5", "--momentum", "0,0.9"]   # 12 configurations, one per round

        def worker(i: int, *kill: str) -> subprocess.Popen:
            args = [*_sweep_args(tmp_path / f"w{i}", "--storage", url, "--round-size", "1", "--parallel", "1"), *grid]
            args[args.index("--steps") + 1] = "1500"
            prefix = [sys.executable, "-c", KILLER, *kill] if kill else [sys.executable, "-m", "inertia.cli"]
            return subprocess.Popen([*prefix, *args], env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, start_new_session=True)

        first, doomed = worker(0), worker(1, "claimed", "3")   # dies holding its third configuration
        time.sleep(2)
        late = worker(2)
        outputs = [p.communicate(timeout=300)[0] for p in (first, doomed, late)]
        assert doomed.returncode == -signal.SIGKILL, outputs[1]
        assert first.returncode == 0 and late.returncode == 0, outputs
        trials = optuna.load_study(study_name="sweep", storage=normalize_url(url)).trials
        complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
        assert sorted((t.params["lr"], round(1 - t.params["1-momentum"], 12)) for t in complete) == sorted(
            (lr, m) for lr in (0.01, 0.02, 0.05, 0.1, 0.2, 0.5) for m in (0.0, 0.9))
        assert all(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL) for t in trials)
        workers = {t.user_attrs["worker"].rsplit(":", 1)[1] for t in complete}
        assert {str(p.pid) for p in (first, doomed, late)} <= workers, f"not everyone got work: {workers}"


def test_sqlite_states_of_a_finished_folder_are_not_rewritten_by_a_rerun(tmp_path):
    """A rerun of a finished sweep writes nothing into its study (no claim transaction)."""
    assert _run(_sweep_args(tmp_path)).returncode == 0
    before = (tmp_path / "sweep.db").read_bytes()
    again = _run(_sweep_args(tmp_path))
    assert again.returncode == 0 and "nothing left to do" in again.stdout
    assert (tmp_path / "sweep.db").read_bytes() == before
    with sqlite3.connect(tmp_path / "sweep.db") as db:
        assert db.execute("SELECT count(*) FROM trials WHERE state = 'COMPLETE'").fetchone() == (6,)


def test_ctrl_c_at_any_moment_prints_one_line_and_the_rerun_completes(tmp_path, baseline):
    """SIGINT to the whole sweep (the terminal's process group: the parent and its forked lanes), at a
    random moment once the study exists (the start-up, torch's import included, is the next test)."""
    delay = random.Random(SEED).uniform(0.0, 0.8)
    proc = subprocess.Popen([sys.executable, "-m", "inertia.cli", *_sweep_args(tmp_path)], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 60
    while not (tmp_path / "sweep.db").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    time.sleep(delay)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    where = f"Ctrl-C after {delay:.2f} s (INERTIA_FAULT_SEED={SEED})"
    assert proc.returncode in (0, 130), f"{where}: {out}{err}"
    if proc.returncode == 130:
        assert err.strip().splitlines() == ["inertia sweep: interrupted; run the same command again to resume"]
        assert "Traceback" not in err, f"{where}: {err}"
    again = _run(_sweep_args(tmp_path))
    assert again.returncode == 0, f"{where}: {again.stdout}{again.stderr}"
    assert _results(tmp_path / "sweep.db") == baseline["0"], where


IN_FORK = r'''
import os, signal, sys
stop = getattr(signal, sys.argv[1])
os.register_at_fork(after_in_child=lambda: os.kill(os.getpid(), stop),    # the lane: each fork
                    after_in_parent=lambda: os.kill(os.getpid(), stop))   # the sweep: its first fork
from inertia.cli import main
sys.exit(main(sys.argv[2:]))
'''


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_stop_that_lands_inside_a_fork_stops_the_sweep(tmp_path, stop):
    """Ctrl-C or ``kill`` delivered while Python runs fork's hooks (there a KeyboardInterrupt is printed
    as "Exception ignored" and dropped): the sweep still stops, with its one line and 128 + the signal,
    and no lane prints a traceback."""
    proc = subprocess.run([sys.executable, "-c", IN_FORK, stop.name, *_sweep_args(tmp_path, "--lanes", "processes")],
                          env=_env(), capture_output=True, text=True, timeout=300, start_new_session=True)
    how = "interrupted" if stop == signal.SIGINT else "stopped by SIGTERM"
    assert proc.returncode == 128 + stop, proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines() == [f"inertia sweep: {how}; run the same command again to resume"]


def test_a_killed_lane_is_one_line_and_the_rerun_completes(tmp_path, baseline):
    """SIGKILL of the forked training processes alone (as the out-of-memory killer would, but from another
    process): the sweep says so in one line and exits non-zero; the rerun completes the grid, bit-identical."""
    killed = _run(_sweep_args(tmp_path), kill=("lane", 2))
    assert killed.returncode == 2, killed.stdout + killed.stderr
    assert "Traceback" not in killed.stderr
    [line] = killed.stderr.strip().splitlines()
    assert "ended without results (killed by SIGKILL" in line and "run the same command again" in line
    assert "another process" in line and "killed by the out-of-memory killer" not in line, line
    again = _run(_sweep_args(tmp_path))
    assert again.returncode == 0, again.stdout + again.stderr
    assert _results(tmp_path / "sweep.db") == baseline["0"]


@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGTERM, signal.SIGSEGV])
def test_a_lanes_death_names_its_signal_and_for_sigkill_who_sent_it(monkeypatch, stop):
    """The out-of-memory killer is named only where the kernel's oom_kill count rose while the lanes ran."""
    from inertia.sweeps import lanes

    pid = os.fork()
    if pid == 0:
        faulthandler.disable()   # pytest's: it would print the crash of SIGSEGV
        os.kill(os.getpid(), stop)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    monkeypatch.setattr(lanes, "oom_kills", lambda: 3)
    if stop != signal.SIGKILL:
        assert lanes._ended(status, 2) == f"killed by {stop.name} ({signal.strsignal(stop)})"
        return
    assert lanes._ended(status, 2).startswith("killed by the out-of-memory killer (SIGKILL)")
    assert lanes._ended(status, 3) == ("killed by SIGKILL from another process (the out-of-memory killer's count "
                                       "did not change)")
    assert lanes._ended(status, None).startswith("killed by SIGKILL (the out-of-memory killer or another process")
    monkeypatch.setattr(lanes, "oom_kills", lambda: None)
    assert lanes._ended(status, 2).startswith("killed by SIGKILL (the out-of-memory killer or another process")


def test_importing_inertia_loads_no_torch():
    """``import inertia`` is instant: what the command line runs before it can catch Ctrl-C."""
    code = "import sys, inertia, inertia.cli; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=_env()).stdout.strip() == "False"


@pytest.mark.parametrize("delay", [0.15, 0.3, 0.8])
def test_ctrl_c_during_start_up_prints_one_line(tmp_path, delay):
    """SIGINT while Python is still importing torch and the command's modules: one line, exit 130.
    (The interpreter's own start-up, its first ~50 ms, comes before any code of ours can catch it.)"""
    proc = subprocess.Popen([sys.executable, "-m", "inertia.cli", *_sweep_args(tmp_path)], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    time.sleep(delay)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    # 130, or ended by SIGINT (-2), seen in about 1 of 15 interrupts during torch's import: the interpreter
    # ends itself with the signal after inertia caught it and printed its line; a shell shows 130 for both
    assert proc.returncode in (130, -signal.SIGINT), f"Ctrl-C after {delay} s: {out}{err}"
    assert err.strip().splitlines() == ["inertia sweep: interrupted; run the same command again to resume"]


RECONNECTING_FOR = r'''
import sys, inertia.sweeps.study as study
study.RECONNECT_SECONDS = float(sys.argv[1])
from inertia.cli import main
sys.exit(main(sys.argv[2:]))
'''


@pytest.mark.parametrize("outage", [3, None])
def test_a_worker_reconnects_to_postgresql_or_gives_up_in_one_line(tmp_path, postgres_url, baseline, outage):
    """The database refuses connections (its open ones cut) for ``outage`` seconds, or for good: the
    worker, trying again for 20 s, goes on and finishes; or it gives up in one line, and the rerun
    resumes. Either way the results are the uninterrupted run's."""
    from inertia.sweeps.study import normalize_url

    with scratch_database(postgres_url) as (url, cursor):
        name = url.rsplit("/", 1)[1]
        args = _sweep_args(tmp_path, "--storage", url)
        proc = subprocess.Popen([sys.executable, "-c", RECONNECTING_FOR, "20" if outage else "2", *args], env=_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
        deadline = time.time() + 60
        while time.time() < deadline and not list((tmp_path / "checkpoints").glob("*/batch-*")):
            time.sleep(0.01)
        cursor.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS false")
        cursor.execute(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
        if outage:
            time.sleep(outage)
            cursor.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
        out, err = proc.communicate(timeout=120)
        if outage:
            assert proc.returncode == 0, out + err
        else:
            assert proc.returncode == 2, out + err
            [line] = err.strip().splitlines()
            assert "cannot reach the database server" in line and "run the same command again" in line, line
            cursor.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
            again = _run(args)
            assert again.returncode == 0, again.stdout + again.stderr
        import optuna

        trials = optuna.load_study(study_name="sweep", storage=normalize_url(url)).trials
        done = {(t.params["lr"], t.params["1-momentum"]): {k: v for k, v in t.user_attrs.items()
                                                           if k != "worker"}
                for t in trials if t.state == optuna.trial.TrialState.COMPLETE}
        assert done == baseline["0"]

SEARCHES = {sampler: ("--sampler", sampler, "--trials", "12") for sampler in ("random", "tpe")}
"""Random and TPE sweeps of 12 trials (TPE: its first 10 drawn at random, then 2 asked of its model)."""


@pytest.fixture(scope="module")
def searched(tmp_path_factory) -> dict[tuple[float, ...], dict]:
    """The uninterrupted random sweep, which the interrupted random sweeps must equal point for point (TPE
    sweeps are checked for distinct points only, which needs no uninterrupted run)."""
    out = tmp_path_factory.mktemp("random")
    done = _run(_sweep_args(out, *SEARCHES["random"]))
    assert done.returncode == 0, done.stderr
    runs = _results(out / "sweep.db")
    assert len(runs) == 12
    return runs


@pytest.mark.parametrize("kill", [("claimed", 2), ("tell", 3), ("time", 900)])
@pytest.mark.parametrize("sampler", list(SEARCHES))
def test_a_killed_random_or_tpe_sweep_reruns_without_repeating_a_point(tmp_path, searched, sampler, kill):
    """Killed after its second claim (trials taken, not yet asked), after three stacks were told, or at
    a moment; one rerun finishes it with as many distinct configurations as trials: a random sweep with
    exactly the points and numbers of the uninterrupted one."""
    args = _sweep_args(tmp_path, *SEARCHES[sampler])
    killed = _run(args, kill=kill)
    assert killed.returncode == -signal.SIGKILL, f"not killed at {kill}: {killed.stdout}{killed.stderr}"
    again = _run(args)
    assert again.returncode == 0, again.stdout + again.stderr
    done = _results(tmp_path / "sweep.db")   # a configuration trained twice fails here
    assert len(done) == 12
    if sampler == "random":
        assert done == searched


@pytest.mark.parametrize("sampler", list(SEARCHES))
@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_two_workers_share_a_random_or_tpe_sweep_without_repeating_a_point(tmp_path, request, searched, database,
                                                                            sampler):
    """Two workers started together on one study, one configuration per round: every point once
    (a random sweep's: those of one uninterrupted process), and both trained some."""
    with contextlib.ExitStack() as stack:
        if database == "sqlite":
            url = f"sqlite:///{tmp_path / 'shared.db'}"
        else:
            url, _ = stack.enter_context(scratch_database(request.getfixturevalue("postgres_url")))
        procs = []
        for i in range(2):
            args = [*_sweep_args(tmp_path / f"w{i}", "--storage", url, "--round-size", "1", "--parallel", "1"),
                    *SEARCHES[sampler]]
            args[args.index("--steps") + 1] = "600"
            procs.append(subprocess.Popen([sys.executable, "-m", "inertia.cli", *args], env=_env(), text=True,
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True))
        outputs = [p.communicate(timeout=300)[0] for p in procs]
        assert all(p.returncode == 0 for p in procs), outputs
        done = _results(url)   # a configuration trained twice fails here
        assert len(done) == 12
        if sampler == "random":
            assert set(done) == set(searched)
        workers = {attrs["worker"].rsplit(":", 1)[1] for attrs in _attrs(url)}
        assert workers == {str(p.pid) for p in procs}, f"one worker did all the work: {workers}"


def _attrs(url: str) -> list[dict]:
    """The user attributes of every COMPLETE trial of the study in ``url``."""
    import optuna

    from inertia.sweeps.study import normalize_url

    trials = optuna.load_study(study_name="sweep", storage=normalize_url(url)).trials
    return [t.user_attrs for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
