"""The ``inertia`` command line: ``inertia COMMAND --help`` explains each command.

Input errors print one line and exit 2 (set ``INERTIA_DEBUG=1`` for the traceback); :func:`main`
returns the exit status in every case, ``--help`` and usage errors included.
"""
from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys

# subcommand modules, in the order --help lists them
COMMANDS = [
    "inertia.commands.train",
    "inertia.commands.sweep",
    "inertia.commands.find",
    "inertia.commands.race",
    "inertia.commands.surfaces",
]


def build_parser() -> argparse.ArgumentParser:
    from . import __version__
    from .commands.options import Parser

    parser = Parser(
        prog="inertia",
        description=(
            "Momentum for PyTorch: train with any momentum convention, sweep learning rate x "
            "momentum by training every configuration at once, and race optimizers on test surfaces."
        ),
    )
    parser.add_argument("--version", action="version", version=f"inertia {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(name).add_parser(subparsers)
    return parser


STOPS = (signal.SIGINT, signal.SIGTERM)
"""Ctrl-C, and ``kill``'s default signal: both stop a command the same way (a sweep gives back its trials)."""


class _Interrupts:
    """Ctrl-C (or SIGTERM) as Python's own Ctrl-C handler raises it, and remembered: a library that
    swallows the KeyboardInterrupt while the commands' modules import (a bare ``except:``) cannot lose it."""

    def __init__(self) -> None:
        self.seen: int | None = None

    def __call__(self, signum: int, frame: object) -> None:
        self.seen = signum
        raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    from .commands.options import attach_negative_values, check_sweep_size, usage_error

    words = attach_negative_values(sys.argv[1:] if argv is None else list(argv))
    command = next((w for w in words if not w.startswith("-")), "")
    interrupts = _Interrupts()
    previous = {stop: signal.signal(stop, interrupts) for stop in STOPS} if _main_thread() else {}
    try:
        if command == "sweep":
            check_sweep_size(words)   # before torch loads (seconds): a sweep too large is refused at once
        parser = build_parser()
        if interrupts.seen:
            raise KeyboardInterrupt
        try:
            args, unknown = parser.parse_known_args(words)
        except SystemExit as done:   # --help, --version, or a one-line usage error (exit status 2)
            return int(done.code or 0)
        command = args.command
        if unknown:   # named with the command, whose --help lists its options
            print(usage_error(f"inertia {command}", f"unrecognized arguments: {' '.join(unknown)}"),
                  end="", file=sys.stderr)
            return 2
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        stop = interrupts.seen or signal.SIGINT
        how = "interrupted" if stop == signal.SIGINT else f"stopped by {signal.Signals(stop).name}"
        hint = "; run the same command again to resume" if command == "sweep" else ""
        print(f"inertia {command}: {how}{hint}", file=sys.stderr)
        return 128 + stop
    except (ValueError, TypeError, OSError) as error:   # OSError: a read-only or full disk, a missing file
        if os.environ.get("INERTIA_DEBUG"):
            raise
        print(f"inertia {command}: error: {_one_line(error)}", file=sys.stderr)
        return 2
    except FloatingPointError as error:  # NonFiniteGradientError: training blew up
        print(f"inertia {command}: {_one_line(error)}", file=sys.stderr)
        return 1
    finally:
        for stop, handler in previous.items():
            if handler is not None:   # None: a handler not set from Python, which cannot be put back
                signal.signal(stop, handler)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 400 else text[:397] + "..."


if __name__ == "__main__":
    sys.exit(main())
