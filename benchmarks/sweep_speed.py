"""Benchmark: a learning rate x momentum grid trained at once, against the same runs one by one.

Two workloads (``--workload mlp``, ``cnn``; the default runs both):

- ``mlp``: an 8 x 8 grid on MNIST-1D with the MLP 40-100-100-10 (below);
- ``cnn``: an 8 x 4 grid (lr 1e-3..1 log-spaced x momentum 0, 0.5, 0.9, 0.99) on scikit-learn's
  digits as 1 x 8 x 8 images with ``examples/digits_cnn.py``'s DigitsCNN (two Conv2d + BatchNorm2d
  + ReLU blocks, BatchNorm in train mode), batch 100, ``--cnn-steps`` steps: ``inertia.sweep`` of all
  32 against a plain ``torch.optim.SGD`` loop over them, with the same initializations and batches.
  Its figures also give each method's peak memory (the child process's ``ru_maxrss``; for the sweep,
  also that of its largest forked lane, where the stacks train) and the conv + linear FLOP rate
  against the machine's measured matmul and convolution rates.

Three ways to train the same 64 configurations (MNIST-1D, MLP 40-100-100-10,
batch 100, 2000 steps, one 20 % validation holdout, the same minibatches and the
same initialization for every configuration), in one run:

1. ``inertia.sweep``: all 64 at once (stacked parameters, one rule update; its matrix
   products by OpenBLAS or torch, as :mod:`inertia.sweeps.gemm` chooses for this CPU);
2. a plain loop: 64 models one after another with ``torch.optim.SGD``;
3. Optuna: 64 sequential trials (GridSampler) whose objective is that loop.

The runs of 1 (``--repeats``, median reported) are interleaved with slices of 2,
so both are timed over the same stretch: this machine's speed drifts by 10-20 %
within minutes. Every run and slice has a fresh Python process of its own (its
imports and data set-up not timed), so that none inherits another's state.

The loops stop a run as soon as its loss is NaN/inf or > 10x its first value,
exactly as the sweep does, so every method does the same work. The best
configuration (lowest validation loss) of each is evaluated on the test set.

Prints a table and writes JSON (``--json``, default
benchmarks/results/sweep_speed.json): wall time, speedup against the loop,
achieved GFLOP/s (forward + backward matmul FLOPs actually executed) against the
machine's measured fp32 matmul rate (torch's, and oneDNN's), the best configuration's
test accuracy, and the ceiling: the speedup that the at-once sweep's FLOPs, run at
each measured matmul rate, would give against this loop.

    python benchmarks/sweep_speed.py                   # both workloads
    python benchmarks/sweep_speed.py --workload cnn    # the CNN alone
    python benchmarks/sweep_speed.py --quick           # smoke run: 60 steps (CNN: 20)

The JSON file holds the MLP's figures at its top level (as before) and the CNN's under ``"cnn"``.

``--float64-check`` times nothing: it trains the CNN grid in float64, ``inertia.sweep`` (all at once,
the conv backend) and the plain loop, and prints each configuration's validation loss by both and
their difference (at lr 0.0072, mu 0.99 the float32 sweep once ended at 0.00177 where the loop gave
0.0027-0.0031), beside how far the loop's own result moves when lr changes in its last bit (a
chaotic configuration, near divergence, amplifies any summation order's last bit to visible
differences over 500 steps); JSON to benchmarks/results/sweep_float64.json unless ``--json`` says
otherwise.

    python benchmarks/sweep_speed.py --float64-check   # 500 steps, every configuration
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import os
import platform
import resource
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
import torch.nn.functional as F

from _results import write_json

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # examples/ (a spawned child re-runs this)

LRS = [10 ** (-3 + 3 * i / 7) for i in range(8)]
MOMENTA = [0.0, 0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995]
CNN_MOMENTA = [0.0, 0.5, 0.9, 0.99]
CNN_WIDTH = 16
DIVERGE_FACTOR = 10.0


def matmul_rate(size: int = 1024, seconds: float = 2.0) -> float:
    """Measured fp32 GFLOP/s of a square matmul with torch's current thread count."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    return 2 * size**3 * count / (time.perf_counter() - start) / 1e9


