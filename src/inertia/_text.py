"""Reading the values users type on the command line (``key=value`` options), and writing numbers back."""
from __future__ import annotations

import math
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


def mean_std(mean: Any, std: Any = None, fmt: str = "{:.4f}", scale: float = 1.0) -> str:
    """``mean ± std`` (each times ``scale``, formatted by ``fmt``); ``mean`` alone when ``std`` is None or
    not finite (one run), ``-`` when ``mean`` is missing or not finite."""
    if not isinstance(mean, (int, float)) or not math.isfinite(mean):
        return "-"
    text = fmt.format(mean * scale)
    if isinstance(std, (int, float)) and math.isfinite(std):
        text += " ± " + fmt.format(std * scale)
    return text
