"""The tables of ``docs/configuration.md``, written from the settings table.

The page is prose around generated blocks: each table stands between
``<!-- generated: NAME -->`` and ``<!-- end generated -->`` (NAME: ``top``, a
section, or ``providers``), and :func:`render` rewrites those blocks from the
table, the prose untouched.  ``python -m vdm.settings_docs [PATH]`` (or
``vdm config docs --write PATH``) updates the page; a test fails when the
committed page differs from what :func:`render` makes of it.  Without a page,
:func:`render` gives every table under its heading.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable
from pathlib import Path

from vdm.settings.provider import PROVIDER_SETTINGS
from vdm.settings.spec import Setting, rows
from vdm.settings_table import SECTIONS, TOP

DOC_PATH = Path("docs") / "configuration.md"

_BLOCK = re.compile(r"(<!-- generated: (\w+) -->\n).*?(<!-- end generated -->)", re.S)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _name(text: str | None) -> str:
    return f"`{text}`" if text else "-"


def _table(settings: Iterable[Setting]) -> list[str]:
    lines = [
        "| key | variable | type | default | what |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in settings:
        default = "-" if row.secret and row.default is None else row.default_shown
        help = row.help + (" Secret: shown as a hash." if row.secret else "")
        lines.append(
            f"| {_name(row.key)} | {_name(row.env)} | {_cell(row.kind.label)} "
            f"| {_cell(default)} | {_cell(help)} |"
        )
    return lines


def tables() -> dict[str, list[str]]:
    """Each block's table: ``top``, every section, ``providers``."""
    out = {"top": _table(TOP)}
    for section in SECTIONS:
        out[section.SECTION] = _table(rows(section))
    out["providers"] = _table(PROVIDER_SETTINGS.values())
    return out


def render(page: str | None = None) -> str:
    """``page`` with its generated blocks rewritten; without a page, every table."""
    found = tables()
    if page is None:
        return "\n".join(
            f"## {name}\n\n" + "\n".join(lines) + "\n" for name, lines in found.items()
        )

    def block(match: re.Match[str]) -> str:
        return match.group(1) + "\n".join(found[match.group(2)]) + "\n" + match.group(3)

    return _BLOCK.sub(block, page)


def main(argv: list[str]) -> int:
    path = Path(argv[0]) if argv else DOC_PATH
    path.write_text(render(path.read_text()))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
