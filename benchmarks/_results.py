"""What every benchmark does with its figures once it has printed them."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_json(payload: dict[str, Any], path: str | Path) -> Path:
    """Write a benchmark's figures to ``path`` (making its folder) and say where they went."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1))
    print(f"wrote {path}")
    return path
