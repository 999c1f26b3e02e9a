"""How every ``vdm`` command prints data, and shows that it is waiting.

* :func:`table` — on a terminal a Rich table whose cells wrap but are never
  cut (no ``…``), its *whole* columns (ids, secrets) never even wrapped, so a
  copied id is the id; anywhere else (a pipe, a file) plain lines, fields
  separated by a tab, nothing wrapped or cut, so ``vdm config show | grep``
  and ``cut -f1`` see every value whole.
* :func:`emit_json` — ``--json``: the data as JSON, coloured on a terminal.
* :func:`waiting` — a Rich status spinner naming what a wait is for, on
  stderr when stderr is a terminal; nothing when it is not (piped output
  stays clean, logs get no spinner frames).

Cells are plain strings (printed as they are, never parsed as markup, since
they carry data such as error messages) or :class:`rich.text.Text` for
styled ones, which are printed without their style off a terminal.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from vdm.cli.common import console, errors

Cell = str | Text
# Narrowest a wrapping column gets before the table grows past the terminal.
_NARROWEST = 12


def _plain(cell: Cell) -> str:
    text = cell.plain if isinstance(cell, Text) else cell
    return text.replace("\t", " ").replace("\r\n", ", ").replace("\n", ", ")


def table(
    headers: Sequence[str] | None,
    rows: Sequence[Sequence[Cell]],
    *,
    whole: Collection[str] = (),
) -> None:
    """Print ``rows`` under ``headers`` (None: a key/value table without a
    header line); ``whole`` names the columns never wrapped on a terminal
    (the first column, when there are no headers)."""
    if not console.is_terminal:
        lines = ([list(headers)] if headers else []) + [list(row) for row in rows]
        sys.stdout.write("".join("\t".join(_plain(c) for c in line) + "\n" for line in lines))
        sys.stdout.flush()
        return
    width = len(headers) if headers else max((len(r) for r in rows), default=0)
    names = list(headers) if headers else [""] * width
    grid = Table(box=None, pad_edge=False, show_header=headers is not None, show_edge=False)
    needed = 2 * max(width - 1, 0)
    for index, name in enumerate(names):
        longest = max((len(_plain(r[index])) for r in rows if index < len(r)), default=0)
        longest = max(longest, len(name))
        if name in whole or (headers is None and index == 0):
            grid.add_column(name, no_wrap=True, min_width=longest)
            needed += longest
        else:
            grid.add_column(name, overflow="fold")
            needed += min(longest, _NARROWEST)
    for row in rows:
        grid.add_row(*(c if isinstance(c, Text) else Text(c) for c in row))
    # Wider than the terminal when the whole columns ask for it: the terminal
    # then wraps the line, but no id is cut or dropped.
    out = console
    if needed > console.width:
        out = Console(
            file=console.file,
            width=needed,
            highlight=False,
            force_terminal=True,
            color_system=console.color_system,  # type: ignore[arg-type]
        )
    out.print(grid, soft_wrap=False)


def emit_json(value: Any) -> None:
    """``--json``: ``value`` as JSON on stdout (coloured only on a terminal)."""
    text = json.dumps(value, indent=2, default=str)
    if console.is_terminal:
        console.print_json(text)
    else:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()


@contextmanager
def waiting(what: str) -> Iterator[None]:
    """A spinner saying ``what`` while the block runs, on a terminal only."""
    if not errors.is_terminal:
        yield
        return
    with errors.status(Text(what), spinner="dots"):
        yield
