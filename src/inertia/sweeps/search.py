"""Search and storage through Optuna: which configurations to train, where results land, resuming.

- Grid: every grid point is enqueued once as a WAITING trial (fixed parameters)
  by the process that creates the study; workers claim WAITING trials one by one
  through the storage's atomic state change, so two workers on one PostgreSQL
  study never evaluate the same configuration.
- Random / TPE: trials are asked in batches (``study.ask``) until ``trials`` exist.
- Every claimed batch is trained at once by :mod:`inertia.sweeps.engine`; its
  training state is checkpointed to ``<out>/checkpoints/`` every
  ``checkpoint_every`` seconds. A restarted worker first claims orphaned
  checkpoints (the owning process is gone), loads them and continues; finished
  trials are never recomputed.
- An interrupted run (Ctrl-C, an error) puts the trials it took that no
  checkpoint holds back to WAITING, for the next run.
- A worker records a heartbeat for every trial it holds (database storages);
  a trial whose worker died without a checkpoint that a restart here resumes
  (SIGKILL before its first checkpoint, no output folder, a lost machine) goes
  stale after two minutes, and the next claim fails it and trains a copy
  (:data:`HEARTBEAT_SECONDS`).
- Pruning: Optuna pruners see the mean validation loss over folds every
  ``eval_every`` steps (fold-aware); a pruned configuration leaves the stack.
"""
from __future__ import annotations

import glob
import hashlib
import json
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from .engine import Job, Members, configs_per_chunk, run_members

RESULT_KEYS = ("status", "diverged_step", "pruned_step", "val_loss_mean", "val_loss_std", "val_accuracy_mean",
               "val_accuracy_std", "test_loss_mean", "test_loss_std", "test_accuracy_mean", "test_accuracy_std",
               "train_loss_final", "train_loss_curve", "steps", "eval_steps",
               *(f"{m}_{s}_curve" for m in ("val_loss", "val_accuracy", "test_loss", "test_accuracy")
                 for s in ("mean", "std")))

LANES = ("auto", "processes", "threads")   # where side-by-side stacks run

METRICS = {"val_loss": ("val_loss_mean", "minimize"), "val_accuracy": ("val_accuracy_mean", "maximize")}


class StorageError(ValueError):
    """The storage URL could not be opened."""


def normalize_url(url: str) -> str:
    """``postgresql://`` -> ``postgresql+psycopg2://`` when only psycopg2 is installed (SQLAlchemy 2.1
    defaults to psycopg 3)."""
    if url.startswith(("postgresql://", "postgres://")):
        import importlib.util

        if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
            return "postgresql+psycopg2://" + url.split("://", 1)[1]
    return url


HEARTBEAT_SECONDS = 60
"""A worker records a heartbeat for every trial it holds at least this often; a RUNNING trial
whose last heartbeat is older than twice this is stale (its worker died: SIGKILL, a lost
machine) and any worker fails it and queues a copy that the next claim trains
(``optuna.storages.RetryHeartbeatStaleTrialCallback``)."""


def open_storage(url: str | None, heartbeat: int | None = None):
    """An Optuna storage for ``url`` (None: in memory); unreachable URLs raise :class:`StorageError`.

    ``heartbeat``: seconds between the heartbeats that its trials' workers promise to record
    (database storages only); stale trials are retried (:data:`HEARTBEAT_SECONDS`).
    """
    import optuna

    if url is None:
        return optuna.storages.InMemoryStorage()
    url = normalize_url(url)
    kwargs: dict[str, Any] = {"engine_kwargs": {"connect_args": {"timeout": 60}}} if url.startswith("sqlite") else {}
    if url.startswith("postgresql"):
        kwargs = {"engine_kwargs": {"connect_args": {"connect_timeout": 10}, "pool_pre_ping": True}}
    for attempt in range(4):
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                if heartbeat:
                    kwargs.update(heartbeat_interval=int(heartbeat), grace_period=2 * int(heartbeat),
                                  heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback())
                return optuna.storages.RDBStorage(url, **kwargs)
        except Exception as error:  # sqlalchemy / driver errors of every kind
            # two workers creating the tables of a fresh database at once: one gets an
            # IntegrityError; the tables exist now, so try again
            if "Integrity" in type(error).__name__ and attempt < 3:
                time.sleep(0.5 * (attempt + 1))
                continue
            raise StorageError(f"cannot open storage {_redact(url)}: {type(error).__name__}: {error}") from error
    raise AssertionError("unreachable")


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def grid_points(space: dict[str, Sequence[float]]) -> list[dict[str, float]]:
    """The Cartesian product of ``space`` (insertion order of names, values as given)."""
    points: list[dict[str, float]] = [{}]
    for name, values in space.items():
        points = [{**p, name: float(v)} for p in points for v in values]
    return points


