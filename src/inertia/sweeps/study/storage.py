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
            raise StorageError(describe_failure(error, url)) from error
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


_FAILURES = (
    (("readonly", "read-only"),
     "{where} is read-only ({cause}): make it writable, or use another --out folder, and run the same command again"),
    (("database or disk is full", "no space left", "could not extend file", "disk full"),
     "the disk of {where} is full ({cause}): free space and run the same command again to resume"),
    (("malformed", "file is not a database", "unsupported file format"),
     "{where} is damaged ({cause}): move {file} aside (its results are lost) and run the same command again"),
    (("authentication failed", "no password supplied", 'role "'),
     "wrong user or password for {where} ({cause}): check the storage URL"),
    (("does not exist",), "no such database for {where} ({cause}): create it, or check the storage URL"),
    (("could not connect", "connection refused", "could not translate host name", "timeout expired",
      "server closed the connection", "terminating connection", "connection is closed", "no route to host",
      "connection to server", "accepting connections", "closed the connection unexpectedly"),
     "cannot reach the database server of {where} ({cause}): start it or check the URL, then run the same command "
     "again to resume"),
    (("unable to open database file",),
     "cannot open {where} ({cause}): check that its folder exists and can be written"),
)
"""What a storage error's text says (lower case) -> one line naming the cause and the way out."""


def driver_message(error: BaseException) -> str:
    """The first line of the innermost error under ``error`` (the database driver's, not a wrapper's)."""
    while True:
        inner = getattr(error, "orig", None) or error.__cause__
        if not isinstance(inner, BaseException):
            break
        error = inner
    return (str(error).strip().splitlines() or [type(error).__name__])[0].strip()


def describe_failure(error: BaseException, url: str | None) -> str:
    """One line: how the storage ``url`` failed with ``error``, and the way out."""
    cause = driver_message(error)
    where = f"storage {redact(str(url))}"
    file = "the database"
    if str(url).startswith("sqlite:///"):
        file = str(url)[len("sqlite:///"):].split("?")[0]
        where = f"storage {file}"
    for needles, say in _FAILURES:
        if any(n in cause.lower() for n in needles):
            return say.format(where=where, cause=cause, file=file)
    return f"{where} failed ({type(error).__name__}: {cause}); run the same command again to resume"


def is_disconnect(error: BaseException) -> bool:
    """Is ``error`` a database server out of reach (a restart, a lost network): worth trying again?"""
    import sqlalchemy as sa

    if not isinstance(error, sa.exc.DBAPIError):
        return False
    return bool(error.connection_invalidated) or describe_failure(error, None).startswith("cannot reach")


def is_storage_failure(error: BaseException) -> bool:
    """Is ``error`` the storage failing (a lost connection, a read-only or full database)?"""
    import optuna

    return isinstance(error, optuna.exceptions.StorageInternalError) or type(error).__module__.startswith("sqlalchemy")
