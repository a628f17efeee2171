"""A sweep's size as users type it: grid values (``1e-3:1:8``, ``0,0.9``) and trial counts, read and
bounded without torch.

The command line checks a sweep's value options and ``--trials`` with these before it imports torch
(seconds), so a grid too large for this machine, or a search too long to store, is refused in one line
at once; :mod:`inertia.sweeps.specs` checks every sweep with the same functions.
"""
from __future__ import annotations

import math

GRID_POINT_BYTES = 4096
"""Rough bytes one grid point costs before training (its configuration, its trial in the storage)."""


def ram_budget() -> int:
    """Bytes a sweep may use on the CPU: 25 % of available RAM (``MemAvailable`` of ``/proc/meminfo``;
    2 GiB where there is none)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024 // 4
    except OSError:
        pass
    return 2 * 1024**3


def size_text(n: float) -> str:
    """Bytes for people: ``381.5 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def check_points(points: int, what: str) -> None:
    """Refuse ``points`` configurations (a grid or an axis of it) whose bookkeeping alone
    (:data:`GRID_POINT_BYTES` each) would not fit in 4x the RAM budget, before any is built."""
    need, have = points * GRID_POINT_BYTES, 4 * ram_budget()
    if need > have:
        raise ValueError(f"{what}: {points:,} points would need about {size_text(need)} before training, and "
                         f"{size_text(have)} of memory is available; give fewer")


def parse_values(text: str, name: str = "value") -> list[float]:
    """``"1e-3:1:8"`` -> 8 log-spaced values from 1e-3 to 1 (linear if a bound is <= 0); ``"0,0.9"`` -> list."""
    text = str(text).strip()
    try:
        if ":" in text:
            parts = text.split(":")
            if len(parts) != 3:
                raise ValueError
            start, stop, count = float(parts[0]), float(parts[1]), int(parts[2])
            if count < 1:
                raise ValueError(f"{name}: the count in start:stop:count must be >= 1, got {count}")
            check_points(count, f"{name} {text}")
            if count == 1:
                return [start]
            if start > 0 and stop > 0:
                a, b = math.log10(start), math.log10(stop)
                return [10 ** (a + (b - a) * i / (count - 1)) for i in range(count)]
            return [start + (stop - start) * i / (count - 1) for i in range(count)]
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError as error:
        if str(error).startswith(name):
            raise
        raise ValueError(f"{name}: expected start:stop:count (log-spaced) or a comma list of numbers, got {text!r}") from None


def check_grid_size(sizes: dict[str, int]) -> None:
    """Refuse a grid whose axes (name -> number of values) multiply to more points than :func:`check_points` takes."""
    check_points(math.prod(sizes.values()), f"the grid {' x '.join(str(n) for n in sizes.values())}")


MAX_TRIALS = 1_000_000
"""The most trials a random or TPE search asks for (a study of more takes minutes to open and tell)."""


def check_trials(trials: int) -> None:
    """Refuse a random or TPE search of more than :data:`MAX_TRIALS` trials."""
    if trials > MAX_TRIALS:
        raise ValueError(f"trials must be at most {MAX_TRIALS:,} (each is a row of the study, a random "
                         f"search's drawn when it opens), got {trials:,}")
