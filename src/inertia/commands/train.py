"""``inertia train``: train one model with one optimizer and report train loss and test accuracy."""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable

from .._text import parse_literal

SCHEDULES = {
    "constant": "the learning rate stays at --lr",
    "cosine": "cosine annealing from --lr to 0 over --steps",
    "step": "--lr, then x0.1 after each third of --steps",
    "onecycle": "1cycle (Smith 2018, torch OneCycleLR numbers): --lr/25 up to --lr at 30%% of the steps, "
    "then down to --lr/25e4; momentum cycles 0.95 -> 0.85 -> 0.95 (beta1 for Adam-style betas; nothing for rules with neither)",
    "warmup-cosine": "linear warm-up from 0 to --lr over the first 5%% of steps, then cosine to 0",
}

DESCRIPTION = """\
Train one model with one optimizer and report the final train loss and test accuracy.

Every registered optimizer name works (inertia.rules.PRESETS); only the
hyperparameters you give are passed, the rest keep the rule's defaults.
Minibatches are drawn without replacement (reshuffled every epoch) with --seed,
which also seeds the model's initialization. The train loss reported is the
mean cross-entropy over the whole training set after the last step.

example:
  inertia train --data mnist1d --model mlp --optimizer momentum --lr 0.05 --momentum 0.9 --steps 3000
"""


def _positive_int(name: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a positive integer, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"{name} must be a positive integer, got {value}")
        return value

    return parse


def _finite_float(name: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{name} must be a finite number, got {text!r}")
        return value

    return parse


def _escape(text: str) -> str:
    """Protect a description from argparse's %-formatting of help strings."""
    return text.replace("%", "%%")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    from ..data import DATASETS
    from ..models import MODELS

    parser = subparsers.add_parser(
        "train",
        help="train one model with one optimizer; prints the train loss and test accuracy",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    what = parser.add_argument_group("what to train")
    what.add_argument(
        "--data", default="mnist1d", metavar="NAME|PATH",
        help="dataset: " + "; ".join(f"{k} ({_escape(v)})" for k, v in DATASETS.items())
        + "; or a .npz (x_train, y_train, x_test, y_test, or x, y) / .csv (last column = label) file "
        "(default: mnist1d)",
    )
    what.add_argument(
        "--model", default="mlp", metavar="NAME",
        help="model: " + "; ".join(f"{k} ({_escape(v)})" for k, v in MODELS.items()) + " (default: mlp)",
    )
    opt = parser.add_argument_group("optimizer")
    opt.add_argument(
        "--optimizer", default="momentum", metavar="NAME",
        help="a registered rule name, e.g. sgd, momentum, nesterov (default: momentum; "
        "the error for an unknown name lists them all)",
    )
    opt.add_argument("--lr", type=_finite_float("--lr"), default=None,
                     help="learning rate (peak of the schedule); default: the optimizer's")
    opt.add_argument("--momentum", type=_finite_float("--momentum"), default=None,
                     help="momentum mu in [0, 1); default: the optimizer's (0.9 for 'momentum')")
    opt.add_argument("--nesterov", action="store_true", default=None, help="use Nesterov momentum")
    opt.add_argument("--convention", choices=("torch", "sutskever", "ema"), default=None,
                     help="momentum formula: torch (PyTorch/TF1/optax), sutskever (Sutskever 2013, Keras 3), "
                     "ema (averaged gradient); default: the optimizer's (torch)")
    opt.add_argument("--weight-decay", type=_finite_float("--weight-decay"), default=None,
                     help="weight decay lambda (coupled L2 for SGD-family rules); default: the optimizer's (0)")
    opt.add_argument("--hyper", action="append", default=[], metavar="NAME=VALUE",
                     help="any other hyperparameter of the rule, e.g. --hyper dampening=0.1 "
                     "(numbers, true/false or words; repeatable)")
    opt.add_argument("--schedule", choices=tuple(SCHEDULES), default="constant",
                     help="learning-rate schedule: " + "; ".join(f"{k}: {v}" for k, v in SCHEDULES.items())
                     + " (default: constant)")
    run = parser.add_argument_group("run")
    run.add_argument("--steps", type=_positive_int("--steps"), default=3000,
                     help="optimizer steps (minibatches) (default: 3000)")
    run.add_argument("--batch-size", type=_positive_int("--batch-size"), default=100,
                     help="examples per minibatch (default: 100)")
    run.add_argument("--seed", type=int, default=0, help="seed for initialization, batches and data splits (default: 0)")
    run.add_argument("--device", default=None, metavar="cpu|cuda",
                     help="where to train (default: cuda if available, else cpu)")
    out = parser.add_argument_group("output")
    out.add_argument("--json", type=Path, default=None, metavar="PATH",
                     help="write {train_loss, test_accuracy, ..., config} as JSON to PATH")
    out.add_argument("--tensorboard", type=Path, default=None, metavar="DIR",
                     help="write a TensorBoard run (loss, lr, momentum, effective lr, hyperparameters) under DIR")
    out.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=run_command)
    return parser


# ---------------------------------------------------------------- helpers

def optimizer_hyper(args: argparse.Namespace) -> dict[str, Any]:
    """The hyperparameters the user gave, checked against the rule's names."""
    from .. import rules

    preset = rules.get(args.optimizer)
    known = preset.defaults
    given: dict[str, Any] = {}
    flags = {
        "lr": ("--lr", args.lr),
        "momentum": ("--momentum", args.momentum),
        "nesterov": ("--nesterov", args.nesterov),
        "convention": ("--convention", args.convention),
        "weight_decay": ("--weight-decay", args.weight_decay),
    }
    for name, (flag, value) in flags.items():
        if value is None:
            continue
        if name not in known:
            raise ValueError(
                f"{flag}: optimizer {args.optimizer!r} has no {name!r} hyperparameter; "
                f"its hyperparameters: {', '.join(sorted(known))}"
            )
        given[name] = value
    for item in args.hyper:
        if "=" not in item:
            raise ValueError(f"--hyper expects NAME=VALUE, got {item!r}")
        name, text = item.split("=", 1)
        name = name.strip().replace("-", "_")
        if name not in known:
            raise ValueError(
                f"--hyper {item}: optimizer {args.optimizer!r} has no {name!r} hyperparameter; "
                f"its hyperparameters: {', '.join(sorted(known))}"
            )
        given[name] = parse_literal(text)
    return given


def lr_schedule(kind: str, lr: float, steps: int):
    """The learning-rate schedule for --schedule (a function of the step)."""
    from .. import schedules as S

    if kind == "constant":
        return S.constant(lr)
    if kind == "cosine":
        return S.cosine(lr, steps)
    if kind == "step":
        return S.step_decay(lr, step_size=max(1, math.ceil(steps / 3)), gamma=0.1)
    if kind == "onecycle":
        if steps < 4:
            raise ValueError(f"--schedule onecycle needs --steps >= 4, got {steps}")
        return S.one_cycle(lr, steps)
    if kind == "warmup-cosine":
        if steps < 2:
            raise ValueError(f"--schedule warmup-cosine needs --steps >= 2, got {steps}")
        return S.warmup_cosine(lr, max(1, round(0.05 * steps)), steps)
    raise ValueError(f"unknown schedule {kind!r}; known: {', '.join(SCHEDULES)}")


def pick_device(name: str | None):
    import torch

    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"--device: {error}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine")
    return device


