"""The narrow interface between a sweep's study and the storage that holds its trials.

A :class:`Store` is one study's trials, with the few operations a worker needs, each one
transaction where the storage has them: prepare (check the signature, enqueue the points), claim,
hold, beat, find the abandoned, retry, store parameters, write, tell, give back, count, read the
finished. Two implementations: :mod:`.public` (Optuna's public API, trial by trial: any storage,
one worker) and :mod:`.sql` (batched SQL on Optuna's tables: database storages, many workers).
A trial is named by the storage's trial id; the worker sees :class:`Claimed` trials only.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable, Mapping, NamedTuple, Sequence

from .records import Finished, Outcome

HOLDER = "holder"
"""The trial system attribute that names the process holding a RUNNING trial (``host:pid:start``)."""

Updates = Mapping[int, "tuple[Mapping[int, float], Mapping[str, Any]]"]
"""Trial id -> (intermediate values by step, user attributes)."""


class Claimed(NamedTuple):
    """A trial a worker holds: the storage's id, its number, the parameters stored already and
    the fixed ones it was enqueued with (a grid or random point, a retried trial's), by Optuna's names."""

    id: int
    number: int
    params: dict[str, float]
    fixed: dict[str, float]


class Store(ABC):
    """One study's trials (see the module's docstring). Only trials still RUNNING are written to:
    a trial retried elsewhere after its worker was taken for dead keeps what it has."""

    @abstractmethod
    def prepare(self, signature: str, points: Sequence[Mapping[str, float]],
                check: Callable[[str | None, str], None]) -> None:
        """``check(stored, signature)``; unless done before, store ``signature`` and enqueue ``points``
        as WAITING trials with those fixed parameters (all or nothing)."""

    @abstractmethod
    def claim(self, limit: int, budget: int | None, holder: str) -> list[Claimed]:
        """Up to ``limit`` WAITING trials, then new ones while fewer than ``budget`` trials are not
        FAIL (None: no new ones), made RUNNING and held by ``holder`` with a first heartbeat."""

    @abstractmethod
    def hold(self, numbers: Sequence[int], holder: str) -> list[Claimed] | None:
        """The trials ``numbers``, their RUNNING ones now held by ``holder``; None when none is RUNNING."""

    @abstractmethod
    def beat(self, ids: Sequence[int]) -> None:
        """A heartbeat for each of the trials ``ids``."""

    @abstractmethod
    def abandoned(self, alive: Callable[[str], bool]) -> list[int]:
        """The RUNNING trials whose holder is not ``alive``, or whose heartbeat is stale."""

    @abstractmethod
    def retry(self, ids: Sequence[int]) -> int:
        """Fail the RUNNING ones of ``ids`` and enqueue a copy of each with its parameters (a trial
        never given parameters is only failed); how many were failed."""

    @abstractmethod
    def set_params(self, params: Sequence[tuple[int, str, float, Any]]) -> None:
        """Store (trial id, name, value, Optuna distribution) as parameters of the RUNNING trials."""

    @abstractmethod
    def write(self, updates: Updates) -> None:
        """Intermediate values and user attributes of the RUNNING ones of the trials in ``updates``."""

    @abstractmethod
    def tell(self, outcomes: Mapping[int, Outcome]) -> list[int]:
        """Finish the RUNNING ones of the trials ``outcomes`` (trial id -> outcome) as Optuna's
        ``Study.tell`` would: COMPLETE with the value, or PRUNED with the last intermediate value
        (if any); the ids told."""

    @abstractmethod
    def give_back(self, ids: Sequence[int]) -> None:
        """Put the RUNNING ones of ``ids`` back to WAITING (for the next claim, by any worker)."""

    @abstractmethod
    def count(self, *states: Any) -> int:
        """How many trials are in ``states``."""

    @abstractmethod
    def finished(self) -> list[Finished]:
        """The COMPLETE and PRUNED trials, by number."""
