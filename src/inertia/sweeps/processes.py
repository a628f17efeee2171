"""Who holds a trial or a checkpoint: a process named ``host:pid:start``, and whether it still runs.

``start`` is the process's start time (Linux ``/proc``), so a reused PID is not taken for the
process that died. A process on another machine cannot be checked from here: it counts as alive
(its trials go stale by their heartbeats instead).
"""
from __future__ import annotations

import os
import socket
from functools import lru_cache


def host() -> str:
    """This machine's name, usable inside a file name."""
    return socket.gethostname().replace("-", "_").replace(".", "_").replace(":", "_")


def _start_time(pid: int) -> str | None:
    """The start time of process ``pid`` (clock ticks since boot), None when it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else fields[19]


@lru_cache(maxsize=None)
def _me(pid: int) -> str:
    return f"{host()}:{pid}:{_start_time(pid) or 0}"


def me() -> str:
    """This process, as ``host:pid:start``."""
    return _me(os.getpid())


def alive(holder: str | None) -> bool:
    """Does the process ``holder`` (``host:pid:start``) still run? Other machines' count as alive."""
    try:
        where, pid, start = str(holder).rsplit(":", 2)
        pid = int(pid)
    except ValueError:
        return False
    if where != host():
        return True
    if pid <= 0:
        return False
    if os.path.exists("/proc/self/stat"):
        now = _start_time(pid)
        return now is not None and (start == "0" or now == start)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
