"""MkDocs hook: ``<!-- inertia-help COMMAND -->`` in a page becomes that command's ``--help``.

The command-line reference is then the parser's own text, never a copy that can go stale.
"""
from __future__ import annotations

import contextlib
import io
import os
import re

MARK = re.compile(r"<!-- inertia-help ?([a-z]*) -->")


def _help(command: str) -> str:
    from inertia.cli import main

    os.environ["COLUMNS"] = "100"
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        main([command, "--help"] if command else ["--help"])
    return out.getvalue().rstrip()


def on_page_markdown(markdown: str, **_: object) -> str:
    return MARK.sub(lambda m: f"```text\n{_help(m.group(1))}\n```", markdown)
