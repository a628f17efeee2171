"""The command line's one vocabulary: the options several commands share, how values are read, how
errors and numbers are shown.

Choices come from the registries (:data:`inertia.rules.PRESETS`, :data:`inertia.data.DATASETS`,
:data:`inertia.models.MODELS`, :data:`inertia.sweeps.objective.LOSSES`,
:data:`inertia.sweeps.specs.BACKENDS`), so a new entry is an option value at once. Every reader
raises a ``ValueError`` (or argparse's ``ArgumentTypeError``) whose one line names the option.
"""
from __future__ import annotations

import argparse
import math
import re
from typing import Any, NoReturn

from .._text import mean_std, parse_literal  # noqa: F401 - mean_std: the commands' one formatter


def usage_error(prog: str, message: str) -> str:
    """The one line a usage error prints: ``inertia sweep: error: MESSAGE (see inertia sweep --help)``."""
    return f"{prog}: error: {message} (see {prog} --help)\n"


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: the usage block stays in ``--help``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, usage_error(self.prog, message))


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions as written; every option's help ends with its default, unless it names it
    already or there is none to show (None, a switch, an empty list)."""

    def _get_help_string(self, action: argparse.Action) -> str:   # the hook ArgumentDefaultsHelpFormatter uses
        text = action.help or ""
        nothing = action.default is None or action.default == [] or action.default == argparse.SUPPRESS
        if "default" in text or nothing or action.nargs == 0 or not action.option_strings:
            return text
        return text + " (default: %(default)s)"


NEGATIVE_VALUE = re.compile(r"^-\.?\d")
"""A word such as ``-0.1,0.1`` or ``-1e-3:1:8``: no option's name starts with a digit, so it is a value."""


def attach_negative_values(words: list[str]) -> list[str]:
    """``--lr -0.1,0.1`` -> ``--lr=-0.1,0.1``: argparse takes a word that starts with ``-`` for an option
    unless it is one plain negative number, so a list or range of them needs the ``=`` form."""
    out: list[str] = []
    for word in words:
        if out and NEGATIVE_VALUE.match(word) and out[-1].startswith("--") and "=" not in out[-1]:
            out[-1] = f"{out[-1]}={word}"
        else:
            out.append(word)
    return out


class _Silent(argparse.ArgumentParser):
    """A parser that gives up without a word: what it cannot read, the full parser reports."""

    def error(self, message: str) -> NoReturn:
        raise _Unread(message)


class _Unread(Exception):
    pass


def check_sweep_size(words: list[str]) -> None:
    """Read and bound ``inertia sweep``'s values (``--lr``, ``--momentum``, ``--hyper NAME=VALUES``) and
    ``--trials`` in the command's words, before torch is imported: a grid this machine cannot hold
    (``--lr 1e-3:1:100000000``) or a search too long to store is refused in one line at once, with the
    message the sweep's specs give. The axes given bound the grid from below (an axis left out has one
    value or more); anything else is left to the full parser."""
    from .._grid import check_grid_size, check_trials, parse_values

    early = _Silent(add_help=False, allow_abbrev=False)
    early.add_argument("-h", "--help", action="store_true")
    early.add_argument("--lr")
    early.add_argument("--momentum")
    early.add_argument("--hyper", action="append", default=[])
    early.add_argument("--trials", type=int)
    try:
        given, _ = early.parse_known_args(words)
    except _Unread:
        return
    if given.help:
        return
    axes = {"lr": given.lr, "momentum": given.momentum, **pairs(given.hyper, "--hyper", "NAME=VALUES")}
    sizes = {name: len(set(parse_values(text, name))) for name, text in axes.items() if text is not None}
    if sizes:
        check_grid_size(sizes)
    if given.trials is not None:
        check_trials(given.trials)


# ---------------------------------------------------------------- reading values

