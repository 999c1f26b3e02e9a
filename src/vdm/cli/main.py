"""``vdm`` — run and manage the gateway."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from vdm import __version__
from vdm.cli import grpc_server, proxy, tokens
from vdm.config import ConfigError, Settings, load_settings

app = typer.Typer(
    name="vdm", help="vdm: a fast LLM gateway.", no_args_is_help=True, add_completion=False
)
server_app = typer.Typer(help="Run the gateway.", no_args_is_help=True)
app.add_typer(server_app, name="server")
app.add_typer(grpc_server.app, name="grpc")
app.add_typer(tokens.app, name="token")
app.add_typer(proxy.app, name="proxy")

console = Console(stderr=False, highlight=False, soft_wrap=True)
errors = Console(stderr=True, highlight=False, soft_wrap=True)


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        errors.print("[bold red]configuration error[/]")
        for problem in exc.problems:
            errors.print(f"  - {problem}", markup=False)
        raise typer.Exit(2) from None


@app.command()
def version() -> None:
    """Print the version."""
    console.print(f"vdm {__version__}")


def summary(settings: Settings, host: str, port: int) -> None:
    """The start-up summary: where, which providers, which aliases; no secrets."""
    console.print(f"[bold]vdm {__version__}[/] listening on [cyan]http://{host}:{port}[/]")
    console.print(
        f"default provider: [bold]{settings.default_provider}[/] "
        f"({settings.default_provider_source})",
        markup=True,
    )
    table = Table(show_edge=False, pad_edge=False, box=None)
    for column in ("provider", "format", "base URL", "keys"):
        table.add_column(column)
    for name, provider in settings.providers.items():
        keys = ", ".join(provider.key_fingerprints) or ("built-in" if name == "echo" else "-")
        table.add_row(name, provider.api_format, provider.base_url, keys)
    console.print(table)
    for name, provider in settings.providers.items():
        if provider.api_format == "azure":
            pairs = ", ".join(f"{m} → {d}" for m, d in provider.deployments.items())
            console.print(
                f"azure ({name}): api-version {provider.api_version}; "
                f"deployments: {pairs or 'none (the model name is the deployment)'}",
                markup=False,
            )
    from vdm.routing import Router

    router = Router(
        list(settings.providers), settings.default_provider, settings.aliases,
        settings.fallback_aliases,
    )
    for provider, table_ in router.active_aliases().items():
        pairs = ", ".join(f"{a} → {m}" for a, m in table_.items())
        console.print(f"aliases ({provider}): {pairs}", markup=False)
    if settings.server.proxy_api_key:
        console.print("clients must present PROXY_API_KEY")
    if settings.grpc.port is not None:
        scheme = "vibectl-server" if settings.grpc.tls_cert else "vibectl-server-insecure"
        console.print(f"gRPC LLMProxy on {scheme}://{settings.grpc.host or host}:"
                      f"{settings.grpc.port} (JWT auth)", markup=False)
    if list(settings.providers) == ["echo"]:
        console.print(
            "no provider key set: serving the offline [bold]echo[/] provider "
            "(set e.g. OPENAI_API_KEY to use a real one)"
        )


@server_app.command("start")
def start(
    host: Annotated[str | None, typer.Option(help="Address to bind (default: HOST or 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="Port (default: PORT or 8082).")] = None,
    reload: Annotated[bool, typer.Option(help="Restart when the source changes (development).")] = False,
    grpc_port: Annotated[int | None, typer.Option(min=1, max=65535, help="Also serve gRPC LLMProxy on this port, sharing the gateway (default: GRPC_PORT).")] = None,
) -> None:
    """Run the gateway in the foreground."""
    if grpc_port is not None:  # the app factory reads its settings from the environment
        os.environ["GRPC_PORT"] = str(grpc_port)
    settings = _settings()
    host = host or settings.server.host
    port = port or settings.server.port
    summary(settings, host, port)
    sys.stdout.flush()

    from vdm.logs import configure
    from vdm.server.runner import serve

    configure(settings.server.log_level)
    serve(settings, host, port, reload=reload)


def main() -> None:  # pragma: no cover - console script entry
    app(prog_name="vdm")
