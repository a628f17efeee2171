"""Benchmark: what exact reproduction costs. ``inertia.fit`` (behind ``inertia train``, a sweep's printed
command) trains each model as one member of the sweep's stack, so that it gives the sweep's numbers to the
bit: the sweep's backend computes its loss, gradients and outputs (a vmap'd stack of one is padded to two,
as the sweep pads it) and the rule runs on its simple path. The baseline is a plain PyTorch loop on the same
data and minibatches: the model's own forward (``nn.LSTM``'s fused kernel, ...), autograd, ``torch.optim.SGD``.

Models, ``--steps`` steps of batch 100, lr 0.1, momentum 0.9, one seed, one intra-op thread for both:
``mlp`` on MNIST-1D (the sweep's batched backend), ``examples.dropout:DropoutMLP``, ``examples.sequences``'s
GRU and LSTM on MNIST-1D read as sequences, and its token Transformer on the digits as integer tokens (vmap).
Each method runs ``--repeats`` times, interleaved, each in a fresh process (imports and data not timed).

    python benchmarks/fit_cost.py                       # 300 steps, 3 repeats
    python benchmarks/fit_cost.py --steps 20 --repeats 1   # smoke run
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
MODELS = {"mlp": "mlp", "dropout": "examples.dropout:DropoutMLP", "gru": "examples.sequences:GRUClassifier",
          "lstm": "examples.sequences:LSTMClassifier", "transformer": "examples.sequences:TokenTransformer"}
HYPER = {"lr": 0.1, "momentum": 0.9}


def dataset(case: str):
    """The case's data as :func:`inertia.data.as_dataset` gives it to ``fit``."""
    import numpy as np
    from inertia.data import as_dataset, load_dataset

    if case == "transformer":
        from sklearn.datasets import load_digits

        digits = load_digits()
        return as_dataset((digits.data.astype(np.int64), digits.target), seed=0)
    data = load_dataset("mnist1d")
    if case in ("gru", "lstm"):
        return as_dataset((data.x_train.unsqueeze(-1), data.y_train, data.x_test.unsqueeze(-1), data.y_test))
    return data


def run_fit(case: str, steps: int) -> float:
    import inertia

    data = dataset(case)
    started = time.perf_counter()
    inertia.fit(data, MODELS[case], hyper=HYPER, steps=steps, device="cpu")
    return time.perf_counter() - started


def run_plain(case: str, steps: int) -> float:
    """The model's own forward, autograd and torch.optim.SGD on fit's split and minibatches, then its
    outputs on the validation part, the test set and the training part (what ``fit`` measures)."""
    import torch

    from inertia.models import model_factory
    from inertia.pipeline import batch_at, make_folds

    data = dataset(case)
    train, val = make_folds(len(data.y_train), 1, 0)[0]
    x, x_test = (data.x_train, data.x_test) if case == "transformer" else (data.x_train.float(), data.x_test.float())
    started = time.perf_counter()
    torch.manual_seed(0)
    model = model_factory(MODELS[case], data, None)()
    opt = torch.optim.SGD(model.parameters(), **HYPER)
    for step in range(steps):
        rows = batch_at(train, step, 100, 0, 0)
        loss = torch.nn.functional.cross_entropy(model(x[rows]), data.y_train[rows])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        for part in (x[val], x_test, x[train]):
            model(part)
    return time.perf_counter() - started


def child(method: str, case: str, steps: int) -> float:
    code = (f"import sys; sys.path[:0] = [{str(ROOT)!r}, {str(ROOT / 'src')!r}, {str(ROOT / 'benchmarks')!r}];"
            f"import fit_cost; print(fit_cost.run_{method}({case!r}, {steps}))")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=ROOT, env=env)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "fit_cost.json"))
    args = parser.parse_args()
    runs = {case: {"fit": [], "plain": []} for case in MODELS}
    for _ in range(args.repeats):
        for case in MODELS:
            for method in ("fit", "plain"):
                runs[case][method].append(child(method, case, args.steps))
            print(f"{case}: fit {runs[case]['fit'][-1]:.2f} s, plain {runs[case]['plain'][-1]:.2f} s", flush=True)
    print("\n| model | fit runs (s) | plain loop runs (s) | median ratio |\n| --- | --- | --- | --- |")
    ratios = {}
    for case, both in runs.items():
        ratios[case] = statistics.median(both["fit"]) / statistics.median(both["plain"])
        print(f"| {case} | {', '.join(f'{s:.2f}' for s in both['fit'])} | "
              f"{', '.join(f'{s:.2f}' for s in both['plain'])} | {ratios[case]:.2f} |")
    from _results import write_json

    write_json({"steps": args.steps, "hyper": HYPER, "runs": runs, "median_ratio": ratios,
                "machine": {"processor": platform.processor(), "cores": os.cpu_count(),
                            "python": platform.python_version()}}, args.json)


if __name__ == "__main__":
    main()