def positive_int(text: str) -> int:
    """An argparse ``type`` for a count >= 1 (argparse's error names the option)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def finite_float(text: str) -> float:
    """An argparse ``type`` for a finite number (argparse's error names the option)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def pairs(items: list[str], option: str, form: str = "NAME=VALUE") -> dict[str, str]:
    """``["weight-decay=0,1e-4"]`` -> ``{"weight_decay": "0,1e-4"}``: NAME=VALUE items, each name once."""
    out: dict[str, str] = {}
    for item in items or []:
        name, eq, value = item.partition("=")
        name = name.strip().replace("-", "_")
        if not eq or not name.isidentifier() or not value.strip():
            raise ValueError(f"{option} expects {form}, got {item!r}")
        if name in out:
            raise ValueError(f"{option} {name} is given twice")
        out[name] = value.strip()
    return out


def literals(items: list[str], option: str) -> dict[str, Any]:
    """:func:`pairs` with each value read as a literal: ``true``/``false``, an int, a float, else the word."""
    return {name: parse_literal(value) for name, value in pairs(items, option).items()}


def schedules(items: list[str], option: str = "--schedule",
              form: str = "NAME=SPEC such as lr=cosine") -> dict[str, str]:
    """``["lr=cosine", "momentum=sutskever_ramp(0.99)"]`` -> ``{name: spec}``, every spec read once here
    (:func:`inertia.schedules.parse_spec`), so a typo fails before any data is loaded."""
    from ..schedules import parse_spec

    specs = pairs(items, option, form)
    for name, spec in specs.items():
        try:
            parse_spec(spec)
        except ValueError as error:
            raise ValueError(f"{option} {name}={spec}: {error}") from None
    return specs


def check_device(text: str | None, option: str = "--device") -> None:
    """A ``ValueError`` naming ``option`` unless ``text`` is a device this machine has
    (cpu, or cuda[:N], mps or xpu[:N] with such a device present)."""
    if text is None:
        return
    import torch

    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise ValueError(f"{option} {text}: not a device; use cpu, cuda, cuda:N, mps or xpu") from None
    if device.type == "cpu":
        return
    if device.type not in ("cuda", "mps", "xpu"):
        raise ValueError(f"{option} {text}: not a device to train on; use cpu, cuda, cuda:N, mps or xpu")
    backend = getattr(torch, device.type, None)     # torch.cuda, torch.mps, torch.xpu (absent in older torch)
    if backend is None or not backend.is_available():
        raise ValueError(f"{option} {text}: this machine has no {device.type} device "
                         f"(torch {torch.__version__}); use --device cpu")
    count = backend.device_count()
    if device.index is not None and device.index >= count:
        raise ValueError(f"{option} {text}: this machine has {count} {device.type} device(s), "
                         f"{device.type}:0 to {device.type}:{count - 1}")


def check_writable(path: Any, option: str, folder: bool) -> None:
    """A ``ValueError`` naming ``option`` unless ``path`` can be written: a folder (``folder``) or a file
    that is, or can be made, with every missing folder above it. Checked before training, so an output
    path cannot fail a finished run."""
    import os
    from pathlib import Path

    if not str(path).strip():
        raise ValueError(f"{option} must not be empty")
    path = Path(path)
    if path.exists() and path.is_dir() != folder:
        raise ValueError(f"{option} {path}: is a {'file' if folder else 'folder'}; give a "
                         f"{'folder' if folder else 'file path'}")
    if path.exists():
        if not os.access(path, os.W_OK):
            raise ValueError(f"{option} {path}: is not writable")
        return
    above = path.parent
    while not above.exists():
        above = above.parent
    if not above.is_dir():
        raise ValueError(f"{option} {path}: {above} is a file, not a folder")
    if not os.access(above, os.W_OK | os.X_OK):
        raise ValueError(f"{option} {path}: cannot create it, {above} is not writable")


# ---------------------------------------------------------------- the shared options

def _listing(registry: dict[str, str]) -> str:
    return "; ".join(f"{name} ({text})" for name, text in registry.items()).replace("%", "%%")


def add_data(group: Any) -> None:
    from ..data import DATASETS

    group.add_argument("--data", default="mnist1d", metavar="NAME|PATH",
                       help=f"dataset: {_listing(DATASETS)}; or a .npz (x_train, y_train, x_test, y_test, or x, y) / "
                            ".csv (last column = label) file")


def add_model(group: Any) -> None:
    from ..models import MODELS

    group.add_argument("--model", default="mlp", metavar="NAME|MODULE:FACTORY",
                       help=f"model: {_listing(MODELS)}; or package.module:factory importable from here, "
                            "e.g. examples.digits_cnn:DigitsCNN")
    group.add_argument("--model-arg", action="append", default=[], metavar="NAME=VALUE",
                       help="an argument of the model factory, e.g. --model-arg width=32 (repeatable)")


def add_optimizer(group: Any) -> None:
    from ..rules import PRESETS, TUNERS

    group.add_argument("--optimizer", default="momentum", metavar="NAME",
                       help=f"a registered rule: {', '.join(PRESETS)}; or a tuner: "
                            + "; ".join(f"{name}[:NAME] ({text})" for name, text in TUNERS.items()))


def loss_choices() -> tuple[str, ...]:
    """The names ``--loss`` takes: auto and the objective's losses."""
    from ..sweeps.objective import LOSSES

    return ("auto", *LOSSES)


def add_loss(group: Any) -> None:
    group.add_argument("--loss", default="auto", choices=loss_choices(),
                       help="the loss (auto: cross_entropy for integer labels, mse for float targets); "
                            "cross_entropy and bce_with_logits report accuracy, mse, l1 and huber RMSE and R²")


def add_schedule(group: Any, start: str) -> None:
    """``--schedule NAME=SPEC`` (repeatable); ``start`` says where each schedule starts."""
    group.add_argument("--schedule", action="append", default=[], metavar="NAME=SPEC",
                       help="drive hyperparameter NAME by a schedule, e.g. --schedule lr=cosine --schedule "
                            f"'momentum=sutskever_ramp(0.99)' ({start}; a spec may pin any argument, e.g. "
                            "cosine(steps=300); inertia.schedules lists them; repeatable)")


def add_device(group: Any) -> None:
    group.add_argument("--device", default=None, metavar="cpu|cuda|cuda:N|mps|xpu",
                       help="where to train (default: cuda when available, else cpu)")


def add_dtype(group: Any, help: str = "the parameters' dtype") -> None:
    """``--dtype``: ``float32`` (the default) or ``float64``, kept as its name."""
    group.add_argument("--dtype", choices=("float32", "float64"), default="float32", help=help)


def add_threads(group: Any) -> None:
    group.add_argument("--threads", type=positive_int, default=None, metavar="N",
                       help="torch's intra-op threads (default: OMP_NUM_THREADS if set, else one for a small model "
                            "and the free cores for a large one)")


def add_backend(group: Any) -> None:
    from ..sweeps.specs import BACKENDS

    group.add_argument("--backend", default="auto", choices=BACKENDS,
                       help="batched: hand-written backprop for MLPs; conv: chains of Conv2d, BatchNorm2d, pooling "
                            "and Linear; vmap: any model; auto: batched or conv where they apply, else vmap")

