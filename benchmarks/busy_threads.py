"""Benchmark: inertia's default threads on a busy machine, against each fixed thread count, in one run.

Two background processes keep two cores busy (a pure-Python loop each, as other users' work does),
then ``inertia train`` (MLP on MNIST-1D, 1200 steps x 3 seeds) and the README's sweep (``--steps``
steps, default 2000) run with inertia's default threads and with ``OMP_NUM_THREADS`` 1 and 2, each
in a fresh process, interleaved in ``--repeats`` rounds (medians). The bar: the default within
1.5x of the best fixed setting.

    python benchmarks/busy_threads.py                 # the README's sweep at 2000 steps
    python benchmarks/busy_threads.py --steps 200     # shorter
    python benchmarks/busy_threads.py --repeats 3     # three interleaved rounds
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _results import write_json

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = {"default": None, "OMP_NUM_THREADS=1": "1", "OMP_NUM_THREADS=2": "2"}


def _spin() -> None:
    while True:
        pass


def _timed(command: list[str], threads: str | None) -> float:
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env["PYTHONPATH"] = str(ROOT / "src")
    if threads is not None:
        env["OMP_NUM_THREADS"] = threads
    started = time.perf_counter()
    subprocess.run(command, check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000, help="steps of the README's sweep")
    parser.add_argument("--repeats", type=int, default=1, help="rounds; each round runs every setting once")
    parser.add_argument("--json", default="benchmarks/results/busy_threads.json")
    args = parser.parse_args()
    inertia = [sys.executable, "-m", "inertia.cli"]
    train = [*inertia, "train", "--data", "mnist1d", "--model", "mlp", "--steps", "1200", "--seeds", "3", "--quiet"]
    spinners = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(2)]
    for p in spinners:
        p.start()
    runs: dict[str, dict[str, list[float]]] = {w: {name: [] for name in SETTINGS} for w in ("train", "sweep")}
    try:
        for round_ in range(args.repeats):
            for name, threads in SETTINGS.items():
                runs["train"][name].append(_timed(train, threads))
                print(f"round {round_ + 1} train {name}: {runs['train'][name][-1]:.1f} s", flush=True)
            for name, threads in SETTINGS.items():
                with tempfile.TemporaryDirectory() as out:
                    sweep = [*inertia, "sweep", "--data", "mnist1d", "--model", "mlp", "--lr", "1e-3:1:8",
                             "--momentum", "0,0.5,0.8,0.9,0.95,0.98,0.99,0.995", "--steps", str(args.steps),
                             "--out", out, "--quiet"]
                    runs["sweep"][name].append(_timed(sweep, threads))
                print(f"round {round_ + 1} sweep {name}: {runs['sweep'][name][-1]:.1f} s", flush=True)
    finally:
        for p in spinners:
            p.terminate()
    print("\n| work (median of rounds) | " + " | ".join(SETTINGS) + " | default / best fixed |\n|---|---|---|---|---|")
    for work, row in runs.items():
        median = {k: statistics.median(v) for k, v in row.items()}
        best = min(v for k, v in median.items() if k != "default")
        cells = " | ".join(f"{median[k]:.1f} s ({', '.join(f'{t:.1f}' for t in row[k])})" for k in SETTINGS)
        print(f"| {work} | {cells} | {median['default'] / best:.2f}x |")
    write_json({"steps": args.steps, "cores": os.cpu_count(), "busy_processes": 2, "seconds": runs}, args.json)


if __name__ == "__main__":
    main()
