"""Pages that show a file of the repository's root (README.md, SECURITY.md).

A line ``--8<-- "FILE"`` is replaced by that file, and ``--8<-- "FILE:NAME"``
by the part of it between ``<!-- --8<-- [start:NAME] -->`` and
``<!-- --8<-- [end:NAME] -->``.  Those files link into the site as
``docs/PAGE.md`` (right on the repository's front page); here the same links
are rewritten to ``PAGE.md``, and links to the root files themselves to the
pages that show them, so `mkdocs build --strict` checks every one.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
# A root file's page in the site.
PAGES = {"README.md": "index.md", "SECURITY.md": "security.md"}
_INCLUDE = re.compile(r'^--8<-- "([^":]+)(?::([\w-]+))?"\s*$', re.MULTILINE)
_LINK = re.compile(r"\]\((docs/)?([^)#\s]*)(#[^)\s]*)?\)")


def _part(path: str, name: str | None) -> str:
    text = (ROOT / path).read_text(encoding="utf-8")
    if name is None:
        return text
    start, end = f"<!-- --8<-- [start:{name}] -->", f"<!-- --8<-- [end:{name}] -->"
    if start not in text or end not in text:
        raise ValueError(f"{path} has no part {name!r} ({start} ... {end})")
    return text.split(start, 1)[1].split(end, 1)[0]


def _relink(match: re.Match[str]) -> str:
    in_docs, target, anchor = match.group(1), match.group(2), match.group(3) or ""
    if not in_docs and target in PAGES:
        target = PAGES[target]
    return f"]({target}{anchor})"


def on_page_markdown(markdown: str, **_: Any) -> str:
    return _INCLUDE.sub(
        lambda m: _LINK.sub(_relink, _part(m.group(1), m.group(2))), markdown
    )