def evaluate(model, x, y, batch: int = 4096) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``(x, y)``."""
    import torch
    import torch.nn.functional as F

    was_training = model.training
    model.eval()
    loss_sum, correct = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(y), batch):
            logits = model(x[start:start + batch])
            target = y[start:start + batch]
            loss_sum += float(F.cross_entropy(logits, target, reduction="sum"))
            correct += int((logits.argmax(1) == target).sum())
    model.train(was_training)
    return loss_sum / len(y), correct / len(y)


def train(
    args: argparse.Namespace,
    on_step: Callable[[int, float], None] | None = None,
) -> dict[str, Any]:
    """Train as ``args`` says and return the results (no printing)."""
    import torch
    import torch.nn.functional as F

    from .. import make_optimizer, rules
    from ..data import load_dataset
    from ..models import build_model
    from ..schedules import HyperScheduler, one_cycle_momentum

    # validate everything before loading data or training
    hyper = optimizer_hyper(args)
    preset = rules.get(args.optimizer)
    full = preset.hyper(**hyper)  # raises ValueError naming a bad argument
    lr = float(full["lr"]) if "lr" in full else None
    if args.schedule != "constant" and lr is None:
        raise ValueError(f"--schedule {args.schedule}: optimizer {args.optimizer!r} has no learning rate")
    schedule = lr_schedule(args.schedule, lr, args.steps) if lr is not None else None
    device = pick_device(args.device)

    data = load_dataset(args.data, seed=args.seed)
    torch.manual_seed(args.seed)
    model = build_model(args.model, data.features, data.classes).to(device)
    x_train, y_train = data.x_train.to(device), data.y_train.to(device)
    x_test, y_test = data.x_test.to(device), data.y_test.to(device)
    optimizer = make_optimizer(args.optimizer, model.parameters(), **hyper)

    drive: dict[str, Any] = {}
    if schedule is not None and args.schedule != "constant":
        drive["lr"] = schedule
    if args.schedule == "onecycle":
        if "momentum" in full:
            drive["momentum"] = one_cycle_momentum(args.steps)
        elif isinstance(full.get("betas"), tuple) and len(full["betas"]) == 2:  # Adam-style (beta1, beta2)
            drive["betas"] = (one_cycle_momentum(args.steps), None)
    scheduler = HyperScheduler(optimizer, **drive) if drive else None

    writer = None
    if args.tensorboard is not None:
        from ..tensorboard import RunWriter

        run_name = f"{args.optimizer}_lr={lr}_{time.strftime('%Y%m%d-%H%M%S')}_seed={args.seed}"
        writer = RunWriter(args.tensorboard, run_name, config(args, full))
    log_every = max(1, args.steps // 200)

    n = len(y_train)
    batch = min(args.batch_size, n)
    generator = torch.Generator().manual_seed(args.seed)
    order = torch.randperm(n, generator=generator).to(device)
    position = 0
    model.train()
    started = time.perf_counter()
    try:
        for step in range(args.steps):
            if position + batch > n:
                order = torch.randperm(n, generator=generator).to(device)
                position = 0
            index = order[position:position + batch]
            position += batch
            loss = F.cross_entropy(model(x_train[index]), y_train[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if writer is not None and (step % log_every == 0 or step == args.steps - 1):
                group = optimizer.param_groups[0]
                values = {"loss": float(loss.detach())}
                if "lr" in group:
                    values["lr"] = float(group["lr"])
                if "momentum" in group:
                    values["momentum"] = float(group["momentum"])
                    if "lr" in group:
                        from ..tensorboard import effective_lr

                        values["effective_lr"] = effective_lr(
                            values["lr"], values["momentum"], group.get("convention", "torch"))
                betas = group.get("betas")
                if isinstance(betas, (tuple, list)) and len(betas) == 2:
                    values["beta1"] = float(betas[0])
                writer.log(step, **values)
            if scheduler is not None:
                scheduler.step()
            if on_step is not None:
                on_step(step, loss)
        seconds = time.perf_counter() - started
        if callable(getattr(optimizer, "eval", None)):
            optimizer.eval()  # e.g. Schedule-Free: evaluate at the averaged point x
        train_loss, train_accuracy = evaluate(model, x_train, y_train)
        test_loss, test_accuracy = evaluate(model, x_test, y_test)
    except BaseException:
        if writer is not None:
            writer.close()
        raise
    results = {
        "train_loss": train_loss,
        "train_accuracy": train_accuracy,
        "test_loss": test_loss,
        "test_accuracy": test_accuracy,
        "seconds": seconds,
        "device": str(device),
        "config": config(args, full),
    }
    if writer is not None:
        writer.finish({k: results[k] for k in ("train_loss", "train_accuracy", "test_loss", "test_accuracy")})
        results["tensorboard"] = str(writer.path)
    return results


def config(args: argparse.Namespace, full: dict[str, Any]) -> dict[str, Any]:
    """The run's settings as plain JSON data (the rule's full hyperparameters included)."""
    plain = {k: (v if isinstance(v, (int, float, str, bool)) or v is None else str(v)) for k, v in full.items()}
    return {
        "data": args.data,
        "model": args.model,
        "optimizer": args.optimizer,
        "hyperparameters": plain,
        "schedule": args.schedule,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "seed": args.seed,
    }


def run_command(args: argparse.Namespace) -> int:
    from ..optim import NonFiniteGradientError

    # checks that need no data, so a typo fails at once
    optimizer_hyper(args)
    if args.json is not None and args.json.is_dir():
        raise ValueError(f"--json {args.json}: is a directory; give a file path")

    progress = None
    if not args.quiet and sys.stderr.isatty():
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        progress = Progress(
            TextColumn("training"), BarColumn(), MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"), TimeRemainingColumn(), transient=True,
        )
    state = {"smooth": None}

    def on_step(step: int, loss) -> None:
        if progress is None or (step % 20 and step != args.steps - 1):
            return
        value = float(loss.detach())
        state["smooth"] = value if state["smooth"] is None else 0.9 * state["smooth"] + 0.1 * value
        progress.update(task, completed=step + 1, loss=f"{state['smooth']:.4f}")

    try:
        if progress is not None:
            with progress:
                task = progress.add_task("train", total=args.steps, loss="-")
                results = train(args, on_step)
        else:
            results = train(args)
    except NonFiniteGradientError as error:
        print(f"inertia train: error: {error}", file=sys.stderr)
        return 1
    print(f"train loss     {results['train_loss']:.4f}   (train accuracy {results['train_accuracy']:.2%})")
    print(f"test accuracy  {results['test_accuracy']:.2%}   (test loss {results['test_loss']:.4f})")
    print(f"{args.steps} steps in {results['seconds']:.1f} s on {results['device']}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    if "tensorboard" in results:
        print(f"tensorboard run: {results['tensorboard']}")
    return 0


run = run_command  # the name the command-line entry calls
