"""The documentation site: every tutorial's Python runs as written, and the site builds in strict mode."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = sorted((ROOT / "docs" / "tutorials").glob("*.md"))


def python_blocks(page: Path) -> str:
    return "\n".join(re.findall(r"```python\n(.*?)```", page.read_text(), re.S))


@pytest.mark.parametrize("page", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs_as_written(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    code = python_blocks(page)
    assert code, f"{page.name} has no Python example"
    monkeypatch.chdir(tmp_path)   # files a tutorial writes land here
    exec(compile(code, str(page), "exec"), {"__name__": "__tutorial__"})


def test_site_builds_in_strict_mode(tmp_path: Path):
    mkdocs = shutil.which("mkdocs", path=str(Path(sys.executable).parent))
    if mkdocs is None:
        pytest.skip("mkdocs is not installed (pip install -e '.[docs]')")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run([mkdocs, "build", "--strict", "-d", str(tmp_path / "site")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    page = (tmp_path / "site" / "reference" / "cli" / "index.html").read_text()
    assert "--momentum" in page, "the command-line reference should hold the parsers' own --help"
    assert "HyperScheduler" in (tmp_path / "site" / "reference" / "schedules" / "index.html").read_text()