def make_sampler(name: str, seed: int):
    import optuna

    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True)
    return optuna.samplers.RandomSampler(seed=seed)


def make_pruner(pruner: Any):
    import optuna

    if pruner is None or pruner is False or pruner == "none":
        return optuna.pruners.NopPruner()
    if isinstance(pruner, str):
        table = {"median": optuna.pruners.MedianPruner, "hyperband": optuna.pruners.HyperbandPruner,
                 "successive_halving": optuna.pruners.SuccessiveHalvingPruner,
                 "percentile": lambda: optuna.pruners.PercentilePruner(25.0)}
        if pruner not in table:
            raise ValueError(f"unknown pruner {pruner!r}; known: none, {', '.join(table)}")
        return table[pruner]()
    return pruner


@dataclass
class Search:
    """One sweep's study: what is searched, where it is stored, how it is trained."""

    job: Job
    space: dict[str, list[float]]         # name -> grid values (random/TPE: the range min..max)
    signature: dict[str, Any]             # everything that defines the sweep (must match on resume)
    storage_url: str | None = None
    study_name: str = "sweep"
    sampler: str = "grid"
    trials: int | None = None
    pruner: Any = None
    metric: str = "val_loss"
    out: str | None = None
    checkpoint_every: float = 60.0
    eval_every: int = 0
    memory_budget: int | None = None
    max_batch: int | None = None
    seed: int = 0
    parallel: int | None = None          # stacks trained side by side (default: CPU threads)
    lanes: str = "auto"                  # side-by-side stacks in: auto | processes | threads
    on_progress: Callable[[int, int], None] | None = None   # (configuration-steps done, total)
    log: Callable[[str], None] = lambda message: None
    study: Any = field(default=None, init=False)
    _steps_done: int = field(default=0, init=False)          # progress, in configuration-steps
    _steps_total: int = field(default=0, init=False)
    _steps_running: dict = field(default_factory=dict, init=False)
    _held: dict = field(default_factory=dict, init=False)   # trial id -> (trial, its checkpoint): taken, not told
    _last_beat: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        if self.lanes not in LANES:
            raise ValueError(f"lanes must be one of {', '.join(LANES)}, got {self.lanes!r}")

    # ------------------------------------------------------------ study
    def open(self) -> Any:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        storage = open_storage(self.storage_url, heartbeat=HEARTBEAT_SECONDS)
        direction = METRICS[self.metric][1]
        sig = json.dumps(self.signature, sort_keys=True, default=str)
        kwargs = dict(storage=storage, study_name=self.study_name, direction=direction,
                      sampler=make_sampler(self.sampler, self.seed), pruner=make_pruner(self.pruner))
        created = False
        for attempt in range(4):
            try:
                study = optuna.create_study(load_if_exists=False, **kwargs)
                created = True
                break
            except optuna.exceptions.DuplicatedStudyError:
                study = optuna.load_study(**{k: v for k, v in kwargs.items() if k != "direction"})
                break
            except Exception as error:
                if "Integrity" in type(error).__name__ and attempt < 3:
                    time.sleep(0.5 * (attempt + 1))
                    continue
                raise StorageError(f"cannot use storage {_redact(str(self.storage_url))}: {error}") from error
        if created:
            study.set_user_attr("signature", sig)
            if self.sampler == "grid":
                for point in grid_points(self.space):
                    study.enqueue_trial(point)
            study.set_user_attr("ready", True)
        else:
            stored = study.user_attrs.get("signature")
            deadline = time.time() + 30
            while stored is None and time.time() < deadline:  # the creator is still writing
                time.sleep(0.5)
                stored = optuna.load_study(storage=storage, study_name=self.study_name).user_attrs.get("signature")
            if stored is not None and stored != sig:
                raise ValueError(
                    f"study {self.study_name!r} in {_redact(str(self.storage_url))} holds a different sweep; "
                    f"use a new --out folder (or --study-name). Stored: {stored}; asked: {sig}")
            if stored is None:
                study.set_user_attr("signature", sig)
            deadline = time.time() + 30
            while not study.user_attrs.get("ready") and time.time() < deadline:
                time.sleep(0.5)
                study = optuna.load_study(**{k: v for k, v in kwargs.items() if k != "direction"})
            if not study.user_attrs.get("ready") and self.sampler == "grid":
                # the creator died while enqueuing: add the missing points
                present = {json.dumps(t.system_attrs.get("fixed_params", t.params), sort_keys=True)
                           for t in study.get_trials(deepcopy=False)}
                for point in grid_points(self.space):
                    if json.dumps(point, sort_keys=True) not in present:
                        study.enqueue_trial(point)
                study.set_user_attr("ready", True)
        self.study = study
        return study

    # ------------------------------------------------------------ claiming
    def _claim_waiting(self, limit: int) -> list[Any]:
        import optuna
        from optuna.trial import TrialState

        storage = self.study._storage
        batch = []
        for frozen in storage.get_all_trials(self.study._study_id, deepcopy=False, states=(TrialState.WAITING,)):
            if len(batch) >= limit:
                break
            try:
                # heartbeat first: the trial is never RUNNING without one (nor with an old one of
                # an earlier holder's), so if this process dies at any moment it goes stale
                self._beat([frozen])
                if storage.set_trial_state_values(frozen._trial_id, state=TrialState.RUNNING):
                    batch.append(optuna.Trial(self.study, frozen._trial_id))
                    self._hold(batch[-1:])
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
        return batch

    def _ask(self, limit: int) -> list[Any]:
        """Up to ``limit`` trials for this worker, each held (:meth:`_hold`) as soon as it is taken."""
        from optuna.trial import TrialState

        if self.sampler == "grid":
            return self._claim_waiting(limit)
        existing = len(self.study.get_trials(deepcopy=False, states=(  # FAIL: stale, and retried
            TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)))
        batch = []
        for _ in range(min(limit, max(0, int(self.trials or 0) - existing))):
            batch.append(self.study.ask())   # a WAITING trial (retried, given back) first
            self._beat(batch[-1:])
            self._hold(batch[-1:])
        return batch

    # ------------------------------------------------------------ heartbeats
    def _hold(self, trials: Sequence[Any], checkpoint: str | None = None) -> None:
        """This worker trains ``trials`` from now on (heartbeats until they are told); ``checkpoint``:
        the file that holds them, from which a run that stops resumes them."""
        self._held.update({t._trial_id: (t, checkpoint) for t in trials})

    def _release(self, trials: Sequence[Any]) -> None:
        for t in trials:
            self._held.pop(t._trial_id, None)

    def _beat(self, trials: Sequence[Any]) -> None:
        storage = self.study._storage
        if getattr(storage, "get_heartbeat_interval", lambda: None)():   # database storages
            for t in trials:
                storage.record_heartbeat(t._trial_id)

    def _heartbeat(self) -> None:
        """Every held trial's heartbeat, if a third of :data:`HEARTBEAT_SECONDS` has passed."""
        now = time.monotonic()
        if now - self._last_beat >= HEARTBEAT_SECONDS / 3:
            self._last_beat = now
            self._beat([t for t, _ in list(self._held.values())])

    def _config(self, trial: Any) -> dict[str, float]:
        config = {}
        for name, values in self.space.items():
            if self.sampler == "grid":
                config[name] = float(trial.suggest_categorical(name, sorted(set(float(v) for v in values))))
            else:
                lo, hi = float(min(values)), float(max(values))
                log = name == "lr" and lo > 0
                config[name] = float(lo) if lo == hi else float(trial.suggest_float(name, lo, hi, log=log))
        return config

    # ------------------------------------------------------------ checkpoints
    def _ckpt_dir(self) -> str | None:
        if self.out is None:
            return None
        path = os.path.join(self.out, "checkpoints")
        os.makedirs(path, exist_ok=True)
        return path

    def _orphans(self) -> list[str]:
        """Checkpoint files whose owning process is gone, claimed by renaming (atomic)."""
        folder = self._ckpt_dir()
        if folder is None:
            return []
        mine = []
        for path in sorted(glob.glob(os.path.join(folder, "batch-*.pt*"))):
            if path.endswith(".tmp"):
                continue  # a write cut short; the previous complete checkpoint is next to it
            base, _, owner = path.partition(".pt")
            owner = owner.lstrip(".")
            if owner.startswith("claimed-"):
                try:
                    pid = int(owner.split("-")[1])
                except ValueError:
                    pid = -1
                if pid == os.getpid() or _alive(pid, owner):
                    continue
            elif owner.startswith("tmp"):
                continue
            target = f"{base}.pt.claimed-{os.getpid()}-{_host()}"
            try:
                os.rename(path, target)
            except OSError:
                continue  # another worker took it
            mine.append(target)
        return mine

    def _save(self, members: Members, path: str) -> None:
        tmp = path + ".tmp"
        torch.save({"members": members.state_dict(), "signature": self.signature}, tmp)
        os.replace(tmp, path)

    # ------------------------------------------------------------ running
    def run(self) -> int:
        """Work until no configuration is left to claim; returns how many this worker trained."""
        from optuna.trial import TrialState

        if self.study is None:
            self.open()
        per_chunk = configs_per_chunk(self.job, self.memory_budget)
        if self.max_batch:
            per_chunk = min(per_chunk, int(self.max_batch))
        finished = (TrialState.COMPLETE, TrialState.PRUNED)
        expected = len(grid_points(self.space)) if self.sampler == "grid" else int(self.trials or 0)
        self._steps_done = len(self.study.get_trials(deepcopy=False, states=finished)) * self.job.steps
        self._steps_total = max(expected * self.job.steps, self._steps_done)
        self._steps_running = {}
        if self.on_progress is not None:
            self.on_progress(self._steps_done, self._steps_total)
        try:
            return self._work(per_chunk)
        except BaseException:  # interrupted (Ctrl-C) or failed: give back what no checkpoint holds
            self._give_back()
            raise

    def _work(self, per_chunk: int) -> int:
        """Resume orphaned checkpoints, then claim and train batches until none is left."""
        import optuna
        from optuna.trial import TrialState

        trained = 0
        resumed = []
        for path in self._orphans():
            try:
                sd = torch.load(path, weights_only=False)
            except Exception as error:  # unreadable: its trials stay RUNNING, nothing is recomputed twice
                self.log(f"skipping unreadable checkpoint {path}: {error}")
                continue
            keys = sd["members"]["keys"]
            trials = []
            for number in keys:
                frozen = self.study._storage.get_trial(self.study._storage.get_trial_id_from_study_id_trial_number(
                    self.study._study_id, number))
                trials.append(frozen)
            if all(t.state != TrialState.RUNNING for t in trials):
                os.remove(path)  # killed after telling every result: nothing left to do
                continue
            live = [optuna.Trial(self.study, t._trial_id) for t in trials]
            self._beat(live)
            self._hold(live, path)
            members = Members(self.job, sd["members"]["configs"], keys)
            members.load_state_dict(sd["members"])
            self.log(f"resuming {len(keys)} configurations from step {members.step} ({os.path.basename(path)})")
            resumed.append((live, members, path))
        trained += self._run_parts(resumed, self._lanes(len(resumed)))
        while True:
            # trials of dead workers that no checkpoint here resumed: failed, and queued again
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(self.study)
            batch = self._ask(per_chunk)
            if not batch:
                break
            parts = []
            lanes = self._lanes(len(batch))
            for part in _split(batch, self._stacks(len(batch), lanes)):
                configs = [self._config(t) for t in part]
                members = Members(self.job, configs, [t.number for t in part])
                folder = self._ckpt_dir()
                path = None
                if folder is not None:
                    path = os.path.join(folder, f"batch-{part[0].number:06d}.pt.claimed-{os.getpid()}-{_host()}")
                    self._save(members, path)
                    self._hold(part, path)   # a run that stops now resumes them from there
                parts.append((part, members, path))
            trained += self._run_parts(parts, lanes)
        return trained

    def _give_back(self) -> None:
        """Put the trials this worker holds and no checkpoint holds back to WAITING, so that the next
        run (any worker) trains them: without it they would stay RUNNING until their heartbeat is stale."""
        from optuna.trial import TrialState

        storage = self.study._storage
        held, self._held = list(self._held.values()), {}
        for trial, path in held:
            if path is not None and os.path.exists(path):
                continue  # the next run resumes it from there
            try:
                if storage.get_trial(trial._trial_id).state == TrialState.RUNNING:
                    storage.set_trial_state_values(trial._trial_id, state=TrialState.WAITING)
            except Exception as error:  # the storage is gone too: the trial stays RUNNING
                self.log(f"could not give back trial {trial.number}: {error}")

    def _lanes(self, n_configs: int) -> int:
        """How many stacks train side by side: on CPU one per torch thread (each single-threaded)."""
        if self.parallel is not None:
            return max(1, min(int(self.parallel), n_configs))
        if not str(self.job.device).startswith("cpu"):
            return 1
        return max(1, min(torch.get_num_threads(), n_configs))

    def _stacks(self, n_configs: int, lanes: int) -> int:
        """Into how many stacks a claimed batch is cut: one per lane, and on CPU small enough that
        a stack's working set stays in cache (:data:`CPU_STACK_MEMBERS`, by what does its products)."""
        job = self.job
        if lanes == 1 or not str(job.device).startswith("cpu"):
            return lanes
        return max(lanes, math.ceil(n_configs * job.n_folds / CPU_STACK_MEMBERS[job.matmul]))

    def _run_parts(self, parts: list[tuple[list[Any], Members, str | None]], lanes: int) -> int:
        """Train stacks, ``lanes`` side by side, each with one intra-op thread (small GEMMs scale
        better this way, and it does not collapse when other processes share the cores). Members
        never mix, so the numbers equal one big stack's.

        In forked processes where possible (:func:`_forked_lanes_available`): in threads, every
        call into torch hands the GIL from one lane to the other (measured: 5-13 % slower).
        """
        if not parts:
            return 0
        if len(parts) == 1 or lanes == 1:
            return sum(self._train(*part) for part in parts)
        if self.lanes == "processes" or (self.lanes == "auto" and _forked_lanes_available(self.job)):
            return self._run_forked(parts, lanes)
        from concurrent.futures import ThreadPoolExecutor

        def lane(part: tuple[list[Any], Members, str | None]) -> int:
            torch.set_num_threads(1)
            return self._train(*part)

        previous = torch.get_num_threads()
        try:
            with ThreadPoolExecutor(max_workers=lanes) as pool:
                return sum(f.result() for f in [pool.submit(lane, part) for part in parts])
        finally:
            torch.set_num_threads(previous)

    def _train(self, trials: list[Any], members: Members, path: str | None) -> int:
        """Train one stack to its last step here, then tell its results."""
        stack = id(members)
        records = self._train_members(members, path, self._judge(trials),
                                      lambda step: self._progress(stack, step, len(trials)))
        self._tell(trials, records, path, stack)
        return len(trials)

    def _progress(self, stack: Any, step: int, n_configs: int) -> None:
        """Report this worker's progress: every stack's step x its configurations, over all it will train."""
        self._steps_running[stack] = step * n_configs
        self._heartbeat()
        if self.on_progress is not None:
            self.on_progress(self._steps_done + sum(self._steps_running.values()), self._steps_total)

    def _judge(self, trials: list[Any]) -> Callable[[int, dict[int, tuple[float, float]]], list[int]]:
        """Report every configuration's mean validation metric at a step; return those to prune."""

        def judge(step: int, means: dict[int, tuple[float, float]]) -> list[int]:
            prune = []
            for c, (loss, acc) in means.items():
                trials[c].report(loss if self.metric == "val_loss" else acc, step)
                if trials[c].should_prune():
                    prune.append(c)
            return prune

        return judge

    def _train_members(self, members: Members, path: str | None, judge, progress) -> list[dict[str, Any]]:
        """Train ``members`` to the end with pruning (``judge``), progress and checkpoints; its records."""
        last_save = [time.time()]

        def on_step(m: Members) -> None:
            progress(m.step)

        def on_checkpoint(m: Members) -> None:
            if path is not None and time.time() - last_save[0] >= self.checkpoint_every and not m.done:
                self._save(m, path)
                last_save[0] = time.time()

        pruning = self.pruner not in (None, False, "none")
        run_members(members, on_eval=(lambda m, means: judge(m.step, means)) if pruning else None,
                    on_step=on_step, on_checkpoint=on_checkpoint)
        return members.results()

    def _tell(self, trials: list[Any], records: list[dict[str, Any]], path: str | None, stack: Any) -> None:
        """Store each configuration's result in its trial, drop the stack's checkpoint, count its progress."""
        from optuna.trial import TrialState

        key, direction = METRICS[self.metric]
        worker = f"{_host()}:{os.getpid()}"
        for trial, record in zip(trials, records):
            if self.study._storage.get_trial(trial._trial_id).state != TrialState.RUNNING:
                continue  # told before an interruption
            # one attribute (one database commit) per trial
            trial.set_user_attr("result", {**{k: record.get(k) for k in RESULT_KEYS}, "worker": worker})
            if record["status"] == "ok":
                self.study.tell(trial, record[key])
            elif record["status"] == "pruned":
                self.study.tell(trial, state=TrialState.PRUNED)
            else:
                self.study.tell(trial, math.inf if direction == "minimize" else -math.inf)
        self._release(trials)
        if path is not None and os.path.exists(path):
            os.remove(path)
        self._steps_running.pop(stack, None)
        self._steps_done += len(trials) * self.job.steps
        if self.on_progress is not None:
            self.on_progress(self._steps_done + sum(self._steps_running.values()), self._steps_total)

    def _run_forked(self, parts: list[tuple[list[Any], Members, str | None]], lanes: int) -> int:
        """Each stack trains in a forked child, ``lanes`` at a time; this process alone talks to the storage.

        A child sends progress, asks for pruning decisions and sends its records at the
        end; it writes its own checkpoints and dies with this process (PR_SET_PDEATHSIG),
        so a killed sweep leaves no trainer behind and resumes from the checkpoints.
        """
        import multiprocessing
        import signal
        from multiprocessing.connection import wait

        running: dict[Any, tuple[int, list[Any], str | None]] = {}
        waiting = list(parts)
        told = 0
        try:
            while waiting or running:
                while waiting and len(running) < lanes:
                    trials, members, path = waiting.pop(0)
                    mine, theirs = multiprocessing.Pipe()
                    parent = os.getpid()
                    pid = os.fork()
                    if pid == 0:  # the child: never returns
                        mine.close()
                        self._lane_child(theirs, parent, members, path)
                    theirs.close()
                    running[mine] = (pid, trials, path)
                self._heartbeat()
                for conn in wait(list(running), timeout=HEARTBEAT_SECONDS / 3):
                    pid, trials, path = running[conn]
                    try:
                        message = conn.recv()
                    except EOFError:
                        _, status = os.waitpid(pid, 0)
                        del running[conn]
                        raise RuntimeError(f"a training process (pid {pid}) ended without its results "
                                           f"(wait status {status}); its checkpoint is kept") from None
                    kind = message[0]
                    if kind == "steps":
                        self._progress(pid, message[1], len(trials))
                    elif kind == "judge":
                        conn.send(self._judge(trials)(*message[1:]))
                    elif kind == "error":
                        raise RuntimeError(f"a training process failed:\n{message[1]}")
                    elif kind == "done":
                        self._tell(trials, message[1], path, pid)
                        told += len(trials)
                        conn.close()
                        os.waitpid(pid, 0)
                        del running[conn]
        finally:
            for conn, (pid, _, _) in running.items():  # interrupted or failed: stop the rest
                try:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                except OSError:
                    pass
                conn.close()
        return told

    def _lane_child(self, conn: Any, parent: int, members: Members, path: str | None) -> None:
        """Body of a forked lane: train, talk to the parent over ``conn``, then exit (never returns)."""
        code = 1
        try:
            _die_with_parent(parent)
            torch.set_num_threads(1)
            last = [0.0]

            def progress(step: int) -> None:
                now = time.monotonic()
                if now - last[0] >= 0.1:
                    last[0] = now
                    conn.send(("steps", step))

            def judge(step: int, means: dict[int, tuple[float, float]]) -> list[int]:
                conn.send(("judge", step, means))
                return conn.recv()

            conn.send(("done", self._train_members(members, path, judge, progress)))
            code = 0
        except BaseException:
            import traceback

            try:
                conn.send(("error", traceback.format_exc()))
            except Exception:
                pass
        finally:
            os._exit(code)  # no atexit handlers, no finalizers of the parent's objects (storage connections)


