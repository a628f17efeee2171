"""The ``inertia`` command line: ``inertia COMMAND --help`` explains each command.

Input errors print one line and exit 2 (set ``INERTIA_DEBUG=1`` for the traceback).
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

# subcommand modules, in the order --help lists them
COMMANDS = [
    "inertia.commands.train",
    "inertia.commands.sweep",
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, FileNotFoundError) as error:
        if os.environ.get("INERTIA_DEBUG"):
            raise
        print(f"inertia {args.command}: error: {error}", file=sys.stderr)
        return 2
    except FloatingPointError as error:  # NonFiniteGradientError: training blew up
        print(f"inertia {args.command}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
