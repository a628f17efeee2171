"""Benchmark: what a 64 x 64 grid's storage bookkeeping costs, operation by operation.

The grid (digits, MLP, 4096 configurations) is trained for 1 step into an ``--out`` folder
(SQLite), so almost everything but training is bookkeeping. The time spent in each public
operation of :class:`inertia.sweeps.study.Study` is measured by wrapping it (an operation's
time includes the operations it calls; the total counts each second once), in wall seconds
and in this process's CPU seconds (with forked lanes training beside it, a wall second may be
spent waiting for a core); training is what is left of the whole sweep's wall time.

``--baseline SRC`` also measures another checkout's code (its ``src`` folder, e.g. a
``git worktree`` of main), each measurement in a fresh process, the two sides alternating
``--rounds`` times. Prints a table and writes JSON (``--json``, default
benchmarks/results/sweep_bookkeeping.json).

    python benchmarks/sweep_bookkeeping.py                              # ~1 min on 2 cores
    python benchmarks/sweep_bookkeeping.py --baseline ../main-wt/src    # ~4 min more per round
    python benchmarks/sweep_bookkeeping.py --parallel 1                 # one lane: no training beside the books
    python benchmarks/sweep_bookkeeping.py --side 16                    # smoke run
"""
from __future__ import annotations

import argparse
import collections
import inspect
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _results import write_json

HERE = Path(__file__).resolve().parent


def bookkeeping(side: int, parallel: int | None = None) -> dict:
    """Seconds a ``side`` x ``side`` grid at 1 step spends in each Study operation, and in all
    (``parallel``: the sweep's lanes; None: its default)."""
    import inertia
    from inertia.sweeps import study as _study

    spent: collections.Counter = collections.Counter()   # each operation, with the operations it calls
    cpu: collections.Counter = collections.Counter()     # the same, in this process's CPU seconds
    outermost = [0.0, 0.0, 0]                             # wall and CPU seconds not counted twice; depth
    originals = {name: f for name, f in inspect.getmembers(_study.Study, inspect.isfunction)
                 if not name.startswith("_")}
    for name, original in originals.items():
        def timed(*args, _f=original, _name=name, **kwargs):
            started, started_cpu = time.perf_counter(), time.process_time()
            outermost[2] += 1
            try:
                return _f(*args, **kwargs)
            finally:
                outermost[2] -= 1
                wall, used = time.perf_counter() - started, time.process_time() - started_cpu
                spent[_name] += wall
                cpu[_name] += used
                if outermost[2] == 0:
                    outermost[0] += wall
                    outermost[1] += used

        setattr(_study.Study, name, timed)
    lr = [10 ** (-3 + 3 * i / (side - 1)) for i in range(side)]
    momentum = [0.99 * i / (side - 1) for i in range(side)]
    try:
        with tempfile.TemporaryDirectory() as folder:
            started = time.perf_counter()
            inertia.sweep("digits", "mlp", lr=lr, momentum=momentum, steps=1, out=Path(folder) / "grid",
                          parallel=parallel)
            total = time.perf_counter() - started
    finally:
        for name, f in originals.items():
            setattr(_study.Study, name, f)
    return {"side": side, "total_s": total, "storage_s": outermost[0], "storage_cpu_s": outermost[1],
            "by_operation_s": dict(spent.most_common()), "by_operation_cpu_s": dict(cpu.most_common())}


def measure(src: Path, side: int, parallel: int | None) -> dict:
    """:func:`bookkeeping` of the code in ``src``, in a process of its own (imports warm first)."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    lanes = [] if parallel is None else ["--parallel", str(parallel)]
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--measure", "--side", str(side), *lanes],
                          env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def medians(runs: list[dict]) -> dict:
    """The median of each figure over ``runs``."""
    names = sorted({n for r in runs for n in r["by_operation_s"]})
    out = {key: statistics.median(r[key] for r in runs) for key in ("total_s", "storage_s", "storage_cpu_s")}
    for key in ("by_operation_s", "by_operation_cpu_s"):
        out[key] = {n: statistics.median(r[key].get(n, 0.0) for r in runs) for n in names}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--side", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--parallel", type=int, help="lanes of the sweep (default: the sweep's own)")
    parser.add_argument("--baseline", type=Path, help="another checkout's src folder, measured alternately")
    parser.add_argument("--json", default="benchmarks/results/sweep_bookkeeping.json")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)   # one side, in this process
    args = parser.parse_args()
    if args.measure:
        import inertia

        inertia.sweep("digits", "mlp", lr=[1e-3, 1e-2], momentum=[0, 0.9], steps=1)   # warm: imports, data
        print(json.dumps(bookkeeping(args.side, args.parallel)))
        return
    sides = {"this": HERE.parent / "src"}
    if args.baseline is not None:
        sides = {"baseline": args.baseline.resolve(), **sides}
    runs: dict[str, list[dict]] = {name: [] for name in sides}
    for _ in range(args.rounds):
        for name, src in sides.items():
            runs[name].append(measure(src, args.side, args.parallel))
    figures = {name: medians(r) for name, r in runs.items()}
    import torch

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}; "
          f"{args.side} x {args.side} grid at 1 step, parallel={args.parallel}, median of {args.rounds} round(s); "
          "seconds: wall (CPU of the process)")
    names = list(figures)
    print(f"{'':<30}" + "".join(f"{n:>20}" for n in names))
    print(f"{'whole sweep':<30}" + "".join(f"{figures[n]['total_s']:>20.2f}" for n in names))
    print(f"{'in Study (all operations)':<30}" + "".join(
        f"{figures[n]['storage_s']:>12.2f} ({figures[n]['storage_cpu_s']:5.2f})" for n in names))
    operations = sorted({o for f in figures.values() for o in f["by_operation_s"]},
                        key=lambda o: -max(f["by_operation_s"].get(o, 0.0) for f in figures.values()))
    for op in operations:
        print(f"  Study.{op:<22}" + "".join(
            f"{figures[n]['by_operation_s'].get(op, 0.0):>12.2f} ({figures[n]['by_operation_cpu_s'].get(op, 0.0):5.2f})"
            for n in names))
    write_json({"machine": {"processor": platform.processor(), "cores": os.cpu_count(), "torch": torch.__version__},
                "side": args.side, "parallel": args.parallel, "rounds": args.rounds, "sources": {n: str(s) for n, s in sides.items()},
                "median": figures, "runs": runs}, args.json)


if __name__ == "__main__":
    main()