def onednn_matmul_rate(size: int = 1024, seconds: float = 2.0) -> float | None:
    """Measured fp32 GFLOP/s of the same matmul through oneDNN (``mkldnn_linear``), or None without oneDNN.

    torch's own fp32 matmul calls MKL, which takes its AVX2 path on AMD CPUs; oneDNN picks its kernels by
    the CPU's features, AVX-512 included, so on such a CPU this is the faster of the two.
    """
    if not torch.backends.mkldnn.is_available():
        return None
    a, b = torch.randn(size, size).to_mkldnn(), torch.randn(size, size).to_mkldnn()
    torch._C._nn.mkldnn_linear(a, b, None)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch._C._nn.mkldnn_linear(a, b, None)
        count += 1
    return 2 * size**3 * count / (time.perf_counter() - start) / 1e9


def cpu_description() -> str:
    """The CPU's model name and widest vector extension (from /proc/cpuinfo where there is one)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
                 platform.machine())
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    isa = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return f"{model} ({isa})"


def conv_rate(seconds: float = 2.0) -> float:
    """Measured fp32 GFLOP/s of a 3x3 convolution (64 -> 64 channels, 32 x 32, batch 32), forward."""
    x, w = torch.randn(32, 64, 32, 32), torch.randn(64, 64, 3, 3)
    F.conv2d(x, w, padding=1)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        F.conv2d(x, w, padding=1)
        count += 1
    return 2 * 32 * 64 * 32 * 32 * 64 * 9 * count / (time.perf_counter() - start) / 1e9


def layer_macs(model: torch.nn.Module, input_shape: tuple[int, ...]) -> list[int]:
    """Multiply-adds per example of each Conv and Linear layer of ``model``, in the order they run."""
    macs: list[int] = []

    def count(module, inputs, output):
        if isinstance(module, torch.nn.Linear):
            macs.append(module.in_features * module.out_features)
        else:  # a convolution: each output value is in_channels / groups x kernel multiply-adds
            macs.append(output[0].numel() * module.weight[0].numel())

    kinds = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d)
    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, kinds)]
    with torch.no_grad():
        model.eval()(torch.zeros(1, *input_shape))
    for hook in hooks:
        hook.remove()
    return macs


def flops_per_member_step(macs: list[int], batch: int) -> float:
    """Conv/matmul FLOPs of one training step of one model: forward, weight gradients, input gradients
    (none for the first layer), from the layers' multiply-adds per example."""
    return 2.0 * batch * (2 * sum(macs) + sum(macs[1:]))


def mlp_factory(data):
    """The MLP workload's model: the ``mlp`` preset for ``data``."""
    from inertia.models import model_factory

    return model_factory("mlp", data)


def cnn_factory() -> torch.nn.Module:
    """The CNN workload's model: DigitsCNN for 1 x 8 x 8 digits."""
    from examples.digits_cnn import DigitsCNN

    return DigitsCNN(in_channels=1, classes=10, width=CNN_WIDTH)


