"""``inertia sweep``: train every learning rate x momentum configuration at once and show the interplay."""
from __future__ import annotations

import argparse
import sys
import time
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import Any, Callable, Iterator

from ..sweeps.pruning import STACKED as PRUNERS
from ..sweeps.selection import SELECTIONS
from ..sweeps.specs import (DEFAULT_LRS, DEFAULT_MOMENTA, LANES, METRICS, SAMPLERS, RunSpec, SearchSpec, SweepSpec, TaskSpec,
                            TrainSpec)
from . import options
from ..outputs import results_table, spread, write_outputs
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
metric, iso-lines of the effective learning rate lr/(1-mu), with --edge the stability edge
lr * lambda_max < 2 + 2 mu from the sharpness at initialization; curve.png instead when one
hyperparameter varies, as lr at --momentum 0.9), report.html when the
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
        description=DESCRIPTION, formatter_class=options.HelpFormatter)
    _add_task_options(parser.add_argument_group("what to train (TaskSpec)"))
    _add_train_options(parser.add_argument_group("how to train (TrainSpec)"))
    _add_search_options(parser.add_argument_group("how to search (SearchSpec)"))
    _add_run_options(parser.add_argument_group("where and how to run (RunSpec)"))
    out = parser.add_argument_group("outputs")
    out.add_argument("--tensorboard", default=None, metavar="DIR", help="also write one TensorBoard run per configuration")
    out.add_argument("--top", type=int, default=10, help="rows of the table of best configurations")
    out.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=run_command)
    return parser


def _add_task_options(what: Any) -> None:
    options.add_data(what)
    options.add_model(what)
    options.add_optimizer(what)
    what.add_argument("--lr", default=None, metavar="VALUES",
                      help=f"learning rates; none for yellowfin, which tunes lr and momentum (default: {DEFAULT_LRS})")
    what.add_argument("--momentum", default=None, metavar="VALUES",
                      help="momentum values (default: " + ",".join(map(str, DEFAULT_MOMENTA))
                           + " for rules that have a momentum)")
    what.add_argument("--hyper", action="append", default=[], metavar="NAME=VALUES",
                      help="sweep another numeric hyperparameter too, e.g. --hyper weight_decay=0,1e-4 (repeatable)")
    what.add_argument("--fixed", action="append", default=[], metavar="NAME=VALUE",
                      help="a hyperparameter shared by all configurations, e.g. --fixed convention=sutskever")
    options.add_loss(what)
    options.add_schedule(what, "it starts from each configuration's value over --steps")


def _add_train_options(how: Any) -> None:
    how.add_argument("--steps", type=int, default=2000,
                     help="optimizer steps (minibatches) per configuration, fold and seed (default: 2000, fewer "
                          "than inertia train's 3000 because a sweep trains every configuration x seed x fold; "
                          "the command it prints for inertia train gives the steps it used)")
    how.add_argument("--batch-size", type=int, default=100, help="examples per minibatch")
    how.add_argument("--folds", type=int, default=1, help="K-fold cross-validation (1: a 20%% holdout)")
    how.add_argument("--seed", type=int, default=0, help="seed for initialization, batches and data splits")
    how.add_argument("--seeds", type=int, default=3, metavar="K",
                     help="train every configuration from K initializations and batch orders at once "
                          "(seeds seed..seed+K-1); results are mean +- std over seeds and folds (default: 3, so "
                          "that a ranking is not one seed's luck; inertia train's is 1, one plain run)")
    options.add_dtype(how)
    options.add_device(how)
    options.add_backend(how)
    how.add_argument("--diverge-factor", type=float, default=10.0, metavar="X",
                     help="a loss above X times its first value counts as diverged")
    how.add_argument("--standardize", action="store_true",
                     help="standardize the inputs with each fold's training part (never its validation part)")


def _add_search_options(search: Any) -> None:
    search.add_argument("--sampler", default="grid", choices=SAMPLERS,
                        help="grid trains every point; random and tpe --trials points in the ranges the values span")
    search.add_argument("--trials", type=int, default=None, help="number of configurations for random/tpe")
    search.add_argument("--pruner", default=None, choices=("none", *PRUNERS),
                        help="stop configurations early when their validation metric lags (default: none)")
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


def _add_run_options(run: Any) -> None:
    run.add_argument("--out", required=True, help="output folder (holds the SQLite study unless --storage)")
    run.add_argument("--storage", default=None, help="Optuna storage URL, e.g. postgresql://user:pw@host/db")
    run.add_argument("--study-name", default="sweep", help="the study's name in the storage (one study = one sweep)")
    run.add_argument("--checkpoint-every", type=float, default=60.0, metavar="SECONDS",
                     help="seconds between checkpoints of the stacks in training (a rerun resumes from them)")
    run.add_argument("--lanes", default="auto", choices=LANES, help="side-by-side stacks in forked processes or threads")
    run.add_argument("--parallel", type=int, default=None,
                     help="stacks side by side (default on CPU: one per free core, at most --threads)")
    options.add_threads(run)
    run.add_argument("--memory-budget", type=int, default=None, metavar="BYTES",
                     help="the memory the stacked configurations may take (default: what the device has)")
    run.add_argument("--max-batch", type=int, default=None, help="at most this many configurations at once")
    run.add_argument("--no-wait", dest="wait", action="store_false",
                     help="when nothing is left to claim, exit (code 3) instead of waiting for other workers' trials")
    run.add_argument("--edge", action="store_true",
                     help="also measure the loss's sharpness lambda_max at initialization (Hessian-vector products on "
                          "each seed's initial model, as inertia find does) and draw heavy ball's stability edge "
                          "lr * lambda_max < 2 + 2 mu (in the rule's convention) on the heatmap, the curve of an lr sweep "
                          "at one momentum and the report; kept with the study (its user attribute "
                          "stability_edge), so a rerun of it draws the edge without --edge")


def sweep_spec(args: argparse.Namespace) -> SweepSpec:
    """The specs of ``args``: one argument group per spec, one option per field."""
    task = TaskSpec.from_values(
        args.data, args.model, optimizer=args.optimizer, lr=DEFAULT_LRS if args.lr is None else args.lr,
        momentum=DEFAULT_MOMENTA if args.momentum is None else args.momentum,
        hyper=options.pairs(args.hyper, "--hyper", "NAME=VALUES"), fixed=options.literals(args.fixed, "--fixed"),
        schedules=options.schedules(args.schedule), loss=args.loss,
        model_args=options.literals(args.model_arg, "--model-arg"))
    return SweepSpec(task, *(spec(**{f.name: getattr(args, f.name) for f in fields(spec)})
                             for spec in (TrainSpec, SearchSpec, RunSpec)))


def run_command(args: argparse.Namespace) -> int:
    from rich.console import Console

    from ..sweeps import IncompleteSweep, StorageError, run_sweep

    console = Console(stderr=False, width=None if sys.stdout.isatty() else 132)   # the table's columns in a log
    options.check_device(args.device)
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
    written = write_outputs(results, out, lambda record: train_command(results, record))
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
        acc = options.mean_std(best.get("test_accuracy_mean"), spread(results, best, "test_accuracy"), "{:.1f}", 100)
        console.print(f"best by {results.metric}: " + ", ".join(f"{n}={best[n]:.4g}" for n in results.swept)
                      + f" at step {best.get('best_step')}"
                      + (f"; test accuracy {acc} % there" if acc != "-" else ""))
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
        options.check_writable(args.tensorboard, "--tensorboard", folder=True)


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
