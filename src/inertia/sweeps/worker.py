"""The worker loop: resume orphaned checkpoints, then claim, train and tell until nothing is left.

- Every claimed batch is cut into stacks (:mod:`.lanes`) and trained at once by
  :mod:`.engine`; a stack's training state is checkpointed (:mod:`.checkpoints`) every
  ``checkpoint_every`` seconds. A restarted worker first resumes the checkpoints whose
  process is gone; finished trials are never recomputed.
- The worker holds every trial it took until it is told: it records their heartbeats
  (:mod:`.study`), and an interrupted run (Ctrl-C, an error) gives back to WAITING the
  ones no checkpoint holds, for the next run.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from . import lanes as _lanes
from . import study as _study
from .checkpoints import Checkpoints, host
from .engine import Job, Members, configs_per_chunk, run_members
from .specs import RunSpec, SearchSpec, grid_points


@dataclass
class Worker:
    """Trains a study's trials in this process (and its lanes) until none is left to claim."""

    job: Job
    study: _study.Study
    search: SearchSpec
    run_spec: RunSpec
    checkpoints: Checkpoints | None = None
    on_progress: Callable[[int, int], None] | None = None   # (configuration-steps done, total)
    log: Callable[[str], None] = lambda message: None
    _steps_done: int = field(default=0, init=False)          # progress, in configuration-steps
    _steps_total: int = field(default=0, init=False)
    _steps_running: dict = field(default_factory=dict, init=False)
    _held: dict = field(default_factory=dict, init=False)   # trial number -> (trial, its checkpoint): taken, not told
    _last_beat: float = field(default=0.0, init=False)

    @property
    def tick(self) -> float:
        return _study.HEARTBEAT_SECONDS / 3

    def run(self) -> int:
        """Work until no configuration is left to claim; returns how many this worker trained."""
        per_chunk = configs_per_chunk(self.job, self.run_spec.memory_budget)
        if self.run_spec.max_batch:
            per_chunk = min(per_chunk, self.run_spec.max_batch)
        expected = len(grid_points(self.study.space)) if self.search.sampler == "grid" else int(self.search.trials)
        self._steps_done = self.study.finished() * self.job.steps
        self._steps_total = max(expected * self.job.steps, self._steps_done)
        self._steps_running = {}
        self._report_progress()
        try:
            return self._resume() + self._work(per_chunk)
        except BaseException:  # interrupted (Ctrl-C) or failed: give back what no checkpoint holds
            self._give_back()
            raise

    def _resume(self) -> int:
        """Train the orphaned checkpoints' stacks to their end."""
        resumed = []
        for path in self.checkpoints.orphans() if self.checkpoints else []:
            try:
                state = Checkpoints.load(path)
            except Exception as error:  # unreadable: its trials stay RUNNING, nothing is recomputed twice
                self.log(f"skipping unreadable checkpoint {path}: {error}")
                continue
            trials = self.study.resume(state["keys"])
            if trials is None:
                os.remove(path)  # killed after telling every result: nothing left to do
                continue
            self.study.beat(trials)
            self._hold(trials, path)
            members = Members(self.job, state["configs"], state["keys"])
            members.load_state_dict(state)
            self.log(f"resuming {len(trials)} configurations from step {members.step} ({os.path.basename(path)})")
            resumed.append((trials, members, path))
        return self._run_parts(resumed)

    def _work(self, per_chunk: int) -> int:
        """Claim and train batches until none is left."""
        trained = 0
        while True:
            self.study.fail_stale()   # trials of dead workers that no checkpoint here resumed: queued again
            batch = self.study.claim(per_chunk, lambda trial: self._hold([trial]))
            if not batch:
                return trained
            lanes = _lanes.lane_count(self.run_spec.parallel, self.job.device, len(batch))
            parts = [self._stack(part) for part in _lanes.split(batch, _lanes.stack_count(self.job, len(batch), lanes))]
            trained += self._run_parts(parts, lanes)

    def _stack(self, trials: list[Any]) -> tuple[list[Any], Members, str | None]:
        """A new stack of ``trials``, checkpointed at once where there is an output folder."""
        members = Members(self.job, [self.study.config(t) for t in trials], [t.number for t in trials])
        path = None
        if self.checkpoints is not None:
            path = self.checkpoints.path_for(trials[0].number)
            self.checkpoints.save(members, path)
            self._hold(trials, path)   # a run that stops now resumes them from there
        return trials, members, path

    def _run_parts(self, parts: list[tuple[list[Any], Members, str | None]], lanes: int | None = None) -> int:
        if lanes is None:
            lanes = _lanes.lane_count(self.run_spec.parallel, self.job.device, len(parts))
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
        for trial, path in held:
            if path is not None and os.path.exists(path):
                continue  # the next run resumes it from there
            try:
                self.study.give_back(trial)
            except Exception as error:  # the storage is gone too: the trial stays RUNNING
                self.log(f"could not give back trial {trial.number}: {error}")

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
        """Store each configuration's result in its trial, drop the stack's checkpoint, count its progress."""
        worker = f"{host()}:{os.getpid()}"
        for trial, record in zip(trials, records):
            self.study.tell(trial, record, worker)
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
