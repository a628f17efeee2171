"""The ``inertia`` command line: ``inertia COMMAND --help`` explains each command.

Input errors print one line and exit 2 (set ``INERTIA_DEBUG=1`` for the traceback).
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
    parser = argparse.ArgumentParser(
        prog="inertia",
        description=(
            "Momentum for PyTorch: train with any momentum convention, sweep learning rate x "
            "momentum by training every configuration at once, and race optimizers on test surfaces."
        ),
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(name).add_parser(subparsers)
    return parser


class _Interrupts:
    """Ctrl-C as Python's own handler raises it, and remembered: a library that swallows the
    KeyboardInterrupt while the commands' modules import (a bare ``except:``) cannot lose it."""

    def __init__(self) -> None:
        self.seen = False

    def __call__(self, signum: int, frame: object) -> None:
        self.seen = True
        raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    command = next((w for w in words if not w.startswith("-")), "")
    interrupts = _Interrupts()
    previous = signal.signal(signal.SIGINT, interrupts) if _main_thread() else None
    try:
        parser = build_parser()
        if interrupts.seen:
            raise KeyboardInterrupt
        args = parser.parse_args(argv)
        command = args.command
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print(f"inertia {command}: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError) as error:   # OSError: a read-only or full disk, a missing file
        if os.environ.get("INERTIA_DEBUG"):
            raise
        print(f"inertia {command}: error: {_one_line(error)}", file=sys.stderr)
        return 2
    except FloatingPointError as error:  # NonFiniteGradientError: training blew up
        print(f"inertia {command}: {_one_line(error)}", file=sys.stderr)
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 400 else text[:397] + "..."


if __name__ == "__main__":
    sys.exit(main())