CPU_STACK_MEMBERS = {"torch": 16, "openblas": 32}
"""On CPU a claimed batch is cut into stacks of at most this many members (configurations x
folds), by what does the stack's matrix products (:mod:`.gemm`). Measured end to end on the
benchmark's 8 x 8 grid (MLP 40-100-100-10, batch 100, 2 lanes):

- torch (MKL): stacked tensors then stay in cache between the ops of a step. On the 2-core
  AVX2 machine, batched matmuls over 3.8 MB ran at 78 GFLOP/s and over 15 MB at 53, and
  2 x 16-member stacks took 0.87-0.92x the time of 2 x 32; on the AVX-512 one, the same time.
- OpenBLAS (AVX-512, packed operands): 2 x 32-member stacks took 0.93-0.95x the time of
  4 x 16, as per-call overheads count for fewer members (2026-11-30)."""


def _forked_lanes_available(job: Job) -> bool:
    """Lanes as forked processes: on Linux (fork, PR_SET_PDEATHSIG), for CPU jobs."""
    import sys

    return sys.platform.startswith("linux") and str(job.device).startswith("cpu")


def _die_with_parent(parent: int) -> None:
    """Have the kernel SIGKILL this process when ``parent`` ends (Linux prctl PR_SET_PDEATHSIG)."""
    import ctypes
    import signal

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(1, int(signal.SIGKILL), 0, 0, 0) != 0:   # PR_SET_PDEATHSIG = 1
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:  # the parent ended before prctl took effect
        os._exit(1)


