"""``inertia train``: train one model with one optimizer (:func:`inertia.fit`) and report its metrics."""
from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

from . import options

SCHEDULES = {
    "constant": "the learning rate stays at --lr",
    "cosine": "cosine annealing from --lr to 0 over --steps",
    "step": "--lr, then x0.1 after each third of --steps",
    "onecycle": "1cycle (Smith 2018, torch OneCycleLR numbers): --lr/25 up to --lr at 30%% of the steps, "
    "then down to --lr/25e4; momentum cycles 0.95 -> 0.85 -> 0.95 (beta1 for Adam-style betas; nothing for rules with neither)",
    "warmup-cosine": "linear warm-up from 0 to --lr over the first 5%% of steps, then cosine to 0",
}

HYPER_OPTIONS = ("lr", "momentum", "nesterov", "convention", "weight_decay")
"""Rule hyperparameters that have an option of their own (every other one goes through --hyper)."""

DESCRIPTION = """\
Train one model with one optimizer and report its validation, test and train
loss and accuracy (RMSE and R² for a regression task).

The data pipeline and the loss are the sweep's: the same split of the training
set into --folds folds (1: a 20% holdout for validation), the same
standardization (--standardize: with each fold's training part), the same
minibatch at every step, the same initialization for every --seed and the same
--loss, so the command a sweep prints reproduces that sweep's numbers.
--folds K trains K models (one per fold) and reports mean +- std over the folds.

Every registered optimizer name works (inertia.rules.PRESETS); only the
hyperparameters you give are passed, the rest keep the rule's defaults.
--schedule NAME=SPEC drives any numeric hyperparameter; the value you give
for NAME (or the rule's default) is the schedule's peak or start.

examples:
  inertia train --data mnist1d --model mlp --optimizer momentum --lr 0.05 --momentum 0.9 --steps 3000
  inertia train --lr 0.05 --schedule lr=cosine --schedule "momentum=sutskever_ramp(0.99)" --folds 5
  inertia train --data targets.npz --model cnn --loss huber --standardize
"""

LABELS = {"loss": ("loss", "{:.4f}"), "accuracy": ("accuracy", "{:.2%}"), "rmse": ("RMSE", "{:.4f}"),
          "r2": ("R²", "{:.4f}")}
"""How each metric of a task (inertia.sweeps.objective.METRICS) is printed: its label and format."""


STEPS_WHY = ("more than inertia sweep's 2000, which trains every configuration x seed x fold; "
             "the command a sweep prints gives the steps it used")
