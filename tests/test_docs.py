"""The documentation site: every tutorial's Python runs as written, and the site builds in strict mode."""
from __future__ import annotations

import importlib.util
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
    raw = {str(f.relative_to(tmp_path)): RAW_ROLE.findall(f.read_text()) for f in (tmp_path / "site").rglob("*.html")}
    assert not {f: roles for f, roles in raw.items() if roles}, "Sphinx roles left as written"
    engines = (tmp_path / "site" / "reference" / "engines" / "index.html").read_text()
    assert 'href="#inertia.surfaces.Surface"><code>Surface</code></a>' in engines   # :class:`~inertia.surfaces.Surface`


#: a Sphinx role as it shows when nothing turns it into a cross-reference
RAW_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|data|attr|exc|obj|const|type):(?:`|&#96;|<code>)")


def test_sphinx_roles_become_cross_references():
    griffe = pytest.importorskip("griffe")
    spec = importlib.util.spec_from_file_location("docs_hooks", ROOT / "scripts" / "docs_hooks.py")
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    code = '''
class Box:
    def fill(self):
        """Like :meth:`~Box.empty`, see :class:`Box` and :func:`the joiner <os.path.join>`."""

    def empty(self):
        """Undo :meth:`fill`."""
'''
    with griffe.temporary_visited_module(code, module_name="things") as module:
        hooks.SphinxRoles().on_package(pkg=module)
        fill, empty = module["Box.fill"].docstring.value, module["Box.empty"].docstring.value
    ref = '<autoref identifier="{}" optional><code>{}</code></autoref>'
    assert fill == (f"Like {ref.format('things.Box.empty', 'empty')}, see {ref.format('things.Box', 'Box')} "
                    f"and {ref.format('os.path.join', 'the joiner')}.")
    assert empty == f"Undo {ref.format('things.Box.fill', 'fill')}."
