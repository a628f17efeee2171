"""Self-contained interactive HTML reports (inline CSS/JS, data as inline JSON, images as data: URIs).

- :func:`write_race_report` — a race with learning-rate and momentum sliders for every raced
  optimizer that has both; every trajectory the sliders can show is precomputed by the race
  engine (no update maths in JavaScript; the page only picks a stored path and draws it).
- :func:`write_sweep_report` — a sweep's lr × momentum heatmap (diverged cells marked,
  hover/click shows the loss curve) and a table of the best configurations.

The pages load nothing from the network and open from ``file://``.
"""
from __future__ import annotations

from .race import write_race_report
from .sweep import write_sweep_report

__all__ = ["write_race_report", "write_sweep_report"]