SEEDS_WHY = ("one plain run; inertia sweep trains 3 so that a ranking is not one seed's luck, "
             "and the command it prints gives its --seeds")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    from ..rules import CONVENTIONS

    parser = subparsers.add_parser(
        "train",
        help="train one model with one optimizer; prints validation, test and train loss and accuracy "
        "(RMSE and R² for regression)",
        description=DESCRIPTION,
        formatter_class=options.HelpFormatter,
    )
    what = parser.add_argument_group("what to train")
    options.add_data(what)
    options.add_model(what)
    options.add_loss(what)
    opt = parser.add_argument_group("optimizer")
    options.add_optimizer(opt)
    opt.add_argument("--lr", type=options.finite_float, default=None,
                     help="learning rate (peak of the schedule); default: the optimizer's")
    opt.add_argument("--momentum", type=options.finite_float, default=None,
                     help="momentum mu in [0, 1); default: the optimizer's (0.9 for 'momentum')")
    opt.add_argument("--nesterov", action="store_true", default=None, help="use Nesterov momentum")
    opt.add_argument("--convention", choices=CONVENTIONS, default=None,
                     help="momentum formula: torch (PyTorch/TF1/optax), sutskever (Sutskever 2013, Keras 3), "
                     "ema (averaged gradient); default: the optimizer's (torch)")
    opt.add_argument("--weight-decay", type=options.finite_float, default=None,
                     help="weight decay lambda (coupled L2 for SGD-family rules); default: the optimizer's (0)")
    opt.add_argument("--hyper", action="append", default=[], metavar="NAME=VALUE",
                     help="any other hyperparameter of the rule, e.g. --hyper dampening=0.1 "
                     "(numbers, true/false or words; repeatable)")
    options.add_schedule(opt, "it starts from the value given for NAME, or the rule's default; or a bare "
                         "learning-rate schedule KIND: " + "; ".join(f"{k}: {v}" for k, v in SCHEDULES.items()))
    run = parser.add_argument_group("run")
    run.add_argument("--steps", type=options.positive_int, default=3000,
                     help=f"optimizer steps (minibatches) per fold (default: 3000; {STEPS_WHY})")
    run.add_argument("--batch-size", type=options.positive_int, default=100,
                     help="examples per minibatch")
    run.add_argument("--folds", type=options.positive_int, default=1,
                     help="K-fold cross-validation, one model per fold (1: a 20%% holdout), as inertia sweep")
    run.add_argument("--seed", type=int, default=0, help="seed for initialization, batches and data splits")
    run.add_argument("--seeds", type=options.positive_int, default=1, metavar="K",
                     help="train every fold from K seeds (seed..seed+K-1), as inertia sweep --seeds; the metrics "
                     f"are mean +- std over seeds and folds (default: 1; {SEEDS_WHY})")
    run.add_argument("--standardize", action="store_true",
                     help="standardize the inputs (per feature, or per channel for images) with the statistics of "
                     "each fold's training part, as inertia sweep --standardize")
    options.add_dtype(run, "the parameters' dtype, as inertia sweep --dtype")
    options.add_device(run)
    options.add_threads(run)
    out = parser.add_argument_group("output")
    out.add_argument("--json", type=Path, default=None, metavar="PATH",
                     help="write {val_loss_mean, ..., test_accuracy_mean, folds, config} as JSON to PATH")
    out.add_argument("--tensorboard", type=Path, default=None, metavar="DIR",
                     help="write a TensorBoard run per fold (loss, lr, momentum, effective lr, hyperparameters) under DIR")
    out.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=run_command)
    return parser


@functools.lru_cache(maxsize=1)
def actions() -> dict[str, argparse.Action]:
    """The options of ``inertia train`` by destination: the one source of its flag names."""
    parser = add_parser(argparse.ArgumentParser(prog="inertia").add_subparsers())
    return {action.dest: action for action in parser._actions if action.option_strings}


def flag(dest: str) -> str:
    """``"weight_decay"`` -> ``"--weight-decay"``, read from the parser."""
    return actions()[dest].option_strings[0]


# ---------------------------------------------------------------- arguments -> inertia.fit

def _no_such(optimizer: str, what: str, name: str, known: Any) -> ValueError:
    return ValueError(f"{what}: optimizer {optimizer!r} has no {name!r} hyperparameter; "
                      f"its hyperparameters: {', '.join(sorted(known))}")


def optimizer_hyper(args: argparse.Namespace) -> dict[str, Any]:
    """The hyperparameters the user gave, checked against the rule's names."""
    from .. import rules

    known = rules.get(args.optimizer).defaults
    given: dict[str, Any] = {}
    for name in HYPER_OPTIONS:
        value = getattr(args, name)
        if value is None:
            continue
        if name not in known:
            raise _no_such(args.optimizer, flag(name), name, known)
        given[name] = value
    for name, value in options.literals(args.hyper, "--hyper").items():
        if name not in known:
            raise _no_such(args.optimizer, f"--hyper {name}", name, known)
        given[name] = value
    return given


def schedule_specs(args: argparse.Namespace, full: dict[str, Any]) -> dict[str, Any]:
    """--schedule items as :func:`inertia.fit`'s ``schedules``: NAME=SPEC (:func:`.options.schedules`),
    or a bare KIND (:data:`SCHEDULES`)."""
    from .. import rules

    kinds = [item.strip() for item in args.schedule if item.strip() in SCHEDULES]
    specs: dict[str, Any] = options.schedules([item for item in args.schedule if item.strip() not in SCHEDULES],
                                              form=f"NAME=SPEC such as lr=cosine, or one of {', '.join(SCHEDULES)}")
    for kind in kinds:
        if LEGACY[kind] and rules.get(args.optimizer).tuner is not None:
            raise ValueError(f"--schedule {kind}: {args.optimizer} tunes lr and momentum at every step; lr cannot "
                             f"be scheduled")
        for name, spec in legacy_schedules(kind, full).items():
            if name in specs:
                raise ValueError(f"--schedule {kind}: {name} has a schedule already")
            specs[name] = spec
    return specs


