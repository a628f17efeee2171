"""``inertia surfaces``: list the test surfaces for ``inertia race --surface NAME`` and their parameters
(``--surface NAME:key=value,...``, e.g. ``quadratic:condition=50,rotate=0.5``)."""
from __future__ import annotations

import argparse
import inspect
from typing import Any

from . import options


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("surfaces", help="list the test surfaces, each with its parameters",
                              description=__doc__, formatter_class=options.HelpFormatter)
    p.set_defaults(run=run)
    return p


def parameters(factory: Any) -> str:
    """``condition=100.0, dim=2, ...``: a surface factory's parameters with their defaults."""
    shown = [name if p.default is inspect.Parameter.empty else f"{name}={p.default!r}"
             for name, p in inspect.signature(factory).parameters.items()]
    return ", ".join(shown) or "none"


def run(args: argparse.Namespace) -> int:
    from ..surfaces import DESCRIPTIONS, SURFACES

    width = max(map(len, SURFACES))
    for name, factory in SURFACES.items():
        print(f"{name:<{width}}  {DESCRIPTIONS.get(name, '')}")
        print(f"{'':<{width}}  parameters: {parameters(factory)}")
    return 0
