"""What every ``vdm`` command group shares: consoles, settings, one-line errors.

Every CLI failure is one clear line on stderr and a non-zero exit
(:func:`fail`), never a traceback.
"""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from vdm.config import ConfigError, Settings, load_settings

console = Console(stderr=False, highlight=False, soft_wrap=True)
errors = Console(stderr=True, highlight=False, soft_wrap=True)


def fail(message: str, code: int = 1) -> NoReturn:
    errors.print(f"[bold red]error:[/] {escape(message)}", markup=True, highlight=False)
    raise typer.Exit(code)


def settings_or_exit() -> Settings:
    """The settings, or every configuration problem listed and exit 2."""
    try:
        return load_settings()
    except ConfigError as exc:
        errors.print("[bold red]configuration error[/]")
        for problem in exc.problems:
            errors.print(f"  - {problem}", markup=False)
        raise typer.Exit(2) from None


def settings_or_none() -> Settings | None:
    """The settings when they load (commands that work without them)."""
    try:
        return load_settings()
    except ConfigError:
        return None
