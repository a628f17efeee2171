"""Benchmark: the README's sweep (8 x 8 grid, MNIST-1D MLP) with two revisions of inertia, interleaved.

For a change that must not make sweeps slower or bigger: the same at-once sweep as
``sweep_speed.py`` runs with the source tree of ``--base`` (a git revision, exported
with ``git archive``) and with the working tree's ``src/``, alternately, each run in
a fresh Python process (imports and data set-up not timed). Reports wall time
(median), peak resident memory (the run's process and its forked lanes, the larger),
the run's own process's peak anonymous memory (what it allocated) and file-backed
memory (pages of torch's libraries it ran: shared, clean, not allocated), sampled every
10 ms, and the best configuration with its test accuracy, which must agree.

    python benchmarks/sweep_ab.py --base 7c20d03            # 3 interleaved pairs, 2000 steps
    python benchmarks/sweep_ab.py --base 7c20d03 --head-settings '{"seeds": 1, "metric": "val_loss", "select": "final", "eval_every": 2000}'
    python benchmarks/sweep_ab.py --base HEAD~3 --quick     # smoke run: 60 steps
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _results import write_json

ROOT = Path(__file__).resolve().parent.parent

TASK = r"""
import json, resource, sys, threading, time
import torch
import inertia
from inertia.data import load_dataset
steps = int(sys.argv[1])
EXTRA = json.loads(sys.argv[2])
lrs = [10 ** (-3 + 3 * i / 7) for i in range(8)]
momenta = [0.0, 0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995]
load_dataset("mnist1d", seed=0)
kinds = {"RssAnon": 0, "RssFile": 0}
def sample():
    while True:
        for line in open("/proc/self/status"):
            key, _, value = line.partition(":")
            if key in kinds:
                kinds[key] = max(kinds[key], int(value.split()[0]))
        time.sleep(0.01)
threading.Thread(target=sample, daemon=True).start()
start = time.perf_counter()
results = inertia.sweep("mnist1d", "mlp", lr=lrs, momentum=momenta, steps=steps, **EXTRA)
seconds = time.perf_counter() - start
best = results.best
peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
print(json.dumps({"seconds": seconds, "peak_mib": peak / 1024, "anon_mib": kinds["RssAnon"] / 1024,
                  "file_mib": kinds["RssFile"] / 1024, "lr": best["lr"], "momentum": best["momentum"],
                  "test_accuracy": best["test_accuracy_mean"], "matmul": results.meta.get("matmul")}))
"""


def export(revision: str, into: Path) -> Path:
    """The ``src/`` tree of ``revision``, unpacked under ``into``."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision, "src"], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into / "src"


def run_once(src: Path, steps: int, settings: dict) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src)}
    out = subprocess.run([sys.executable, "-c", TASK, str(steps), json.dumps(settings)], env=env, check=True,
                         capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="git revision to compare the working tree's src/ against")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved pairs of runs (default 3)")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--quick", action="store_true", help="smoke run: 60 steps, 1 pair")
    parser.add_argument("--head-settings", default="{}", metavar="JSON",
                        help="keywords for the working tree's sweep only (to hold the work equal to the base's, "
                             "e.g. settings the base does not have)")
    parser.add_argument("--json", default="benchmarks/results/sweep_ab.json")
    args = parser.parse_args(argv)
    steps, repeats = (60, 1) if args.quick else (args.steps, args.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        sources = {"base": export(args.base, Path(tmp)), "head": ROOT / "src"}
        runs: dict[str, list[dict]] = {"base": [], "head": []}
        for i in range(repeats):
            for name in (("base", "head") if i % 2 == 0 else ("head", "base")):
                runs[name].append(run_once(sources[name], steps, json.loads(args.head_settings) if name == "head" else {}))
                r = runs[name][-1]
                print(f"{name}: {r['seconds']:.2f} s, {r['peak_mib']:.0f} MiB (anonymous {r['anon_mib']:.1f}, "
                      f"file {r['file_mib']:.1f}), best lr {r['lr']:.4g} "
                      f"momentum {r['momentum']:g}, test accuracy {r['test_accuracy']:.4f} ({r['matmul']})", flush=True)
    summary = {name: {"median_seconds": statistics.median(r["seconds"] for r in rs),
                      "max_peak_mib": max(r["peak_mib"] for r in rs),
                      "max_anon_mib": max(r["anon_mib"] for r in rs),
                      "max_file_mib": max(r["file_mib"] for r in rs)} for name, rs in runs.items()}
    ratio = summary["head"]["median_seconds"] / summary["base"]["median_seconds"]
    print(f"\n{'revision':<10}{'median s':>10}{'peak MiB':>10}{'anon MiB':>10}{'file MiB':>10}")
    for name, s in summary.items():
        print(f"{name:<10}{s['median_seconds']:>10.2f}{s['max_peak_mib']:>10.0f}{s['max_anon_mib']:>10.1f}"
              f"{s['max_file_mib']:>10.1f}")
    print(f"head / base time: {ratio:.3f}")
    write_json({"base": args.base, "steps": steps, "head_settings": json.loads(args.head_settings), "runs": runs,
                "summary": summary, "time_ratio": ratio}, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
