"""Opening an Optuna storage from a URL, and telling storage failures from other errors."""
from __future__ import annotations

import time
from typing import Any


class StorageError(ValueError):
    """The storage URL could not be opened, or the storage failed."""


def normalize_url(url: str) -> str:
    """``postgresql://`` -> ``postgresql+psycopg2://`` when only psycopg2 is installed (SQLAlchemy 2.1
    defaults to psycopg 3)."""
    if url.startswith(("postgresql://", "postgres://")):
        import importlib.util

        if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
            return "postgresql+psycopg2://" + url.split("://", 1)[1]
    return url


def open_storage(url: str | None) -> Any:
    """An Optuna storage for ``url`` (None: in memory); unreachable URLs raise :class:`StorageError`."""
    import optuna

    if url is None:
        return optuna.storages.InMemoryStorage()
    url = normalize_url(url)
    kwargs: dict[str, Any] = {"engine_kwargs": {"connect_args": {"timeout": 60}}} if url.startswith("sqlite") else {}
    if url.startswith("postgresql"):
        kwargs = {"engine_kwargs": {"connect_args": {"connect_timeout": 10}, "pool_pre_ping": True}}
    for attempt in range(4):
        try:
            storage = optuna.storages.RDBStorage(url, **kwargs)
            if url.startswith("sqlite"):
                _write_ahead(storage.engine)
            return storage
        except Exception as error:  # sqlalchemy / driver errors of every kind
            # two workers creating the tables of a fresh database at once: one gets an IntegrityError
            # (PostgreSQL) or "table ... already exists" (SQLite); the tables exist now, so try again
            if ("Integrity" in type(error).__name__ or "already exists" in str(error)) and attempt < 3:
                time.sleep(0.5 * (attempt + 1))
                continue
            raise StorageError(f"cannot open storage {redact(url)}: {type(error).__name__}: {error}") from error
    raise AssertionError("unreachable")


def _write_ahead(engine: Any) -> None:
    """SQLite with a write-ahead log, synced at checkpoints (``synchronous=NORMAL``): a commit then
    costs no fsync of its own, so a trial's bookkeeping takes microseconds, not milliseconds. A
    killed process loses nothing committed; a power cut may lose the last commits, never consistency
    (their trials are trained again)."""
    import sqlalchemy as sa

    @sa.event.listens_for(engine, "connect")
    def pragmas(connection: Any, record: Any) -> None:
        cursor = connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
        except Exception:  # a read-only folder or a busy database: keep the defaults
            pass
        finally:
            cursor.close()

    engine.dispose()   # connections made while the tables were set up get the pragmas too


def redact(url: str) -> str:
    """``url`` without its user and password."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def is_storage_failure(error: BaseException) -> bool:
    """Is ``error`` the storage failing (a lost connection, a read-only or full database)?"""
    import optuna

    return isinstance(error, optuna.exceptions.StorageInternalError) or type(error).__module__.startswith("sqlalchemy")
