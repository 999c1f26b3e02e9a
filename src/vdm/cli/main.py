"""``vdm`` — run and manage the gateway.

Each command group lives in its own module under ``vdm.cli`` and is
registered here with one line.
"""

from __future__ import annotations

import typer

from vdm import __version__
from vdm.cli import config as config_cli
from vdm.cli import grpc_server, proxy, tokens
from vdm.cli import health as health_cli
from vdm.cli import manage as manage_cli
from vdm.cli import server as server_cli
from vdm.cli import wrap as wrap_cli
from vdm.cli.common import console, errors, settings_or_exit  # noqa: F401  (for other groups)

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


@app.command()
def version() -> None:
    """Print the version."""
    console.print(f"vdm {__version__}")


def main() -> None:  # pragma: no cover - console script entry
    app(prog_name="vdm")
