"""``vdm`` — run and manage the gateway.

Each command group lives in its own module under ``vdm.cli`` and is
registered here with one line.
"""

from __future__ import annotations

import os
import sys
import traceback
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
from vdm.cli.common import console, debugging, errors, settings_or_exit  # noqa: F401
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
    debug: Annotated[
        bool,
        typer.Option(
            "--debug",
            envvar="VDM_DEBUG",
            help="Debug logs, and a traceback with each error (also VDM_DEBUG=1).",
        ),
    ] = False,
) -> None:
    """vdm: a fast LLM gateway."""
    if debug:  # for this process, and the gateway processes it starts
        os.environ["VDM_DEBUG"] = "1"
        os.environ["LOG_LEVEL"] = "DEBUG"


@app.command()
def version() -> None:
    """Print the version."""
    console.print(f"vdm {__version__}")


def run(args: list[str] | None = None) -> int:
    """Run the command line; its exit code.  Every error is one line on
    stderr: a usage error (exit 2) with a pointer to ``--help``, any other
    failure (exit 1) with a pointer to ``--debug``, which adds the traceback."""
    command = typer.main.get_command(app)
    try:
        result = command.main(args=args, prog_name="vdm", standalone_mode=False)
    except typer.Abort:
        errors.print("[bold red]error:[/] aborted", highlight=False)
        return 1
    except MissingExtra as exc:  # a feature asked for without its package extra
        if debugging():
            traceback.print_exc()
        errors.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False)
        return 2
    except Exception as exc:
        code = _click_error(exc)
        if code is not None:
            return code
        if debugging():
            traceback.print_exc()
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        hint = "" if debugging() else " (run with --debug for the traceback)"
        errors.print(
            f"[bold red]error:[/] {escape(type(exc).__name__)}"
            f"{': ' + escape(detail) if detail else ''}{escape(hint)}",
            highlight=False,
        )
        return 1
    return result if isinstance(result, int) else 0


def _click_error(exc: Exception) -> int | None:
    """A Click error (Typer's own copy of Click, or Click's) told in one line;
    its exit code (2 for a usage error), or None for any other exception."""
    code = getattr(exc, "exit_code", None)
    if not isinstance(code, int) or not hasattr(exc, "format_message"):
        return None
    if type(exc).__name__ == "NoArgsIsHelpError":
        return 2  # the help was the answer (as Click exits)
    message = " ".join(str(exc.format_message()).split())
    ctx = getattr(exc, "ctx", None)
    hint = f" (see `{ctx.command_path} --help`)" if ctx is not None and code == 2 else ""
    errors.print(f"[bold red]error:[/] {escape(message + hint)}", highlight=False)
    return code


def main() -> None:  # pragma: no cover - console script entry
    sys.exit(run())
