"""Hooks of the documentation site (mkdocs.yml).

- MkDocs hook: ``<!-- inertia-help COMMAND -->`` in a page becomes that command's ``--help``, so the
  command-line reference is the parser's own text, never a copy that can go stale.
- Griffe extension :class:`SphinxRoles`: the docstrings' Sphinx roles (``:class:`X```, ``:func:`~a.f```,
  ``:meth:`title <a.B.m>```) become mkdocstrings cross-references, so the docstrings need no rewrite.
"""
from __future__ import annotations

import contextlib
import html
import io
import os
import re
from typing import Any, Iterator

import griffe

MARK = re.compile(r"<!-- inertia-help ?([a-z]*) -->")
#: a Sphinx Python-domain role: :role:`target`, :role:`~target` (last part shown), :role:`title <target>`
ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|data|attr|exc|obj|const|type):`(?P<text>[^`]+)`")


def _help(command: str) -> str:
    from inertia.cli import main

    os.environ["COLUMNS"] = "100"
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        main([command, "--help"] if command else ["--help"])
    return out.getvalue().rstrip()


def on_page_markdown(markdown: str, **_: object) -> str:
    return MARK.sub(lambda m: f"```text\n{_help(m.group(1))}\n```", markdown)


def cross_reference(obj: griffe.Object, text: str) -> str:
    """One role's text as an optional autorefs cross-reference: a link where the target is rendered
    on the site, else the name as code (mkdocs-autorefs leaves an unresolved *optional* one as text)."""
    title, _, target = text.partition(" <")
    target = target.rstrip(">") if target else title
    short = target.startswith("~")
    target = target.lstrip("~!.")
    head, dot, rest = target.partition(".")
    try:
        full = obj.resolve(head) + dot + rest   # a name in the object's scope (members, imports, parents)
    except griffe.NameResolutionError:
        full = target                           # an absolute path: inertia.x.y, torch.optim.SGD
    shown = target.rsplit(".", 1)[-1] if short else (title if text != title else target)
    return f'<autoref identifier="{html.escape(full)}" optional><code>{html.escape(shown)}</code></autoref>'


def _objects(obj: griffe.Object) -> Iterator[griffe.Object]:
    yield obj
    for member in obj.members.values():
        if not member.is_alias:
            yield from _objects(member)


class SphinxRoles(griffe.Extension):
    """Turn the Sphinx roles of every docstring of a loaded package into cross-references."""

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        for obj in _objects(pkg):
            if obj.docstring is not None:
                obj.docstring.value = ROLE.sub(lambda m, o=obj: cross_reference(o, m["text"]), obj.docstring.value)
