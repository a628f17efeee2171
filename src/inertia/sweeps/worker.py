"""The worker loop: resume orphaned checkpoints, retry dead workers' trials, claim a round, train, tell.

- Every claimed round is cut into stacks (:mod:`.lanes`) and trained at once by
  :mod:`.engine`; a stack's training state is checkpointed (:mod:`.checkpoints`) every
  ``checkpoint_every`` seconds. Each round the worker first resumes the checkpoints whose
  process is gone, and retries the trials of dead workers that no checkpoint holds
  (:meth:`.study.Study.fail_stale`); finished trials are never recomputed. A checkpoint that
  fails its checks is moved aside with a warning and its configurations are trained again.
- The worker holds every trial it took until it is told: it records their heartbeats
  (:mod:`.study`), and an interrupted run (Ctrl-C, an error) gives back to WAITING the
  ones no checkpoint holds, for the next run.
- When nothing is left to claim but other workers still hold trials, it waits for them (and
  retrains what a dead one held), or with ``RunSpec.wait=False`` raises :class:`IncompleteSweep`.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from . import lanes as _lanes
from . import study as _study
from .checkpoints import CheckpointError, Checkpoints
from .engine import Job, Members, run_members
from .memory import configs_per_chunk
from .processes import host
from .specs import RunSpec, SearchSpec

WAIT_SECONDS = 1.0
"""How often a worker with nothing to claim looks again while others hold trials."""


class IncompleteSweep(RuntimeError):
    """This worker is done, but other workers still hold configurations (``RunSpec.wait=False``)."""

    def __init__(self, held: int):
        super().__init__(f"{held} configurations still held by other workers; results are partial")
        self.held = held


@dataclass
class Worker:
    """Trains a study's trials in this process (and its lanes) until every one is finished."""

    job: Job
    study: _study.Study
    search: SearchSpec
    run_spec: RunSpec
    checkpoints: Checkpoints | None = None
    on_progress: Callable[[int, int], None] | None = None   # (configuration-steps done, total)
    log: Callable[[str], None] = lambda message: None
    expected: int = 0                                        # configurations of the whole sweep
    _steps_done: int = field(default=0, init=False)          # progress, in configuration-steps
    _steps_total: int = field(default=0, init=False)
    _steps_running: dict = field(default_factory=dict, init=False)
    _held: dict = field(default_factory=dict, init=False)   # trial number -> (trial, its checkpoint): taken, not told
    _last_beat: float = field(default=0.0, init=False)

    @property
    def tick(self) -> float:
        return _study.HEARTBEAT_SECONDS / 3

    def run(self) -> int:
        """Work until every configuration is finished; returns how many this worker trained."""
        per_claim = configs_per_chunk(self.job, self.run_spec.memory_budget)
        per_claim = min(per_claim, self.run_spec.max_batch or per_claim, self.search.rounds(self.expected))
        learns = self.search.sampler == "tpe" or self.search.pruner is not None
        if learns and 1 < self.expected <= per_claim:
            self.log(f"warning: all {self.expected} configurations train in one round, so TPE and pruners have "
                     "no finished configuration to learn from; set a smaller round_size (--round-size)")
        self._steps_done = self.study.finished() * self.job.steps
        self._steps_total = max(self.expected * self.job.steps, self._steps_done)
        self._steps_running = {}
        self._report_progress()
        try:
            return self._work(per_claim)
        except BaseException as error:  # interrupted (Ctrl-C) or failed: give back what no checkpoint holds
            self._give_back()
            if isinstance(error, Exception) and _study.is_storage_failure(error):
                raise self.study.failure(error) from error
            raise

    def _work(self, per_claim: int) -> int:
        """Resume, retry, claim and train rounds until nothing is left, waiting for other workers."""
        trained, waiting = 0, False
        while True:
            trained += self._resume()
            self.study.fail_stale()   # trials of dead workers that no checkpoint here resumed: queued again
            batch = self.study.claim(per_claim, lambda trial: self._hold([trial]))
            if batch:
                trained += self._train_round(batch)
                continue
            held = self.study.running()   # this worker's trials are all told: held by others
            if held == 0:
                if trained == 0:
                    self.log("nothing left to do: every configuration is finished")
                return trained
            if not self.run_spec.wait:
                raise IncompleteSweep(held)
            if not waiting:
                self.log(f"waiting for {held} configurations held by other workers")
            waiting = True
            time.sleep(WAIT_SECONDS)

    def _train_round(self, batch: list[Any]) -> int:
        lanes = _lanes.lane_count(self.run_spec.parallel, self.job.device, len(batch), self.run_spec.threads)
        parts = [self._stack(part) for part in _lanes.split(batch, _lanes.stack_count(self.job, len(batch), lanes))]
        return self._run_parts(parts, lanes)

    def _resume(self) -> int:
        """Train the orphaned checkpoints' stacks to their end; a checkpoint that fails its checks
        is moved aside (its trials are retried from step 0 by :meth:`.study.Study.fail_stale`)."""
        resumed = []
        for path in self.checkpoints.orphans() if self.checkpoints else []:
            try:
                state = self.checkpoints.load(path)
            except (CheckpointError, OSError) as error:
                moved = self.checkpoints.reject(path)
                self.log(f"warning: checkpoint {os.path.basename(path)} not used: {error}; moved to {moved}, "
                         "its configurations are trained again")
                continue
            trials = self.study.resume(state["keys"])
            if trials is None:
                os.remove(path)  # killed after telling every result: nothing left to do
                continue
            self._hold(trials, path)
            members = Members(self.job, state["configs"], state["keys"])
            members.load_state_dict(state)
            self.log(f"resuming {len(trials)} configurations from step {members.step} ({os.path.basename(path)})")
            resumed.append((trials, members, path))
        return self._run_parts(resumed)

    def _stack(self, trials: list[Any]) -> tuple[list[Any], Members, str | None]:
        """A new stack of ``trials`` and the checkpoint file it will write (where there is an output
        folder; until the first write, a run that stops trains them again from step 0)."""
        members = Members(self.job, self.study.configs(trials), [t.number for t in trials])
        path = None
        if self.checkpoints is not None:
            path = self.checkpoints.path_for(trials[0].number)
            self._hold(trials, path)
        return trials, members, path

    def _run_parts(self, parts: list[tuple[list[Any], Members, str | None]], lanes: int | None = None) -> int:
        if lanes is None:
            lanes = _lanes.lane_count(self.run_spec.parallel, self.job.device, len(parts), self.run_spec.threads)
        return _lanes.run_parts(parts, lanes, self.run_spec.lanes, self.job, self)

    # ------------------------------------------------------------ holding trials
    def _hold(self, trials: Sequence[Any], checkpoint: str | None = None) -> None:
        """This worker trains ``trials`` from now on (heartbeats until they are told); ``checkpoint``:
        the file that holds them, from which a run that stops resumes them."""
        self._held.update({t.number: (t, checkpoint) for t in trials})

    def heartbeat(self) -> None:
        """Every held trial's heartbeat, if a third of :data:`.study.HEARTBEAT_SECONDS` has passed."""
        now = time.monotonic()
        if now - self._last_beat >= self.tick:
            self._last_beat = now
            self.study.beat([t for t, _ in list(self._held.values())])

    def _give_back(self) -> None:
        """Put the trials this worker holds and no checkpoint holds back to WAITING, so that the next
        run (any worker) trains them: without it they would stay RUNNING until their heartbeat is stale."""
        held, self._held = list(self._held.values()), {}
        free = [trial for trial, path in held if path is None or not os.path.exists(path)]  # else: resumed from there
        if not free:
            return
        try:
            self.study.give_back(free)
        except Exception as error:  # the storage is gone too: a rerun here retries them (their holder is gone)
            self.log(f"could not give back {len(free)} configurations: {type(error).__name__}")

    # ------------------------------------------------------------ one stack (lanes call these)
    def train(self, trials: list[Any], members: Members, path: str | None) -> int:
        """Train one stack to its last step here, then tell its results."""
        stack = id(members)
        records = self.train_members(members, path, self.judge(trials),
                                     lambda step: self.progress(stack, step, len(trials)))
        self.tell(trials, records, path, stack)
        return len(trials)

    def train_members(self, members: Members, path: str | None, judge, progress) -> list[dict[str, Any]]:
        """Train ``members`` to the end with pruning (``judge``), progress and checkpoints; its records."""
        last_save = [time.time()]

        def on_checkpoint(m: Members) -> None:
            if path is not None and time.time() - last_save[0] >= self.run_spec.checkpoint_every and not m.done:
                self.checkpoints.save(m, path)
                last_save[0] = time.time()

        run_members(members, on_eval=lambda m, means: judge(m.step, means),   # intermediate values, pruning
                    on_step=lambda m: progress(m.step), on_checkpoint=on_checkpoint)
        return members.results()

    def judge(self, trials: list[Any]) -> Callable[[int, dict[int, dict[str, float]]], list[int]]:
        """Report every configuration's mean validation metrics at a step; return those to prune."""

        def judge(step: int, means: dict[int, dict[str, float]]) -> list[int]:
            return self.study.judge(trials, step, means)

        return judge

    def progress(self, stack: Any, step: int, n_configs: int) -> None:
        """Report this worker's progress: every stack's step x its configurations, over all it will train."""
        self._steps_running[stack] = step * n_configs
        self.heartbeat()
        self._report_progress()

    def tell(self, trials: list[Any], records: list[dict[str, Any]], path: str | None, stack: Any) -> None:
        """Store the stack's results in its trials, drop its checkpoint, count its progress."""
        self.study.tell(trials, records, f"{host()}:{os.getpid()}")
        for t in trials:
            self._held.pop(t.number, None)
        if path is not None and os.path.exists(path):
            os.remove(path)
        self._steps_running.pop(stack, None)
        self._steps_done += len(trials) * self.job.steps
        self._report_progress()

    def _report_progress(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self._steps_done + sum(self._steps_running.values()), self._steps_total)

