"""``inertia sweep``: train every learning rate x momentum configuration at once and show the interplay."""
from __future__ import annotations

import argparse
import re
import sys
import time
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import Any, Callable, Iterator

from .._text import parse_literal
from ..sweeps.selection import SELECTIONS
from ..sweeps.specs import (DEFAULT_MOMENTA, LANES, METRICS, SAMPLERS, RunSpec, SearchSpec, SweepSpec, TaskSpec,
                            TrainSpec)
from .reproduce import train_command

DESCRIPTION = """\
Sweep learning rate x momentum (and any numeric hyperparameter of the rule) by
training every configuration -- on every cross-validation fold -- at once, as one
stacked model updated by the same rule code as the optimizers. Every
configuration of a fold sees the same minibatches. Diverging configurations
(NaN/inf, or loss > 10x its first value) are stopped and marked.

Results land in an Optuna study: a SQLite file in --out by default (one --out
folder = one sweep; run the same command again to resume after an interruption),
or --storage URL (e.g. PostgreSQL) for several workers sharing one study: start
the same command on each worker.

Writes into --out: results.csv, results.json, heatmap.png (lr x momentum, colour =
metric, iso-lines of the effective learning rate lr/(1-mu); curve.png instead when one
hyperparameter is swept), report.html when the
report module is present, and prints the best configurations and the
`inertia train` command that reproduces the best.

values: start:stop:count is log-spaced (linear when a bound is <= 0), or a comma list.

example:
  inertia sweep --data mnist1d --model mlp --lr 1e-3:1:8 \\
      --momentum 0,0.5,0.8,0.9,0.95,0.98,0.99,0.995 --steps 2000 --out runs/mlp-grid
"""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "sweep", help="train a grid of learning rate x momentum at once; table, heatmap, CSV/JSON",
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    what = parser.add_argument_group("what to train (TaskSpec)")
    what.add_argument("--data", default="mnist1d", metavar="NAME|PATH", help="mnist1d, digits, or a .npz/.csv file")
    what.add_argument("--model", default="mlp", metavar="NAME|MODULE:FACTORY",
                      help="a model name (mlp, linear, cnn, cnn2d) or package.module:factory importable from here, "
                           "e.g. examples.digits_cnn:DigitsCNN")
    what.add_argument("--model-arg", action="append", default=[], metavar="NAME=VALUE",
                      help="an argument of the model factory, e.g. --model-arg width=32 (repeatable)")
    what.add_argument("--optimizer", default="momentum", help="any registered rule name (momentum, nesterov, sgd, ...)")
    what.add_argument("--lr", default="1e-3:1:8", help="learning rates (default 1e-3:1:8)")
    what.add_argument("--momentum", default=None,
                      help="momentum values (default 0,0.5,0.8,0.9,0.95,0.98,0.99,0.995 for rules that have a momentum)")
    what.add_argument("--hyper", action="append", default=[], metavar="NAME=VALUES",
                      help="sweep another numeric hyperparameter too, e.g. --hyper weight_decay=0,1e-4 (repeatable)")
    what.add_argument("--fixed", action="append", default=[], metavar="NAME=VALUE",
                      help="a hyperparameter shared by all configurations, e.g. --fixed convention=sutskever")
    what.add_argument("--loss", default="auto", choices=("auto", "cross_entropy", "mse", "l1", "huber", "bce_with_logits"),
                      help="the loss (auto: cross_entropy for integer labels, mse for float targets)")
    what.add_argument("--schedule", action="append", default=[], metavar="NAME=SPEC",
                      help="drive a hyperparameter by a schedule, e.g. --schedule lr=cosine "
                           "--schedule momentum=sutskever_ramp(0.99) (repeatable)")
    how = parser.add_argument_group("how to train (TrainSpec)")
    how.add_argument("--steps", type=int, default=2000)
    how.add_argument("--batch-size", type=int, default=100)
    how.add_argument("--folds", type=int, default=1, help="K-fold cross-validation (1: a 20%% holdout)")
    how.add_argument("--seed", type=int, default=0)
    how.add_argument("--seeds", type=int, default=3, metavar="K",
                     help="train every configuration from K initializations and batch orders at once "
                          "(seeds seed..seed+K-1); results are mean +- std over seeds and folds")
    how.add_argument("--dtype", type=_dtype, default="float32", help="float32 or float64")
    how.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    how.add_argument("--backend", default="auto", choices=("auto", "batched", "vmap"),
                     help="batched: hand-written backprop for MLPs; vmap: any model (auto: batched where it can)")
    how.add_argument("--diverge-factor", type=float, default=10.0, metavar="X",
                     help="a loss above X times its first value counts as diverged")
    how.add_argument("--standardize", action="store_true",
                     help="standardize the inputs with each fold's training part (never its validation part)")
    search = parser.add_argument_group("how to search (SearchSpec)")
    search.add_argument("--sampler", default="grid", choices=SAMPLERS)
    search.add_argument("--trials", type=int, default=None, help="number of configurations for random/tpe")
    search.add_argument("--pruner", default=None, choices=("none", "median", "hyperband", "successive_halving", "percentile"))
    search.add_argument("--metric", default="auto", choices=("auto", *METRICS),
                        help="what picks the best: auto (val_accuracy for classification, val_loss for regression)")
    search.add_argument("--eval-every", type=int, default=None, metavar="STEPS",
                        help="steps between evaluations: the pruner's looks and the points early stopping "
                             "picks from (default: a tenth of the steps)")
    search.add_argument("--select", default="best", metavar="|".join(SELECTIONS),
                        help="score each configuration at its best evaluation point (early stopping; "
                             "default) or at its final step")
    search.add_argument("--round-size", type=int, default=None, metavar="N",
                        help="configurations claimed (random/tpe: asked) at once; the next round is asked after "
                             "they are told (default: half of a grid, a quarter of a random/tpe budget)")
    run = parser.add_argument_group("where and how to run (RunSpec)")
    run.add_argument("--out", required=True, help="output folder (holds the SQLite study unless --storage)")
    run.add_argument("--storage", default=None, help="Optuna storage URL, e.g. postgresql://user:pw@host/db")
    run.add_argument("--study-name", default="sweep")
    run.add_argument("--checkpoint-every", type=float, default=60.0, metavar="SECONDS")
    run.add_argument("--lanes", default="auto", choices=LANES, help="side-by-side stacks in forked processes or threads")
    run.add_argument("--parallel", type=int, default=None, help="stacks side by side (default on CPU: one per thread)")
    run.add_argument("--memory-budget", type=int, default=None, metavar="BYTES",
                     help="the memory the stacked configurations may take (default: what the device has)")
    run.add_argument("--max-batch", type=int, default=None, help="at most this many configurations at once")
    run.add_argument("--no-wait", dest="wait", action="store_false",
                     help="when nothing is left to claim, exit (code 3) instead of waiting for other workers' trials")
    out = parser.add_argument_group("outputs")
    out.add_argument("--tensorboard", default=None, metavar="DIR", help="also write one TensorBoard run per configuration")
    out.add_argument("--top", type=int, default=10, help="rows of the table of best configurations")
    out.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=run_command)
    return parser