def _split(items: list[Any], parts: int) -> list[list[Any]]:
    """``items`` in ``parts`` contiguous, nearly equal slices (none empty)."""
    parts = max(1, min(parts, len(items)))
    size, extra = divmod(len(items), parts)
    out, start = [], 0
    for i in range(parts):
        end = start + size + (1 if i < extra else 0)
        out.append(items[start:end])
        start = end
    return out


def records_from_study(study: Any, space_names: Sequence[str]) -> list[dict[str, Any]]:
    """One record per finished trial: its parameters and the results stored as user attributes."""
    from optuna.trial import TrialState

    out = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)):
        rec: dict[str, Any] = {"trial": t.number}
        rec.update({name: t.params.get(name) for name in space_names})
        stored = t.user_attrs.get("result") or {}
        for name in (*RESULT_KEYS, "worker"):
            rec[name] = stored.get(name)
        if rec["status"] is None:
            rec["status"] = "pruned" if t.state == TrialState.PRUNED else "ok"
        out.append(rec)
    return out


def signature_hash(signature: dict[str, Any]) -> str:
    return hashlib.sha1(json.dumps(signature, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _host() -> str:
    import socket

    return socket.gethostname().replace("-", "_").replace(".", "_")


def _alive(pid: int, owner: str) -> bool:
    """Is the process that claimed a checkpoint still running (on this host)?"""
    parts = owner.split("-", 2)
    host = parts[2] if len(parts) > 2 else _host()
    if host != _host():
        return True  # another machine's worker: assume alive
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child (killed but not reaped) is not alive
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True
