"""Small helpers shared by the report pages."""
from __future__ import annotations

import html
import json
import math
from typing import Any

BASE_CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif; margin: 24px; color: #222; background: #fafafa; }
h1 { font-size: 1.4em; margin-bottom: 0.2em; }
h2 { font-size: 1.1em; margin-top: 1.4em; }
.sub { color: #555; margin-top: 0; }
.row { display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; }
.panel { background: white; border: 1px solid #ddd; border-radius: 6px; padding: 12px; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border-bottom: 1px solid #e3e3e3; padding: 4px 10px; text-align: right; }
th { background: #f0f0f0; }
td.left, th.left { text-align: left; }
.controls label { display: block; margin: 8px 0 2px; font-weight: 600; }
.controls input[type=range] { width: 320px; }
.value { font-family: ui-monospace, monospace; }
.ok { color: #1a7f37; } .bad { color: #c62828; }
svg text { font-size: 11px; fill: #333; }
img.figure { max-width: 100%; border: 1px solid #ddd; }
"""


def clean(value: Any, digits: int = 6) -> Any:
    """JSON-safe data: NaN/inf -> None, floats rounded to ``digits`` significant digits."""
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        return float(f"{value:.{digits}g}")
    if isinstance(value, dict):
        return {str(k): clean(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v, digits) for v in value]
    if hasattr(value, "tolist"):
        return clean(value.tolist(), digits)
    if isinstance(value, (bool, int, str)) or value is None:
        return value
    return str(value)


def script_json(data: Any) -> str:
    """JSON that is safe inside a <script> element."""
    text = json.dumps(data, separators=(",", ":"), allow_nan=False)
    return text.replace("</", "<\\/").replace("<!--", "<\\!--")


def esc(text: Any) -> str:
    return html.escape(str(text))


def page(title: str, body: str, css: str = "", script: str = "") -> str:
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{esc(title)}</title>\n<style>{BASE_CSS}{css}</style>\n</head>\n<body>\n{body}\n"
        f"<script>\n{script}\n</script>\n</body>\n</html>\n"
    )
