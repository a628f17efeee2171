"""Benchmark: how fast a killed sweep resumes, and what a 64 x 64 grid's storage bookkeeping costs.

1. Resume: the sweep of ``inertia.sweep('mnist1d', 'mlp', lr=[1e-3, 1e-2], momentum=[0, 0.9, 0.99])``
   is SIGKILLed in a process of its own right after its second checkpoint (every 0.2 s); the rerun (in this
   process, imports warm) resumes it. Its speed, in configuration-steps per second of what was
   left, is compared with a fresh run of the same sweep in a new folder. Also timed: the same
   sweep at 100 steps with ``parallel=1`` and ``parallel=2`` (a lone stack in the main process).
2. Bookkeeping: a 64 x 64 grid (digits, MLP) trained for 1 step into an ``--out`` folder (SQLite);
   the time spent in each operation of :class:`inertia.sweeps.study.Study` is measured by wrapping
   it; training is what is left (:func:`sweep_bookkeeping.bookkeeping`).

Prints a table and writes JSON (``--json``, default benchmarks/results/sweep_resilience.json).

    python benchmarks/sweep_resilience.py            # ~5 min on 2 cores
    python benchmarks/sweep_resilience.py --quick    # smoke run: a 16 x 16 grid, fewer steps
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from _results import write_json
from sweep_bookkeeping import bookkeeping

import inertia

GRID = dict(lr=[1e-3, 1e-2], momentum=[0, 0.9, 0.99])
KILL_AFTER_SECOND_CHECKPOINT = r'''
import os, signal, sys
import inertia.sweeps.checkpoints as ck
saves, original = [0], ck.Checkpoints.save
def save(self, members, path):
    original(self, members, path)
    saves[0] += 1
    if saves[0] == 2:
        os.killpg(os.getpgid(0), signal.SIGKILL)
ck.Checkpoints.save = save
import inertia
inertia.sweep("mnist1d", "mlp", lr=[1e-3, 1e-2], momentum=[0, 0.9, 0.99], steps=int(sys.argv[2]), out=sys.argv[1],
              checkpoint_every=float(sys.argv[3]))
'''


def resume_speed(steps: int, every: float) -> dict:
    """Configuration-steps per second of a fresh run, and of a rerun over what a killed one left."""
    total = len(GRID["lr"]) * len(GRID["momentum"]) * steps
    with tempfile.TemporaryDirectory() as folder:
        fresh_out, killed_out = Path(folder) / "fresh", Path(folder) / "killed"
        started = time.perf_counter()
        inertia.sweep("mnist1d", "mlp", **GRID, steps=steps, out=fresh_out, checkpoint_every=every)
        fresh = time.perf_counter() - started
        env = {**os.environ, "PYTHONPATH": str(Path(inertia.__file__).parents[1])}
        killed = subprocess.run([sys.executable, "-c", KILL_AFTER_SECOND_CHECKPOINT, str(killed_out), str(steps),
                                 str(every)], env=env, start_new_session=True, capture_output=True, text=True)
        assert killed.returncode == -9, killed.stderr
        with sqlite3.connect(killed_out / "sweep.db") as db:
            complete = db.execute("SELECT count(*) FROM trials WHERE state = 'COMPLETE'").fetchone()[0]
        lines: list[str] = []
        started = time.perf_counter()
        inertia.sweep("mnist1d", "mlp", **GRID, steps=steps, out=killed_out, checkpoint_every=every, log=lines.append)
        resumed = time.perf_counter() - started
    done_in_checkpoints = sum(int(m.group(1)) * int(m.group(2)) for m in (
        re.search(r"resuming (\d+) configurations from step (\d+)", line) for line in lines) if m)
    left = total - complete * steps - done_in_checkpoints
    return {"steps": steps, "fresh_s": fresh, "fresh_rate": total / fresh, "resume_s": resumed,
            "left_config_steps": left, "resume_rate": left / resumed, "ratio": (left / resumed) / (total / fresh),
            "log": [line for line in lines if "resuming" in line]}


def lone_stack(steps: int) -> dict:
    """The issue's example at ``parallel=1`` (a lone stack in the main process) and ``parallel=2``."""
    out = {}
    for parallel in (1, 2):
        started = time.perf_counter()
        inertia.sweep("mnist1d", "mlp", **GRID, steps=steps, parallel=parallel)
        out[f"parallel_{parallel}_s"] = time.perf_counter() - started
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", default="benchmarks/results/sweep_resilience.json")
    args = parser.parse_args()
    steps, side = (400, 16) if args.quick else (2000, 64)
    inertia.sweep("mnist1d", "mlp", **GRID, steps=1)   # warm: imports, the data set, first calls
    resume = resume_speed(steps, every=0.2)
    lone = lone_stack(100)
    books = bookkeeping(side)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"{'resume (mnist1d mlp, 6 configurations, %d steps)' % steps:<58} {'seconds':>8} {'config-steps/s':>15}")
    print(f"{'  fresh run':<58} {resume['fresh_s']:>8.2f} {resume['fresh_rate']:>15.0f}")
    print(f"{'  rerun of a killed run (what was left)':<58} {resume['resume_s']:>8.2f} {resume['resume_rate']:>15.0f}")
    print(f"  resume speed / fresh speed: {resume['ratio']:.2f}")
    print(f"{'the same sweep at 100 steps, parallel=1 / parallel=2':<58} "
          f"{lone['parallel_1_s']:>8.2f} / {lone['parallel_2_s']:.2f}")
    print(f"{'%d x %d grid at 1 step: total / in the study' % (side, side):<58} "
          f"{books['total_s']:>8.1f} / {books['storage_s']:.1f}")
    for name, seconds in books["by_operation_s"].items():
        print(f"  Study.{name:<51} {seconds:>8.2f}")
    write_json({"machine": {"processor": platform.processor(), "cores": os.cpu_count(), "torch": torch.__version__},
                "resume": resume, "lone_stack": lone, "bookkeeping": books}, args.json)


if __name__ == "__main__":
    main()
