"""Benchmark: a search that learns against the full grid, in best found and compute spent.

On MNIST-1D (MLP, batch 100, 2000 steps, one 20 % holdout), in one run:

1. ``grid``: the README's 8 x 8 grid (lr 1e-3..1 x momentum 0..0.995), the named baseline;
2. ``tpe``: Optuna's TPE with a budget of 32 configurations over the same ranges
   (lr log-uniform, momentum uniform in log(1 - momentum));
3. ``successive halving``: the grid, pruned stacked at rungs eval_every x 3**k.

Each configuration is scored at its best evaluation point (early stopping). Compute is counted
in member-steps: a configuration's steps until it finished, was pruned or diverged, times its
folds and seeds. Prints a table and writes JSON (``--json``, default
benchmarks/results/search_speed.json).

    python benchmarks/search_speed.py            # the full benchmark
    python benchmarks/search_speed.py --quick    # smoke run: digits, 100 steps
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _results import write_json  # noqa: E402

import inertia  # noqa: E402


def member_steps(records: list[dict], folds: int, seeds: int) -> int:
    """Steps trained by every configuration (until it finished, was pruned or diverged) x folds x seeds."""
    total = 0
    for r in records:
        stop = r.get("pruned_step") if r["status"] == "pruned" else r.get("diverged_step")
        total += int(stop or r["steps"])
    return total * folds * seeds


def run(name: str, settings: dict, common: dict) -> dict:
    started = time.time()
    res = inertia.sweep(**common, **settings)
    seconds = time.time() - started
    best = res.best or {}
    return {"method": name, "settings": {k: str(v) for k, v in settings.items()}, "configurations": len(res),
            "member_steps": member_steps(res.records(), common.get("folds", 1), common.get("seeds", 1)),
            "seconds": seconds, "best": {k: best.get(k) for k in ("lr", "momentum", "best_step")},
            "val_loss": best.get("val_loss_mean"), "val_accuracy": best.get("val_accuracy_mean"),
            "test_accuracy": best.get("test_accuracy_mean"), "counts": res.counts()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="digits, 100 steps: a smoke run")
    parser.add_argument("--metric", default="val_loss", choices=("val_loss", "val_accuracy"))
    parser.add_argument("--seeds", type=int, default=1, help="seeds per configuration (default 1)")
    parser.add_argument("--json", default=str(Path(__file__).parent / "results" / "search_speed.json"))
    args = parser.parse_args(argv)
    common = dict(data="digits" if args.quick else "mnist1d", model="mlp", steps=100 if args.quick else 2000,
                  lr="1e-3:1:8", momentum=(0, 0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995), metric=args.metric,
                  eval_every=10 if args.quick else 100, seeds=args.seeds)
    rows = [run("grid", {}, common),
            run("tpe", dict(sampler="tpe", trials=32), common),
            run("successive halving", dict(pruner="successive_halving"), common)]
    base = rows[0]["member_steps"]
    print(f"{'method':<20} {'configs':>7} {'member-steps':>13} {'x grid':>7} {'s':>6} "
          f"{'lr':>8} {'mu':>6} {'step':>5} {'val loss':>8} {'val acc':>7} {'test acc':>8}")
    for r in rows:
        b = r["best"]
        print(f"{r['method']:<20} {r['configurations']:>7} {r['member_steps']:>13} "
              f"{r['member_steps'] / base:>7.2f} {r['seconds']:>6.1f} {b['lr'] or 0:>8.4g} {b['momentum'] or 0:>6.4g} "
              f"{b['best_step'] or 0:>5} {r['val_loss'] or 0:>8.4f} {100 * (r['val_accuracy'] or 0):>6.1f}% "
              f"{100 * (r['test_accuracy'] or 0):>7.1f}%")
    write_json({"benchmark": "search_speed", "baseline": "grid", "common": {k: str(v) for k, v in common.items()},
                "rows": rows}, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
