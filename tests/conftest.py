"""Shared fixtures. Services (PostgreSQL, Chromium) come from scripts/ci-services.sh.

A test that needs a service is skipped when it is missing, unless
INERTIA_REQUIRE_SERVICES=1 (set by .ci/run): then it fails, so CI cannot pass
by skipping.

The README's command runs the tests in pytest-xdist workers, one per core, in any order: a test
writes under its own ``tmp_path`` and makes its databases with :func:`scratch_database` (a new
name each time), never a fixed path, name or port that another worker could use at the same time.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import sys
import uuid
from typing import Iterator

import pytest
import torch


def _service(variable: str, what: str, fallback: str | None = None) -> str:
    value = os.environ.get(variable) or fallback
    if not value:
        message = f"{what} not available: set {variable} (eval \"$(bash scripts/ci-services.sh)\")"
        if os.environ.get("INERTIA_REQUIRE_SERVICES") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return value


@pytest.fixture
def postgres_url() -> str:
    """URL of a PostgreSQL server where the test may create databases."""
    return _service("INERTIA_TEST_POSTGRES", "PostgreSQL")


@contextlib.contextmanager
def scratch_database(server: str) -> Iterator[tuple[str, object]]:
    """A new, empty PostgreSQL database on ``server``, dropped afterwards (its connections cut):
    yields its URL and an autocommit cursor of ``server`` (to alter the database while a test runs)."""
    import psycopg2

    name = f"inertia_test_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(server)
    admin.autocommit = True
    cursor = admin.cursor()
    cursor.execute(f"CREATE DATABASE {name}")
    try:
        yield server.rsplit("/", 1)[0] + f"/{name}", cursor
    finally:
        cursor.execute(f"ALTER DATABASE {name} ALLOW_CONNECTIONS true")
        cursor.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.close()


@pytest.fixture
def chromium() -> tuple[str, str]:
    """Paths of the Chromium binary and its ChromeDriver."""
    browser = _service("INERTIA_CHROMIUM", "Chromium", shutil.which("chromium"))
    driver = _service("INERTIA_CHROMEDRIVER", "ChromeDriver", shutil.which("chromedriver"))
    return browser, driver


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """One intra-op torch thread for each worker's session (module fixtures included): the suite's tensors are
    small, and OpenMP threads that wait on each other on a busy machine make small operations many times
    slower (Muon's bfloat16 Newton-Schulz of a 3 x 5 matrix: 45 us a call on one thread, ~20 ms on two
    under load). A test that needs more threads sets them and restores the count, as the library's own
    choice (inertia.threads) does."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def close_figures():
    """The figures a test drew are closed after it (pyplot keeps every figure until it is closed)."""
    yield
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        pyplot.close("all")
