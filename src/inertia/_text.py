"""Reading the values users type on the command line (``key=value`` options)."""
from __future__ import annotations

from typing import Any


def parse_literal(text: str) -> Any:
    """``"true"``/``"yes"`` -> True, ``"false"``/``"no"`` -> False, then int, then float, else the string."""
    stripped = text.strip()
    low = stripped.lower()
    if low in ("true", "yes"):
        return True
    if low in ("false", "no"):
        return False
    for kind in (int, float):
        try:
            return kind(stripped)
        except ValueError:
            pass
    return stripped