LEGACY = {
    "constant": {},
    "cosine": {"lr": "cosine"},
    "step": {"lr": "step_decay"},
    "onecycle": {"lr": "one_cycle"},
    "warmup-cosine": {"lr": "warmup_cosine"},
}
"""The schedule specs of a bare ``--schedule KIND`` (see SCHEDULES)."""

ONE_CYCLE_MOMENTUM = "one_cycle_momentum(max=0.95)"  # 0.95 -> 0.85 -> 0.95, as torch's OneCycleLR


def legacy_schedules(kind: str, full: dict[str, Any]) -> dict[str, Any]:
    """The schedules of a bare ``--schedule KIND``: the learning rate's (and 1cycle's momentum or beta1)."""
    if LEGACY[kind] and "lr" not in full:
        raise ValueError(f"--schedule {kind}: the optimizer has no learning rate")
    found: dict[str, Any] = dict(LEGACY[kind])
    if kind == "onecycle":
        if "momentum" in full:
            found["momentum"] = ONE_CYCLE_MOMENTUM
        elif isinstance(full.get("betas"), tuple) and len(full["betas"]) == 2:  # Adam-style (beta1, beta2)
            found["betas"] = (ONE_CYCLE_MOMENTUM, None)
    return found


def fit_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of :func:`inertia.fit`, every flag checked (errors name the flag)."""
    from .. import rules

    options.check_device(args.device)
    hyper = optimizer_hyper(args)
    full = rules.get(args.optimizer).hyper(**hyper)  # raises ValueError naming a bad argument
    return dict(data=args.data, model=args.model, model_args=options.literals(args.model_arg, "--model-arg"), optimizer=args.optimizer,
                hyper=hyper,
                schedules=schedule_specs(args, full), steps=args.steps, batch_size=args.batch_size,
                folds=args.folds, seed=args.seed, seeds=args.seeds, loss=args.loss, standardize=args.standardize, device=args.device,
                dtype=_torch_dtype(args.dtype), threads=args.threads)


def _torch_dtype(name: str) -> Any:
    import torch

    return getattr(torch, name)


# ---------------------------------------------------------------- training and its outputs

def train(args: argparse.Namespace, on_step: Callable[[Any], None] | None = None) -> dict[str, Any]:
    """Train as ``args`` says and return the results as JSON data (no printing)."""
    from ..fits import fit

    kwargs = fit_arguments(args)
    writers: dict[int, Any] = {}
    log = _tensorboard_logger(args, kwargs, writers) if args.tensorboard is not None else None

    def step(info) -> None:
        if log is not None:
            log(info)
        if on_step is not None:
            on_step(info)

    try:
        result = fit(**kwargs, on_step=step)
    except BaseException:
        for writer in writers.values():
            writer.close()
        raise
    folds = [f.as_dict() for f in result.folds]
    results = {**result.record(), "metrics": list(result.metrics), "folds": folds, "seconds": result.seconds,
               "device": result.device, "config": config(kwargs, result.hyperparameters)}
    for k, (_, writer) in enumerate(sorted(writers.items())):
        writer.finish({m: v for m, v in folds[k].items() if m != "last_loss"})
    if writers:
        results["tensorboard"] = [str(writers[k].path) for k in sorted(writers)]
    return results


def _tensorboard_logger(args: argparse.Namespace, kwargs: dict[str, Any], writers: dict[tuple[int, int], Any]):
    """An ``on_step`` that writes each (seed, fold) model's loss, lr, momentum, effective lr and beta1
    to ``writers[(seed, fold)]``."""
    from .. import rules
    from ..tensorboard import RunWriter, effective_lr, flat_hparams, run_name

    full = rules.get(args.optimizer).hyper(**kwargs["hyper"])
    every = max(1, args.steps // 200)
    settings = flat_hparams(config(kwargs, full))
    given = {"optimizer": args.optimizer, **kwargs["hyper"],
             **{f"schedule.{k}": v for k, v in kwargs["schedules"].items()}}
    started = time.strftime("%Y%m%d-%H%M%S")

    def log(info) -> None:
        if info.step % every and info.step != args.steps - 1:
            return
        key = (info.seed, info.fold)
        if key not in writers:   # every hyperparameter given, the seed and fold; a new directory, never merged
            name = run_name({**given, "seed": info.seed, "fold": info.fold if args.folds > 1 else None})
            writers[key] = RunWriter(args.tensorboard, f"{name}_{started}", settings, unique=True)
        group = info.optimizer.param_groups[0]
        values = {"loss": float(info.loss)}
        values.update({k: float(group[k]) for k in ("lr", "momentum") if k in group})
        if "lr" in values and "momentum" in values:
            values["effective_lr"] = effective_lr(values["lr"], values["momentum"], group.get("convention", "torch"))
        betas = group.get("betas")
        if isinstance(betas, (tuple, list)) and len(betas) == 2:
            values["beta1"] = float(betas[0])
        writers[key].log(info.step + 1, **values)   # updates taken, as a sweep's runs count them

    return log


def _plain(value: Any) -> Any:
    return value if isinstance(value, (int, float, str, bool)) or value is None else str(value)


def config(kwargs: dict[str, Any], full: dict[str, Any]) -> dict[str, Any]:
    """The run's settings as plain JSON data (the rule's full hyperparameters included)."""
    return {
        "data": kwargs["data"],
        "model": kwargs["model"],
        "optimizer": kwargs["optimizer"],
        "hyperparameters": {k: _plain(v) for k, v in full.items()},
        "schedules": {k: _plain(v) for k, v in kwargs["schedules"].items()},
        **{k: kwargs[k] for k in ("loss", "steps", "batch_size", "folds", "seed", "seeds", "standardize")},
    }


def summary(results: dict[str, Any], runs: int) -> list[str]:
    """The printed lines: validation, test and train metrics of the task (mean ± std over ``runs``
    models: folds x seeds)."""
    lines = []
    for label, prefix in (("validation", "val"), ("test", "test"), ("train", "train")):
        shown = []
        for metric in results["metrics"]:
            name, fmt = LABELS[metric]
            std = results[f"{prefix}_{metric}_std"] if runs > 1 else None
            value = options.mean_std(results[f"{prefix}_{metric}_mean"], std, fmt)
            shown.append(f"{name} {value}")
        lines.append(f"{label:<11}" + "   ".join(shown))
    return lines


def run_command(args: argparse.Namespace) -> int:
    from ..optim import NonFiniteGradientError

    # checks that need no data, so a typo fails at once
    fit_arguments(args)
    if args.json is not None:
        options.check_writable(args.json, "--json", folder=False)
    if args.tensorboard is not None:
        options.check_writable(args.tensorboard, "--tensorboard", folder=True)

    progress = None
    if not args.quiet and sys.stderr.isatty():
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        progress = Progress(
            TextColumn("training"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"), TimeRemainingColumn(), transient=True,
        )
    state = {"smooth": None}

    def on_step(info) -> None:
        if progress is None or (info.step % 20 and info.step != args.steps - 1):
            return
        value = float(info.loss)
        state["smooth"] = value if state["smooth"] is None or info.step == 0 else 0.9 * state["smooth"] + 0.1 * value
        progress.update(task, completed=((info.seed - args.seed) * args.folds + info.fold) * args.steps + info.step + 1, loss=f"{state['smooth']:.4f}")

    try:
        if progress is not None:
            with progress:
                task = progress.add_task("train", total=args.steps * args.folds * args.seeds, loss="-")
                results = train(args, on_step)
        else:
            results = train(args)
    except NonFiniteGradientError as error:
        print(f"inertia train: error: {error}", file=sys.stderr)
        return 1
    print("\n".join(summary(results, args.folds * args.seeds)))
    folds = f" x {args.folds} folds" if args.folds > 1 else ""
    folds += f" x {args.seeds} seeds" if args.seeds > 1 else ""
    print(f"{args.steps} steps{folds} in {results['seconds']:.1f} s on {results['device']}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    for path in results.get("tensorboard", []):
        print(f"tensorboard run: {path}")
    return 0


run = run_command  # the name the command-line entry calls