def train_one(data, train_idx, val_idx, lr, momentum, steps, batch, seed, threads=None, factory=None):
    """One model (``factory()``, default the MLP) with torch.optim.SGD on the sweep's minibatch
    sequence, in train mode; stops on divergence; evaluated in eval mode.

    ``threads``: torch's intra-op threads while it trains (default: as they are).
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(threads or previous)
    try:
        return _train_one(data, train_idx, val_idx, lr, momentum, steps, batch, seed, factory or mlp_factory(data))
    finally:
        torch.set_num_threads(previous)


def _train_one(data, train_idx, val_idx, lr, momentum, steps, batch, seed, factory):
    from inertia.pipeline import batch_at

    torch.manual_seed(seed)
    model = factory().to(data.x_train.device)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    first = None
    done = 0
    for t in range(steps):
        idx = batch_at(train_idx, t, batch, seed, 0)
        loss = F.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
        value = loss.item()
        if first is None:
            first = value
        done = t + 1
        if not math.isfinite(value) or value > DIVERGE_FACTOR * first:
            return {"status": "diverged", "steps_run": done}
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        xv, yv = data.x_train[val_idx], data.y_train[val_idx]
        out = model(xv)
        val_loss = F.cross_entropy(out, yv).item()
        val_acc = (out.argmax(1) == yv).double().mean().item()
        test_acc = (model(data.x_test).argmax(1) == data.y_test).double().mean().item()
    return {"status": "ok", "steps_run": done, "val_loss": val_loss, "val_accuracy": val_acc,
            "test_accuracy": test_acc}


def _rank(r: dict, metric: str) -> tuple:
    """Sort key, best first: the metric, ties to the lower validation loss (as SweepResults ranks)."""
    return (-r["val_accuracy"], r["val_loss"]) if metric == "val_accuracy" else (r["val_loss"],)


def in_fresh_process(task, *args):
    """``task(*args)`` in a new Python process, so that no method's leftovers (threads, caches, the
    allocator's state) touch the next one's timing: a loop run in the process that had just run a
    sweep took 39-46 s where it took 34 s alone (2026-11-30)."""
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(task, *args).result()


def interleaved(at_once, loop, opts: dict, grid: list, repeats: int) -> tuple[list, list]:
    """``repeats`` runs of ``at_once(opts)`` before, between and after slices of ``loop(opts, grid_slice)``
    (so both are timed over the same stretch: this machine's speed drifts by 10-20 % within minutes),
    each in a fresh process: what the at-once runs and the loop's slices returned."""
    repeats = max(1, repeats)
    n_slices = max(1, repeats - 1)
    runs, slices = [in_fresh_process(at_once, opts)], []
    for i in range(n_slices):
        slices.append(in_fresh_process(loop, opts, grid[i * len(grid) // n_slices:(i + 1) * len(grid) // n_slices]))
        if len(runs) < repeats:
            runs.append(in_fresh_process(at_once, opts))
    return runs, slices


def peak_rss_mib() -> float:
    """This process's peak resident memory (``ru_maxrss``, KiB on Linux) in MiB; on a GPU, its peak
    allocated GPU memory instead."""
    if torch.cuda.is_available() and torch.cuda.max_memory_allocated():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_lane_rss_mib() -> float:
    """The peak resident memory in MiB of the largest child process this one has waited for: a CPU
    sweep trains its stacks in forked lanes, whose memory ``peak_rss_mib`` does not see."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def _setup(opts: dict):
    from inertia.data import load_dataset
    from inertia.pipeline import make_folds

    if opts["threads"]:
        torch.set_num_threads(opts["threads"])
    data = load_dataset("mnist1d", seed=opts["seed"])
    return data, *make_folds(len(data.y_train), 1, opts["seed"])[0]


def task_at_once(opts: dict) -> dict:
    """``inertia.sweep`` of the whole grid; its wall time and what the table needs."""
    import inertia

    data, _, _ = _setup(opts)
    start = time.perf_counter()
    res = inertia.sweep(data, "mlp", lr=LRS, momentum=MOMENTA, optimizer="momentum", steps=opts["steps"],
                        batch_size=opts["batch_size"], folds=1, seed=opts["seed"], device="cpu",
                        diverge_factor=DIVERGE_FACTOR, metric=opts["metric"],
                        seeds=1, select="final", eval_every=opts["steps"])   # the loop's work: one seed, end
    wall = time.perf_counter() - start
    steps = opts["steps"]
    best = res.best
    return {"wall_s": wall,
            "member_steps": sum((r["diverged_step"] or steps) if r["status"] == "diverged" else steps
                                for r in res.records()),
            "best": {"lr": best["lr"], "momentum": best["momentum"], "val_loss": best["val_loss_mean"],
                     "val_accuracy": best["val_accuracy_mean"], "test_accuracy": best["test_accuracy_mean"]},
            "diverged": res.counts()["diverged"], "backend": res.meta.get("backend"), "matmul": res.meta.get("matmul")}


def task_loop(opts: dict, grid: list[tuple[float, float]]) -> tuple[float, list[dict]]:
    """torch.optim.SGD over ``grid``, one configuration after another: wall time and records."""
    data, train_idx, val_idx = _setup(opts)
    start = time.perf_counter()
    records = [dict(lr=lr, momentum=mu, **train_one(data, train_idx, val_idx, lr, mu, opts["steps"],
                                                    opts["batch_size"], opts["seed"], opts["loop_threads"]))
               for lr, mu in grid]
    return time.perf_counter() - start, records


def task_optuna(opts: dict) -> tuple[float, list[int], dict, int]:
    """The same loop as Optuna's objective over 64 sequential GridSampler trials."""
    import optuna

    data, train_idx, val_idx = _setup(opts)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    done_steps, extra = [], {}
    metric = opts["metric"]

    def objective(trial):
        lr = trial.suggest_categorical("lr", LRS)
        mu = trial.suggest_categorical("momentum", MOMENTA)
        r = train_one(data, train_idx, val_idx, lr, mu, opts["steps"], opts["batch_size"], opts["seed"],
                      opts["loop_threads"])
        done_steps.append(r["steps_run"])
        if r["status"] != "ok":
            return float("-inf") if metric == "val_accuracy" else float("inf")
        extra[trial.number] = r
        return r["val_accuracy"] if metric == "val_accuracy" else r["val_loss"]

    start = time.perf_counter()
    study = optuna.create_study(sampler=optuna.samplers.GridSampler({"lr": LRS, "momentum": MOMENTA}, seed=0),
                                direction="maximize" if metric == "val_accuracy" else "minimize")
    study.optimize(objective, n_trials=len(LRS) * len(MOMENTA))
    wall = time.perf_counter() - start
    best = min((dict(lr=t.params["lr"], momentum=t.params["momentum"], **extra[t.number])
                for t in study.trials if t.number in extra), key=lambda r: _rank(r, metric))
    return wall, done_steps, best, sum(1 for t in study.trials if not math.isfinite(t.value))


def mlp_workload(args: argparse.Namespace) -> dict:
    """The MLP workload: sweep, loop and Optuna on MNIST-1D; prints its table and returns its figures."""
    steps = args.steps or (60 if args.quick else 2000)
    from inertia.data import load_dataset

    data = load_dataset("mnist1d", seed=args.seed)
    widths = [data.features, 100, 100, data.classes]
    per_step = flops_per_member_step(layer_macs(mlp_factory(data)(), data.input_shape), args.batch_size)
    rate = matmul_rate()
    rate_onednn = onednn_matmul_rate()
    cpu = cpu_description()
    loop_threads = args.loop_threads or torch.get_num_threads()
    print(f"MNIST-1D {data}, MLP {widths}, batch {args.batch_size}, {steps} steps, 8 x 8 grid; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; {cpu}; matmul {rate:.1f} GFLOP/s"
          + (f" (oneDNN {rate_onednn:.1f})" if rate_onednn else ""), flush=True)
    opts = {"steps": steps, "batch_size": args.batch_size, "seed": args.seed, "metric": args.metric,
            "threads": args.threads, "loop_threads": args.loop_threads}
    rows = {}

    grid = [(lr, mu) for lr in LRS for mu in MOMENTA]
    runs, slices = interleaved(task_at_once, task_loop, opts, grid, args.repeats)
    loop_wall, loop = sum(wall for wall, _ in slices), [r for _, part in slices for r in part]
    walls = [r["wall_s"] for r in runs]
    rows["at_once"] = {**runs[-1], "wall_s": statistics.median(walls), "wall_s_runs": walls}
    print(f"at once: {rows['at_once']['wall_s']:.1f} s (median of {', '.join(f'{w:.1f}' for w in walls)}, "
          f"run before, between and after the loop's slices; matrix products by {runs[-1]['matmul']})", flush=True)
    ok = [r for r in loop if r["status"] == "ok"]
    lb = min(ok, key=lambda r: _rank(r, args.metric))
    rows["sequential_sgd"] = {"wall_s": loop_wall, "member_steps": sum(r["steps_run"] for r in loop),
                              "best": {"lr": lb["lr"], "momentum": lb["momentum"], "val_loss": lb["val_loss"],
                                       "val_accuracy": lb["val_accuracy"], "test_accuracy": lb["test_accuracy"]},
                              "diverged": len(loop) - len(ok)}
    print(f"sequential torch.optim.SGD: {loop_wall:.1f} s ({loop_threads} thread{'s' * (loop_threads != 1)})",
          flush=True)

    # 3. Optuna, 64 sequential trials
    if not args.skip_optuna:
        wall, done_steps, ob, diverged = in_fresh_process(task_optuna, opts)
        rows["optuna_sequential"] = {"wall_s": wall, "member_steps": sum(done_steps),
                                     "best": {"lr": ob["lr"], "momentum": ob["momentum"], "val_loss": ob["val_loss"],
                                              "val_accuracy": ob["val_accuracy"],
                                              "test_accuracy": ob["test_accuracy"]},
                                     "diverged": diverged}
        print(f"optuna sequential: {wall:.1f} s", flush=True)

    base = rows["sequential_sgd"]["wall_s"]
    for row in rows.values():
        row["speedup_vs_sequential"] = base / row["wall_s"]
        row["gflops"] = row["member_steps"] * per_step / row["wall_s"] / 1e9
        row["fraction_of_matmul_rate"] = row["gflops"] / rate
    at_acc = rows["at_once"]["best"]["test_accuracy"]
    seq_acc = rows["sequential_sgd"]["best"]["test_accuracy"]
    # the most any implementation doing the at-once sweep's FLOPs at a given matmul rate could reach
    at_once_flops = rows["at_once"]["member_steps"] * per_step
    ceiling = {name: base * r * 1e9 / at_once_flops for name, r in (("matmul", rate), ("onednn", rate_onednn)) if r}
    # the same 64 trainings ran twice one after another (the loop, in slices, and Optuna's trials,
    # in one process): the sweep is also held against the faster of the two
    fastest = min(rows[name]["wall_s"] for name in ("sequential_sgd", "optuna_sequential") if name in rows)
    speedup_vs_fastest = fastest / rows["at_once"]["wall_s"]
    summary = {
        "speedup": rows["at_once"]["speedup_vs_sequential"],
        "speedup_vs_fastest_sequential": speedup_vs_fastest,
        "ceiling_speedup_at_matmul_rate": ceiling["matmul"],
        "ceiling_speedup_at_onednn_rate": ceiling.get("onednn"),
        "required_speedup": 8.0,
        "accuracy_gap_points": abs(at_acc - seq_acc) * 100,
        "passes": min(rows["at_once"]["speedup_vs_sequential"], speedup_vs_fastest) >= 8.0
        and abs(at_acc - seq_acc) * 100 <= 1.0,
    }
    try:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=f"8 x 8 lr x momentum grid, MLP 40-100-100-10, batch {args.batch_size}, {steps} steps")
        for col in ("method", "wall s", "speedup", "GFLOP/s", "% of torch matmul", "best lr", "best mu", "test acc %"):
            table.add_column(col, justify="right")
        for name, row in rows.items():
            b = row["best"]
            table.add_row(name, f"{row['wall_s']:.1f}", f"{row['speedup_vs_sequential']:.2f}x", f"{row['gflops']:.1f}",
                          f"{100 * row['fraction_of_matmul_rate']:.0f}", f"{b['lr']:.3g}", f"{b['momentum']:g}",
                          f"{100 * b['test_accuracy']:.1f}" if b["test_accuracy"] is not None else "-")
        Console().print(table)
    except ImportError:
        print(json.dumps(rows, indent=1))
    print(f"speedup {summary['speedup']:.2f}x, {speedup_vs_fastest:.2f}x against the faster sequential run "
          f"(required >= 8x); best test accuracy gap {summary['accuracy_gap_points']:.2f} points (required <= 1); "
          + ("bar met" if summary["passes"] else "bar NOT met"))
    print(f"ceiling: the at-once sweep's {at_once_flops / 1e12:.2f} TFLOP at torch's measured matmul rate would allow "
          f"at most {ceiling['matmul']:.2f}x against this loop"
          + (f"; at oneDNN's, {ceiling['onednn']:.2f}x" if "onednn" in ceiling else ""))
    payload = {
        "benchmark": "sweep_speed", "command": " ".join([sys.executable.split('/')[-1], *sys.argv]),
        "steps": steps, "batch_size": args.batch_size, "metric": args.metric,
        "loop_threads": loop_threads, "grid": {"lr": LRS, "momentum": MOMENTA},
        "machine": {"cpu": cpu, "cores": os.cpu_count(),
                    "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
                    "matmul_gflops": rate, "onednn_matmul_gflops": rate_onednn},
        "flops_per_member_step": per_step, "methods": rows, "summary": summary,
    }
    return payload


def _cnn_setup(opts: dict):
    from examples.digits_cnn import digits_images
    from inertia.pipeline import make_folds

    if opts["threads"]:
        torch.set_num_threads(opts["threads"])
    data = digits_images(opts["seed"])
    train_idx, val_idx = make_folds(len(data.y_train), 1, opts["seed"])[0]
    device = opts["device"]
    for name in ("x_train", "y_train", "x_test", "y_test"):
        setattr(data, name, getattr(data, name).to(device))
    return data, train_idx, val_idx.to(device)


def task_cnn_at_once(opts: dict) -> dict:
    """``inertia.sweep`` of the CNN grid: wall time, member-steps, best configuration, peak memory."""
    import inertia

    data, _, _ = _cnn_setup(opts)
    start = time.perf_counter()
    res = inertia.sweep(data, cnn_factory, lr=LRS, momentum=CNN_MOMENTA, optimizer="momentum", steps=opts["steps"],
                        batch_size=opts["batch_size"], folds=1, seed=opts["seed"], device=opts["device"],
                        diverge_factor=DIVERGE_FACTOR, metric=opts["metric"], eval_every=opts["steps"],
                        seeds=1, select="final")
    wall = time.perf_counter() - start  # one seed, evaluated once, at the end, as the loop is
    steps, best = opts["steps"], res.best
    return {"wall_s": wall,
            "member_steps": sum((r["diverged_step"] or steps) if r["status"] == "diverged" else steps
                                for r in res.records()),
            "best": {"lr": best["lr"], "momentum": best["momentum"], "val_loss": best["val_loss_mean"],
                     "val_accuracy": best["val_accuracy_mean"], "test_accuracy": best["test_accuracy_mean"]},
            "diverged": res.counts()["diverged"], "backend": res.meta.get("backend"), "peak_rss_mib": peak_rss_mib(),
            "peak_lane_rss_mib": peak_lane_rss_mib()}


def task_cnn_loop(opts: dict, grid: list[tuple[float, float]]) -> tuple[float, list[dict], float]:
    """torch.optim.SGD over the CNN ``grid``, one configuration after another: wall time, records, peak memory."""
    data, train_idx, val_idx = _cnn_setup(opts)
    start = time.perf_counter()
    records = [dict(lr=lr, momentum=mu, **train_one(data, train_idx, val_idx, lr, mu, opts["steps"],
                                                    opts["batch_size"], opts["seed"], opts["loop_threads"],
                                                    cnn_factory))
               for lr, mu in grid]
    return time.perf_counter() - start, records, peak_rss_mib()


def cnn_workload(args: argparse.Namespace) -> dict:
    """The CNN workload: DigitsCNN on 1 x 8 x 8 digits, 32 configurations at once against a loop."""
    steps = args.cnn_steps or (20 if args.quick else 500)
    opts = {"steps": steps, "batch_size": args.batch_size, "seed": args.seed, "metric": args.metric,
            "threads": args.threads, "loop_threads": args.loop_threads, "device": args.device}
    per_step = flops_per_member_step(layer_macs(cnn_factory(), (1, 8, 8)), args.batch_size)
    rates = {"matmul": matmul_rate(), "conv": conv_rate()}
    print(f"digits 1x8x8, DigitsCNN width {CNN_WIDTH}, batch {args.batch_size}, {steps} steps, 8 x 4 grid; "
          f"{torch.get_num_threads()} threads; matmul {rates['matmul']:.1f}, conv {rates['conv']:.1f} GFLOP/s",
          flush=True)
    grid = [(lr, mu) for lr in LRS for mu in CNN_MOMENTA]
    runs, slices = interleaved(task_cnn_at_once, task_cnn_loop, opts, grid, args.repeats)
    loop_wall, records = sum(wall for wall, _, _ in slices), [r for _, part, _ in slices for r in part]
    ok = [r for r in records if r["status"] == "ok"]
    lb = min(ok, key=lambda r: _rank(r, args.metric))
    walls = [r["wall_s"] for r in runs]
    rows = {"at_once": {**runs[-1], "wall_s": statistics.median(walls), "wall_s_runs": walls},
            "sequential_sgd": {"wall_s": loop_wall, "member_steps": sum(r["steps_run"] for r in records),
                               "best": {k: lb[k] for k in ("lr", "momentum", "val_loss", "val_accuracy",
                                                           "test_accuracy")},
                               "diverged": len(records) - len(ok), "peak_rss_mib": max(rss for _, _, rss in slices)}}
    for row in rows.values():
        row["speedup_vs_sequential"] = loop_wall / row["wall_s"]
        row["gflops"] = row["member_steps"] * per_step / row["wall_s"] / 1e9
        row.update({f"fraction_of_{name}_rate": row["gflops"] / rate for name, rate in rates.items()})
    speedup = rows["at_once"]["speedup_vs_sequential"]
    for name, row in rows.items():
        print(f"{name:>15}: {row['wall_s']:7.1f} s  {row['speedup_vs_sequential']:5.2f}x  {row['gflops']:6.1f} GFLOP/s "
              f"({100 * row['fraction_of_conv_rate']:.0f} % of conv, {100 * row['fraction_of_matmul_rate']:.0f} % "
              f"of matmul)  peak {row['peak_rss_mib']:.0f} MiB"
              + (f" (each lane {row['peak_lane_rss_mib']:.0f})" if row.get("peak_lane_rss_mib") else "")
              + f"  best lr {row['best']['lr']:.3g}, "
              f"mu {row['best']['momentum']:g}, test acc {100 * row['best']['test_accuracy']:.1f} %")
    print(f"at once ({runs[-1]['backend']} backend): median of {', '.join(f'{w:.1f}' for w in walls)} s; "
          f"speedup {speedup:.2f}x (required >= 3x "
          f"on CPU) -> " + ("bar met" if speedup >= 3 else "bar NOT met"), flush=True)
    return {"steps": steps, "batch_size": args.batch_size, "device": args.device, "grid": {"lr": LRS, "momentum": CNN_MOMENTA},
            "model": f"DigitsCNN(in_channels=1, classes=10, width={CNN_WIDTH})", "loop_threads":
            args.loop_threads or torch.get_num_threads(), "rates_gflops": rates, "flops_per_member_step": per_step,
            "methods": rows, "summary": {"speedup": speedup, "required_speedup": 3.0, "passes": speedup >= 3}}


LAST_BIT = 1 + 2.0 ** -52
"""The loop is run again with lr times this (lr changed in its last bit): where that moves its own result by
more than :data:`STABLE`, the configuration is chaotic and no two summation orders can agree on it."""
STABLE = 1e-9


def _float64_row(data, train_idx, val_idx, record: dict, lr: float, mu: float, steps: int,
                 args: argparse.Namespace) -> dict:
    """One configuration: the sweep's validation loss, the loop's, their difference, and how far the loop's
    moves when lr changes in its last bit."""
    def loop(rate: float) -> dict:
        return train_one(data, train_idx, val_idx, rate, mu, steps, args.batch_size, args.seed, args.threads,
                         lambda: cnn_factory().double())

    plain, nudged = loop(lr), loop(lr * LAST_BIT)
    row = {"lr": lr, "momentum": mu, "sweep_status": record["status"], "loop_status": plain["status"],
           "sweep_val_loss": record["val_loss_mean"], "loop_val_loss": plain.get("val_loss")}
    if row["sweep_status"] == row["loop_status"] == nudged["status"] == "ok":
        row["abs_difference"] = abs(row["sweep_val_loss"] - row["loop_val_loss"])
        row["loop_last_bit_spread"] = abs(nudged["val_loss"] - row["loop_val_loss"])
        print(f"lr {lr:.4g}, mu {mu:g}: sweep {row['sweep_val_loss']:.17g}, loop {row['loop_val_loss']:.17g}, "
              f"|difference| {row['abs_difference']:.3g} (lr's last bit moves the loop by "
              f"{row['loop_last_bit_spread']:.3g})", flush=True)
    else:
        print(f"lr {lr:.4g}, mu {mu:g}: sweep {row['sweep_status']}, loop {row['loop_status']}", flush=True)
    return row


def float64_check(args: argparse.Namespace) -> dict:
    """The CNN grid trained in float64 by ``inertia.sweep`` (conv backend, every configuration in one call,
    as the benchmark's sweep) and by the plain loop on the same batches and initializations: each
    configuration's validation loss by both, and the largest difference where the configuration is not
    chaotic (:data:`LAST_BIT`)."""
    import inertia

    steps = args.cnn_steps or (20 if args.quick else 500)
    opts = {"steps": steps, "batch_size": args.batch_size, "seed": args.seed, "threads": args.threads,
            "device": args.device}
    data, train_idx, val_idx = _cnn_setup(opts)
    for name in ("x_train", "x_test"):
        setattr(data, name, getattr(data, name).double())
    swept = inertia.sweep(data, cnn_factory, lr=LRS, momentum=CNN_MOMENTA, optimizer="momentum", steps=steps,
                          batch_size=args.batch_size, folds=1, seed=args.seed, device=args.device,
                          diverge_factor=DIVERGE_FACTOR, eval_every=steps, seeds=1, select="final",
                          dtype=torch.float64, backend="conv")
    by_config = {(r["lr"], r["momentum"]): r for r in swept.records()}
    rows = [_float64_row(data, train_idx, val_idx, by_config[lr, mu], lr, mu, steps, args)
            for lr in LRS for mu in CNN_MOMENTA]
    agree = all(r["sweep_status"] == r["loop_status"] for r in rows)
    stable = [r for r in rows if r.get("loop_last_bit_spread", math.inf) < STABLE]
    chaotic = [r for r in rows if r.get("loop_last_bit_spread", 0.0) >= STABLE]
    largest = max(r["abs_difference"] for r in stable)
    print(f"statuses {'all agree' if agree else 'DIFFER'}; {len(stable)} configurations stable to lr's last bit, "
          f"the largest |difference| of their validation loss {largest:.3g}; chaotic (lr's last bit moves the "
          f"loop's own result by {STABLE:g} or more): "
          + (", ".join(f"lr {r['lr']:.4g} mu {r['momentum']:g}" for r in chaotic) or "none"))
    return {"benchmark": "sweep_speed --float64-check", "command": " ".join(["python", *sys.argv]), "steps": steps,
            "batch_size": args.batch_size, "device": args.device,
            "model": f"DigitsCNN(in_channels=1, classes=10, width={CNN_WIDTH})", "configurations": rows,
            "statuses_agree": agree, "max_abs_difference_stable": largest}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workload", default="both", choices=("both", "mlp", "cnn"))
    parser.add_argument("--quick", action="store_true", help="smoke run: 60 steps (CNN: 20)")
    parser.add_argument("--steps", type=int, default=None, help="the MLP's steps (default 2000)")
    parser.add_argument("--cnn-steps", type=int, default=None, help="the CNN's steps (default 500)")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--device", default="cpu", help="the CNN workload's device (cpu, cuda)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads for every method (default: torch's)")
    parser.add_argument("--loop-threads", type=int, default=None,
                        help="torch threads for the loops only (default: as for every method); on a 2-core "
                             "machine one thread trains these small models faster than two")
    parser.add_argument("--skip-optuna", action="store_true")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs of the all-at-once sweep, interleaved with slices of the loop; the median wall "
                             "time is reported (it is ~10 s, so a single run is at the mercy of a moment's noise)")
    parser.add_argument("--metric", default="val_loss", choices=("val_loss", "val_accuracy"),
                        help="how the best configuration is chosen (on the validation holdout)")
    parser.add_argument("--float64-check", action="store_true",
                        help="no timing: the CNN grid in float64, inertia.sweep against the loop (see above)")
    parser.add_argument("--json", default=None,
                        help="where the figures go (default: benchmarks/results/sweep_speed.json, or "
                             "sweep_float64.json for --float64-check)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.float64_check:
        write_json(float64_check(args), args.json or "benchmarks/results/sweep_float64.json")
        return 0
    payload = mlp_workload(args) if args.workload in ("both", "mlp") else {
        "benchmark": "sweep_speed", "command": " ".join([sys.executable.split('/')[-1], *sys.argv]),
        "machine": {"cpu": cpu_description(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "torch": torch.__version__}}
    if args.workload in ("both", "cnn"):
        payload["cnn"] = cnn_workload(args)
    write_json(payload, args.json or "benchmarks/results/sweep_speed.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
