"""The :class:`.store.Store` on Optuna's public API, trial by trial: any Optuna storage, one worker.

Chosen for a study in memory (only this process sees it). It records each trial's holder, so a
holder that is gone is found (:meth:`PublicStore.abandoned`), but no heartbeats, and a claim is
several calls: a study that several processes share goes through :mod:`.sql`.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

from .records import Finished, Outcome
from .store import HOLDER, Claimed, Store, Updates


class PublicStore(Store):
    """The trials of ``study`` (an ``optuna.Study``), whose id in ``storage`` is ``study_id``."""

    def __init__(self, study: Any, storage: Any, study_id: int):
        self.study, self.storage, self.study_id = study, storage, study_id

    def _trials(self, *states: Any) -> list[Any]:
        return self.storage.get_all_trials(self.study_id, deepcopy=False, states=states)

    def _id(self, number: int) -> int:
        return self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)

    def _running(self, ids: Sequence[int]) -> list[int]:
        from optuna.trial import TrialState

        return [i for i in ids if self.storage.get_trial(i).state == TrialState.RUNNING]

    def _claimed(self, ids: Sequence[int]) -> list[Claimed]:
        trials = [self.storage.get_trial(i) for i in ids]
        return [Claimed(i, t.number, dict(t.params), dict(t.system_attrs.get("fixed_params", {})))
                for i, t in zip(ids, trials)]

    def prepare(self, signature: str, points: Sequence[Mapping[str, float]],
                check: Callable[[str | None, str], None]) -> None:
        check(self.study.user_attrs.get("signature"), signature)
        if self.study.user_attrs.get("ready"):
            return
        self.study.set_user_attr("signature", signature)
        for point in points:
            self.study.enqueue_trial(dict(point))
        self.study.set_user_attr("ready", True)

    def claim(self, limit: int, budget: int | None, holder: str) -> list[Claimed]:
        from optuna.trial import TrialState

        ids = [self._id(t.number) for t in self._trials(TrialState.WAITING)[:limit]]
        ids = [i for i in ids if self.storage.set_trial_state_values(i, state=TrialState.RUNNING)]
        if budget is not None:
            live = len(self._trials(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING))
            ids += [self.storage.create_new_trial(self.study_id) for _ in range(min(limit - len(ids), budget - live))]
        self._hold(ids, holder)
        return self._claimed(ids)

    def _hold(self, ids: Sequence[int], holder: str) -> None:
        for i in ids:
            self.storage.set_trial_system_attr(i, HOLDER, holder)

    def hold(self, numbers: Sequence[int], holder: str) -> list[Claimed] | None:
        ids = [self._id(n) for n in numbers]
        running = self._running(ids)
        if not running:
            return None
        self._hold(running, holder)
        return self._claimed(ids)

    def beat(self, ids: Sequence[int]) -> None:
        """No heartbeats on the public API: a holder's death is seen by :meth:`abandoned`."""

    def abandoned(self, alive: Callable[[str], bool]) -> list[int]:
        from optuna.trial import TrialState

        return [self._id(t.number) for t in self._trials(TrialState.RUNNING)
                if HOLDER in t.system_attrs and not alive(t.system_attrs[HOLDER])]

    def retry(self, ids: Sequence[int]) -> int:
        from optuna.trial import TrialState

        failed = self._claimed(self._running(ids))
        for trial in failed:
            self.storage.set_trial_state_values(trial.id, state=TrialState.FAIL)
        for trial in failed:
            if trial.fixed or trial.params:
                self.study.enqueue_trial({**trial.fixed, **trial.params})
        return len(failed)

    def set_params(self, params: Sequence[tuple[int, str, float, Any]]) -> None:
        running = set(self._running(sorted({i for i, *_ in params})))
        for i, name, value, distribution in params:
            if i in running:
                self.storage.set_trial_param(i, name, distribution.to_internal_repr(value), distribution)

    def write(self, updates: Updates) -> None:
        for i in self._running(list(updates)):
            values, attrs = updates[i]
            for step, value in values.items():
                self.storage.set_trial_intermediate_value(i, step, value)
            for key, value in attrs.items():
                self.storage.set_trial_user_attr(i, key, value)

    def tell(self, outcomes: Mapping[int, Outcome]) -> list[int]:
        from optuna.trial import TrialState

        live = self._running(list(outcomes))
        self.write({i: (outcomes[i].steps, outcomes[i].attrs) for i in live})
        for i in live:
            number = self.storage.get_trial(i).number
            if outcomes[i].value is None:
                self.study.tell(number, state=TrialState.PRUNED)
            else:
                self.study.tell(number, outcomes[i].value)
        return live

    def give_back(self, ids: Sequence[int]) -> None:
        from optuna.trial import TrialState

        for i in self._running(ids):
            self.storage.set_trial_state_values(i, state=TrialState.WAITING)

    def count(self, *states: Any) -> int:
        return len(self._trials(*states))

    def finished(self) -> list[Finished]:
        from optuna.trial import TrialState

        return [Finished(t.number, t.state, t.params, t.user_attrs)
                for t in self._trials(TrialState.COMPLETE, TrialState.PRUNED)]