def _dtype(name: str) -> Any:
    import torch

    if name not in ("float32", "float64"):
        raise argparse.ArgumentTypeError(f"expected float32 or float64, got {name!r}")
    return getattr(torch, name)


def _pairs(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"{what} expects NAME=VALUE, got {item!r}")
        name, value = item.split("=", 1)
        out[name.strip().replace("-", "_")] = value.strip()
    return out


def sweep_spec(args: argparse.Namespace) -> SweepSpec:
    """The specs of ``args``: one argument group per spec, one option per field."""
    task = TaskSpec.from_values(
        args.data, args.model, optimizer=args.optimizer, lr=args.lr,
        momentum=DEFAULT_MOMENTA if args.momentum is None else args.momentum, hyper=_pairs(args.hyper, "--hyper"),
        fixed={k: parse_literal(v) for k, v in _pairs(args.fixed, "--fixed").items()},
        schedules=_pairs(args.schedule, "--schedule"), loss=args.loss,
        model_args={k: parse_literal(v) for k, v in _pairs(args.model_arg, "--model-arg").items()})
    return SweepSpec(task, *(spec(**{f.name: getattr(args, f.name) for f in fields(spec)})
                             for spec in (TrainSpec, SearchSpec, RunSpec)))


def run_command(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ..sweeps import IncompleteSweep, StorageError, run_sweep

    console = Console(stderr=False, width=None if sys.stdout.isatty() else 132)   # the table's columns in a log
    spec = sweep_spec(args)
    _check_outputs(args)
    started = time.time()
    try:
        with _progress_bar(spec, quiet=args.quiet) as progress:
            results = run_sweep(spec, progress=progress, log=lambda message: _log(console, message))
    except StorageError as error:
        print(f"inertia sweep: error: {error}", file=sys.stderr)
        return 2
    except IncompleteSweep as error:
        print(f"inertia sweep: {error}", file=sys.stderr)
        return 3
    out = Path(args.out)
    written = write_outputs(results, out)
    if args.tensorboard:
        from ..tensorboard import write_sweep

        write_sweep(results, args.tensorboard)
    console.print(results_table(results, top=args.top))
    elapsed = time.time() - started
    running = results.meta.get("running") or 0
    console.print(f"{len(results)} configurations in the study"
                  + (f", {running} still training in other workers (the last to finish writes the complete "
                     f"outputs)" if running else "")
                  + f"; this run took {elapsed:.1f} s on {results.meta.get('device')} "
                  f"({results.meta.get('backend')} backend, matrix products by {results.meta.get('matmul')})")
    best = results.best
    if best is not None:
        acc = best.get("test_accuracy_mean")
        console.print(f"best by {results.metric}: " + ", ".join(f"{n}={best[n]:.4g}" for n in results.swept)
                      + f" at step {best.get('best_step')}"
                      + (f"; test accuracy {acc * 100:.1f}% there" if acc is not None else ""))
        for warning in results.warnings():
            console.print(f"[yellow]warning: {warning}[/]")
        console.print("reproduce it with:\n  " + train_command(results), highlight=False, soft_wrap=True)
    else:
        console.print("[red]no configuration finished (all diverged or pruned)[/]")
    for path in written:
        console.print(f"wrote {path}")
    console.print(f"Optuna study {spec.run.study_name!r} in {study_url(spec)} "
                  "(for optuna.load_study and optuna-dashboard)", highlight=False, soft_wrap=True)
    if args.tensorboard:
        console.print(f"TensorBoard runs in {args.tensorboard}")
    return 0


def study_url(spec: SweepSpec) -> str:
    """The storage URL as Optuna's own tools open it (the SQLite file in --out, or --storage)."""
    from ..sweeps.study import normalize_url

    if spec.run.storage:
        return normalize_url(spec.run.storage)
    return f"sqlite:///{(Path(spec.run.out) / 'sweep.db').resolve()}"


def _check_outputs(args: argparse.Namespace) -> None:
    """Refuse output settings that would fail only after training."""
    if args.top < 1:
        raise ValueError(f"--top must be >= 1, got {args.top}")
    if args.tensorboard is not None:
        if not str(args.tensorboard).strip():
            raise ValueError("--tensorboard must not be empty")
        if Path(args.tensorboard).exists() and not Path(args.tensorboard).is_dir():
            raise ValueError(f"--tensorboard {args.tensorboard!r} is a file, not a folder")


def _log(console: Any, message: str) -> None:
    if message.startswith("warning: "):
        console.print(f"[yellow]{message}[/]", highlight=False)
    else:
        console.print(f"[dim]{message}[/]", highlight=False)


@contextmanager
def _progress_bar(spec: SweepSpec, quiet: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A rich progress bar over the sweep's configuration-steps; its update function (None if ``quiet``).

    The bar appears with the first progress report, so that an error found before training is
    the only thing printed."""
    if quiet:
        yield None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    bar = Progress(TextColumn("[bold]sweep[/] {task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                   TimeElapsedColumn(), TimeRemainingColumn(), transient=False)
    task = bar.add_task(f"{spec.configurations} configurations x {spec.train.folds} fold(s) x "
                        f"{spec.train.seeds} seed(s)", total=None)

    def on_progress(done: int, total: int) -> None:   # rich redraws 10 times a second
        if not bar.live.is_started:
            bar.start()
        bar.update(task, completed=done, total=total)

    try:
        yield on_progress
    finally:
        if bar.live.is_started:
            bar.stop()


def write_outputs(results: Any, out: Path) -> list[Path]:
    """results.csv, results.json, heatmap.png and (if available) report.html in ``out``, each written
    whole to a temporary file and renamed (a reader, or another worker, never sees half a file).
    A study not named ``sweep`` writes ``results-NAME.csv`` and so on, beside the other studies'."""
    out.mkdir(parents=True, exist_ok=True)
    name = str(results.meta.get("study_name") or "sweep")
    tag = "" if name == "sweep" else "-" + re.sub(r"[^A-Za-z0-9_.-]", "_", name)
    written = [_atomic(out / f"results{tag}.csv", results.to_csv),
               _atomic(out / f"results{tag}.json", results.to_json)]
    if results.records() and (len(results.swept) == 1 or {"lr", "momentum"} <= set(results.swept)):
        from ..plots.sweep import heatmap   # one swept hyperparameter: a curve

        picture = "heatmap" if len(results.swept) > 1 else "curve"
        written.append(_atomic(out / f"{picture}{tag}.png", lambda path: heatmap(results, path)))
    try:
        from ..report import write_sweep_report
    except ImportError:
        write_sweep_report = None
    if write_sweep_report is not None:
        meta = results.meta
        title = (f"inertia sweep: {meta.get('optimizer')} on {meta.get('data')} / {meta.get('model')}, "
                 f"{len(results)} configurations, {meta.get('steps')} steps")
        written.append(_atomic(out / f"report{tag}.html", lambda path: write_sweep_report(
            path, results.records(), metric=results.metric_key, title=title)))
    return written


def results_table(results: Any, top: int = 10) -> Any:
    """A ``rich`` table of the ``top`` best configurations: at their selected step, and at the end.

    Classification shows loss and accuracy; regression loss, RMSE and R².
    """
    from rich.table import Table

    from ..rules.sgd import effective_lr

    counts, rows = results.counts(), results.records()
    regression = any(r.get("val_rmse_mean") is not None for r in rows)
    score = ("val_rmse", "RMSE", 1, "{:.4g}") if regression else ("val_accuracy", "acc %", 100, "{:.1f}")
    test = ("test_r2", "R²", 1, "{:.3f}") if regression else ("test_accuracy", "acc %", 100, "{:.1f}")
    table = Table(title=f"best of {len(rows)} configurations ({counts['ok']} finished, {counts['diverged']} "
                        f"diverged, {counts['pruned']} pruned; scored at their "
                        f"{'best' if results.meta.get('select', 'best') == 'best' else 'final'} step)")
    both = "lr" in results.swept and "momentum" in results.swept
    names = ["#", *results.swept, *(["effective lr"] if both else []), "step", "val loss", f"val {score[1]}",
             f"test {test[1]}", "final val loss", f"final test {test[1]}"]
    for name in names:
        table.add_column(name, justify="right")
    convention = str((results.meta.get("fixed") or {}).get("convention", "torch"))
    for i, r in enumerate(results.ranked()[:top], 1):
        cells = [str(i)] + [f"{r[name]:.4g}" for name in results.swept]
        if both:
            cells.append(f"{effective_lr(r['lr'], r['momentum'], convention):.4g}")
        cells.append(str(r.get("best_step") or "-"))
        cells.append(_pm(r.get("val_loss_mean"), r.get("val_loss_std"), 1, "{:.4f}"))
        cells.append(_pm(r.get(f"{score[0]}_mean"), r.get(f"{score[0]}_std"), score[2], score[3]))
        cells.append(_pm(r.get(f"{test[0]}_mean"), r.get(f"{test[0]}_std"), test[2], test[3]))
        cells.append(_pm(r.get("final_val_loss_mean"), r.get("final_val_loss_std"), 1, "{:.4f}"))
        cells.append(_pm(r.get(f"final_{test[0]}_mean"), r.get(f"final_{test[0]}_std"), test[2], test[3]))
        table.add_row(*cells)
    return table


def _pm(mean: Any, std: Any, scale: float, fmt: str) -> str:
    """``mean ± std`` (scaled), ``-`` for a missing value."""
    import math

    if not isinstance(mean, (int, float)) or not math.isfinite(mean):
        return "-"
    text = fmt.format(mean * scale)
    if isinstance(std, (int, float)) and math.isfinite(std) and std > 0:
        text += " ± " + fmt.format(std * scale)
    return text


def _atomic(path: Path, write: Callable[[Path], Any]) -> Path:
    """``write(tmp)`` to a temporary file next to ``path`` (same suffix), then rename it to ``path``."""
    import os

    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
