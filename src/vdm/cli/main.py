"""``vdm`` — run and manage the gateway.

Each command group lives in its own module under ``vdm.cli`` and is
registered here with one line.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from rich.markup import escape

from vdm import __version__
from vdm.cli import config as config_cli
from vdm.cli import grpc_server, proxy, tokens
from vdm.cli import health as health_cli
from vdm.cli import manage as manage_cli
from vdm.cli import server as server_cli
from vdm.cli import wrap as wrap_cli
from vdm.cli.common import console, errors, settings_or_exit  # noqa: F401  (for other groups)
from vdm.extras import MissingExtra

app = typer.Typer(
    name="vdm", help="vdm: a fast LLM gateway.", no_args_is_help=True, add_completion=False
)
app.add_typer(server_cli.app, name="server")
app.add_typer(config_cli.app, name="config")
app.add_typer(health_cli.health_app, name="health")
app.add_typer(health_cli.test_app, name="test")
app.add_typer(manage_cli.manage_app, name="manage")
app.add_typer(manage_cli.db_app, name="db")
wrap_cli.register(app)
app.add_typer(grpc_server.app, name="grpc")
app.add_typer(tokens.app, name="token")
app.add_typer(proxy.app, name="proxy")


def _print_version(value: bool) -> None:
    if value:
        console.print(f"vdm {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, callback=_print_version, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """vdm: a fast LLM gateway."""


@app.command()
def version() -> None:
    """Print the version."""
    console.print(f"vdm {__version__}")


def main() -> None:  # pragma: no cover - console script entry
    try:
        app(prog_name="vdm")
    except MissingExtra as exc:  # a feature asked for without its package extra
        errors.print(f"[bold red]error:[/] {escape(str(exc))}", markup=True, highlight=False)
        sys.exit(2)
