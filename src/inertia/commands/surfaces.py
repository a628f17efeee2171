"""``inertia surfaces``: list the test surfaces for ``inertia race --surface NAME``."""
from __future__ import annotations

import argparse
from typing import Any


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("surfaces", help="list the test surfaces with a one-line description",
                              description=__doc__)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..surfaces import DESCRIPTIONS, SURFACES

    width = max(map(len, SURFACES))
    for name in SURFACES:
        print(f"{name:<{width}}  {DESCRIPTIONS.get(name, '')}")
    return 0
