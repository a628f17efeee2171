"""Benchmark: a 16-configuration GRU sweep trained at once, against the same runs one after another.

MNIST-1D read as sequences of 40 steps of one value, ``examples/sequences.py``'s GRUClassifier
(one GRU layer of 32, a linear head), batch 100, ``--steps`` steps, lr 4 values log-spaced
1e-2..1 x momentum 0, 0.5, 0.9, 0.99:

1. ``inertia.sweep``: all 16 at once (the GRU as batched matrix products, ``sweeps/recurrent.py``);
2. a plain loop: 16 models one after another, each ``nn.GRU`` with ``torch.optim.SGD``, the same
   initialization and minibatches as the sweep's members (so the same numbers up to rounding), each
   measured on the validation part and the test set, as the sweep measures its members.

With ``--fallback`` the model is :class:`ItemizedGRU`, which reads a number off its input with
``.item()``: ``torch.vmap`` cannot batch it, so the sweep trains its members one after another (backend
``loop``), and the bar is that it is never slower than the plain loop.

Each method runs ``--repeats`` times, interleaved (sweep, loop, sweep, loop, ...), each in a fresh
process with ``OMP_NUM_THREADS`` at ``--threads`` (default 1: both methods on one core; the loop under
torch's default of one thread per core measures oversubscription on a busy machine, 187 s against 13 s
in one run, not the method). ``--threads 0`` leaves it unset: each method as a user runs it, the loop
on torch's default threads and the sweep on its own choice (one lane per core). The table gives every
run and the median ratio, and the JSON file keeps them all.

    python benchmarks/gru_sweep.py                    # 300 steps, 3 repeats
    python benchmarks/gru_sweep.py --fallback --steps 100   # the loop backend against the plain loop
    python benchmarks/gru_sweep.py --steps 30 --repeats 1   # smoke run
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LRS = [0.01, 0.0464, 0.215, 1.0]
MOMENTA = [0.0, 0.5, 0.9, 0.99]


def sequences():
    from inertia.data import as_dataset, load_dataset

    data = load_dataset("mnist1d")
    return as_dataset((data.x_train.unsqueeze(-1), data.y_train, data.x_test.unsqueeze(-1), data.y_test),
                      name="mnist1d-sequences")


def gru_class(fallback: bool) -> type:
    from examples.sequences import GRUClassifier

    class ItemizedGRU(GRUClassifier):
        """The GRU classifier, reading its input's largest magnitude with ``.item()`` (vmap cannot batch it)."""

        def forward(self, x):
            return super().forward(x / max(1.0, x.abs().max().item()))

    return ItemizedGRU if fallback else GRUClassifier


def run_sweep(steps: int, fallback: bool = False) -> dict:
    import inertia

    data = sequences()   # loaded before the clock starts, as the loop's is
    started = time.perf_counter()
    results = inertia.sweep(data, gru_class(fallback), lr=LRS, momentum=MOMENTA, steps=steps, seeds=1,
                            eval_every=steps)
    best = results.best
    return {"seconds": time.perf_counter() - started, "backend": results.meta.get("backend"),
            "best": {"lr": best["lr"], "momentum": best["momentum"], "val_accuracy": best["val_accuracy_mean"]}}


def run_loop(steps: int, fallback: bool = False) -> dict:
    """Each configuration alone with torch.optim.SGD, on the sweep's folds, batches and initialization;
    measured as the sweep measures it: on the validation part and the test set."""
    import torch

    from inertia.pipeline import batch_at, make_folds

    model_class = gru_class(fallback)
    data = sequences()
    train_idx, val_idx = make_folds(len(data.y_train), 1, 0)[0]
    started, best = time.perf_counter(), None
    for lr in LRS:
        for momentum in MOMENTA:
            torch.manual_seed(0)
            model = model_class(classes=data.classes, input_shape=data.input_shape)
            opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
            for step in range(steps):
                rows = batch_at(train_idx, step, 100, 0, 0)
                loss = torch.nn.functional.cross_entropy(model(data.x_train[rows]), data.y_train[rows])
                opt.zero_grad()
                loss.backward()
                opt.step()
            model.eval()
            with torch.no_grad():
                accuracy = float((model(data.x_train[val_idx]).argmax(1) == data.y_train[val_idx]).float().mean())
                model(data.x_test)
            if best is None or accuracy > best["val_accuracy"]:
                best = {"lr": lr, "momentum": momentum, "val_accuracy": accuracy}
    return {"seconds": time.perf_counter() - started, "best": best}


def child(method: str, steps: int, fallback: bool, threads: int) -> dict:
    """One run in a fresh process (imports and data set-up not timed)."""
    code = (f"import json, sys; sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / 'src')!r}, {str(ROOT / 'benchmarks')!r}];"
            f"import gru_sweep; print(json.dumps(gru_sweep.run_{method}({steps}, {fallback})))")
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=ROOT, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fallback", action="store_true", help="a GRU that vmap cannot batch (backend loop)")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of both methods' processes; "
                        "0: unset, each method's defaults (torch's threads for the loop, the sweep's lanes)")
    parser.add_argument("--json", default=None, help="default: benchmarks/results/gru_sweep[_fallback][_defaults].json")
    args = parser.parse_args()
    name = "gru_sweep" + ("_fallback" if args.fallback else "") + ("_defaults" if args.threads == 0 else "")
    args.json = args.json or str(ROOT / "benchmarks" / "results" / f"{name}.json")
    runs: dict[str, list[dict]] = {"sweep": [], "loop": []}
    for _ in range(args.repeats):
        for method in ("sweep", "loop"):
            runs[method].append(child(method, args.steps, args.fallback, args.threads))
            print(f"{method}: {runs[method][-1]['seconds']:.1f} s", flush=True)
    sweep = statistics.median(r["seconds"] for r in runs["sweep"])
    loop = statistics.median(r["seconds"] for r in runs["loop"])
    print(f"\n| method | runs (s) | median (s) | best (lr, μ, val acc) |\n| --- | --- | --- | --- |")
    for method, median in (("sweep", sweep), ("loop", loop)):
        best = runs[method][-1]["best"]
        seconds = ", ".join(f"{r['seconds']:.1f}" for r in runs[method])
        print(f"| {method} | {seconds} | {median:.1f} | "
              f"{best['lr']}, {best['momentum']}, {100 * best['val_accuracy']:.1f} % |")
    print(f"\nspeed-up of the sweep (backend {runs['sweep'][-1]['backend']}) over the loop: {loop / sweep:.2f}x")
    from _results import write_json

    write_json({"steps": args.steps, "fallback": args.fallback, "threads": args.threads, "backend": runs["sweep"][-1]["backend"],
                "configurations": len(LRS) * len(MOMENTA), "runs": runs,
                "median_seconds": {"sweep": sweep, "loop": loop}, "speedup": loop / sweep,
                "machine": {"processor": platform.processor(), "python": platform.python_version()}}, args.json)


if __name__ == "__main__":
    main()
