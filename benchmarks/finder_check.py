"""Check: the range test's suggestion and the stability edge against what a sweep finds.

On each data set (MLP, momentum 0, 0.9, 0.99):

1. ``inertia.find`` once per seed (``--finder-seeds``, one seed a run): its suggested lr range per
   momentum, where the ramp diverged, λ_max at initialization and along the ramp;
2. ``inertia.sweep`` over ``--lrs`` learning rates (log-spaced ``--lr-range``) x the same momenta,
   ``--steps`` steps, ``--seeds`` seeds, with ``edge=True`` (λ_max at initialization of its own seeds).

Per momentum, the table gives (a) the sweep's best lr (by validation accuracy) and in how many finder
runs it lies inside the suggested range (and the median distance in decades to the range when outside),
and (b) the predicted edge, stable_lr from λ_max at initialization (the sweep's) and from the largest
λ_max the ramp met before it diverged (the finder's, median over runs), against the smallest lr at
which the sweep's configurations diverged (loss non-finite or above 10x its first value).

    python benchmarks/finder_check.py                           # both data sets, 5 finder runs
    python benchmarks/finder_check.py --data digits --finder-seeds 1 --lrs 6 --steps 50   # smoke run
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import time
from pathlib import Path

from _results import write_json

ROOT = Path(__file__).resolve().parents[1]
MOMENTA = (0.0, 0.9, 0.99)


def finder_runs(data: str, seeds: int) -> list[dict]:
    """One range test per seed: its range, divergence and edges per momentum."""
    import inertia
    from inertia.sharpness import stable_lr

    runs = []
    for seed in range(seeds):
        started = time.perf_counter()
        found = inertia.find(data, "mlp", momentum=MOMENTA, seed=seed, seeds=1, device="cpu")
        per = {}
        for i, mu in enumerate(MOMENTA):
            span = found.lr_range(i)
            diverged = found.diverged_at(i)
            seen = [p["momentum"][f"{mu:g}"] for p in found.sharpness_along if f"{mu:g}" in p["momentum"]
                    and (diverged is None or p["lr"] < diverged)]
            top = max(seen) if seen else None
            per[f"{mu:g}"] = {"lr_low": span and span[0], "lr_high": span and span[1], "diverged_at": diverged,
                              "stable_lr_init": found.stable_lr(mu), "sharpness_along_max": top,
                              "stable_lr_along": stable_lr(top, mu, **found.edge) if top and top > 0 else None}
        runs.append({"seed": seed, "seconds": round(time.perf_counter() - started, 1),
                     "sharpness_init": found.sharpness, "momenta": per})
    return runs


def sweep_run(data: str, lrs: list[float], steps: int, seeds: int) -> dict:
    """The sweep over lr x momentum with its edge: best lr and smallest diverged lr per momentum."""
    import inertia

    started = time.perf_counter()
    results = inertia.sweep(data, "mlp", lr=lrs, momentum=MOMENTA, steps=steps, seeds=seeds, edge=True, device="cpu")
    per = {}
    for mu in MOMENTA:
        rows = [r for r in results.ranked() if r["momentum"] == mu]
        diverged = sorted(r["lr"] for r in results.records() if r["momentum"] == mu and r["status"] == "diverged")
        per[f"{mu:g}"] = {"best_lr": rows[0]["lr"] if rows else None,
                          "best_val_accuracy": rows[0]["val_accuracy_mean"] if rows else None,
                          "smallest_diverged_lr": diverged[0] if diverged else None,
                          "stable_lr_init": results.stable_lr(mu)}
    return {"seconds": round(time.perf_counter() - started, 1), "sharpness_init": results.edge["sharpness"],
            "sharpness_per_seed": results.edge["sharpness_per_seed"], "momenta": per}


def _decades(lr: float, low: float, high: float) -> float:
    """0 inside [low, high], else the distance to it in decades."""
    return 0.0 if low <= lr <= high else min(abs(math.log10(lr / low)), abs(math.log10(lr / high)))


def summarize(data: str, runs: list[dict], sweep: dict) -> list[dict]:
    rows = []
    for mu in MOMENTA:
        key = f"{mu:g}"
        best = sweep["momenta"][key]["best_lr"]
        spans = [r["momenta"][key] for r in runs if r["momenta"][key]["lr_low"] is not None]
        distances = [_decades(best, s["lr_low"], s["lr_high"]) for s in spans] if best else []
        along = [r["momenta"][key]["stable_lr_along"] for r in runs if r["momenta"][key]["stable_lr_along"]]
        ramp = [r["momenta"][key]["diverged_at"] for r in runs if r["momenta"][key]["diverged_at"]]
        rows.append({"data": data, "momentum": mu, "best_lr": best,
                     "ranges": [(s["lr_low"], s["lr_high"]) for s in spans],
                     "inside": sum(d == 0 for d in distances), "runs": len(spans),
                     "median_decades_off": statistics.median(distances) if distances else None,
                     "stable_lr_init": sweep["momenta"][key]["stable_lr_init"],
                     "stable_lr_along": statistics.median(along) if along else None,
                     "ramp_diverged_at": statistics.median(ramp) if ramp else None,
                     "sweep_smallest_diverged_lr": sweep["momenta"][key]["smallest_diverged_lr"]})
    return rows


def _g(value) -> str:
    return "-" if value is None else f"{value:.3g}"


def print_table(rows: list[dict]) -> None:
    print(f"{'data':<8} {'mu':>5} {'sweep best lr':>13} {'inside':>7} {'off (dec)':>9} {'ranges (median)':>17}  "
          f"{'edge init':>9} {'edge ramp':>9} {'ramp div':>8} {'sweep div':>9}")
    for r in rows:
        lows, highs = [a for a, _ in r["ranges"]], [b for _, b in r["ranges"]]
        span = f"{statistics.median(lows):.2g}-{statistics.median(highs):.2g}" if lows else "-"
        print(f"{r['data']:<8} {r['momentum']:>5g} {_g(r['best_lr']):>13} {r['inside']:>3}/{r['runs']:<3} "
              f"{_g(r['median_decades_off']):>9} {span:>17}  {_g(r['stable_lr_init']):>9} "
              f"{_g(r['stable_lr_along']):>9} {_g(r['ramp_diverged_at']):>8} {_g(r['sweep_smallest_diverged_lr']):>9}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="mnist1d,digits", help="data sets, a comma list")
    parser.add_argument("--finder-seeds", type=int, default=5, help="range tests per data set (seeds 0..N-1)")
    parser.add_argument("--lrs", type=int, default=21, help="learning rates of the sweep")
    parser.add_argument("--lr-range", default="1e-4:10", help="the sweep's lr range, log-spaced")
    parser.add_argument("--steps", type=int, default=500, help="the sweep's steps")
    parser.add_argument("--seeds", type=int, default=3, help="the sweep's seeds")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "finder_check.json"))
    args = parser.parse_args()
    import torch

    low, high = (float(v) for v in args.lr_range.split(":"))
    lrs = [low * (high / low) ** (i / (args.lrs - 1)) for i in range(args.lrs)]
    started, rows, raw = time.perf_counter(), [], {}
    for data in args.data.split(","):
        runs, sweep = finder_runs(data, args.finder_seeds), sweep_run(data, lrs, args.steps, args.seeds)
        raw[data] = {"finder": runs, "sweep": sweep}
        rows += summarize(data, runs, sweep)
    print_table(rows)
    seconds = time.perf_counter() - started
    print(f"took {seconds:.0f} s (load average at the end {os.getloadavg()[0]:.1f})")
    write_json({"settings": vars(args), "lrs": lrs, "momenta": MOMENTA, "rows": rows, "raw": raw,
                "seconds": round(seconds, 1), "load_average_end": os.getloadavg()[0],
                "machine": {"python": platform.python_version(), "torch": torch.__version__,
                            "cores": os.cpu_count()}}, args.out)


if __name__ == "__main__":
    main()
