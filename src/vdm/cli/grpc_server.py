"""``vdm grpc serve``: the LLMProxy gRPC service on its own."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

app = typer.Typer(help="The gRPC LLMProxy service (vibectl clients).", no_args_is_help=True)
errors = Console(stderr=True, highlight=False, soft_wrap=True)


@app.command("serve")
def serve(
    host: Annotated[
        str | None,
        typer.Option(help="Address to bind (default: GRPC_HOST, else HOST, else 127.0.0.1)."),
    ] = None,
    port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Port (default: GRPC_PORT, else 50051).")
    ] = None,
    tls_cert: Annotated[
        Path | None, typer.Option(help="PEM certificate (chain) for TLS (default: GRPC_TLS_CERT).")
    ] = None,
    tls_key: Annotated[
        Path | None, typer.Option(help="PEM private key for TLS (default: GRPC_TLS_KEY).")
    ] = None,
    no_auth: Annotated[
        bool, typer.Option("--no-auth", help="Accept calls without a token (development only).")
    ] = False,
) -> None:
    """Serve LLMProxy in the foreground, through the same gateway as HTTP."""
    from vdm.cli.common import settings_or_exit as _settings
    from vdm.grpc.server import DEFAULT_PORT
    from vdm.grpc.server import serve as run
    from vdm.logs import configure

    settings = _settings()
    cert = str(tls_cert) if tls_cert else settings.grpc.tls_cert
    key = str(tls_key) if tls_key else settings.grpc.tls_key
    if bool(cert) != bool(key):
        errors.print("TLS needs both --tls-cert and --tls-key (GRPC_TLS_CERT, GRPC_TLS_KEY)")
        raise typer.Exit(2)
    for flag, path in (("--tls-cert", cert), ("--tls-key", key)):
        if path and not Path(path).expanduser().is_file():
            errors.print(f"{flag}: no such file: {path}", markup=False)
            raise typer.Exit(2)
    if no_auth:
        errors.print(
            "[bold red]WARNING: authentication is OFF[/]: anyone who can reach this "
            "port can spend your providers' keys. Use --no-auth only for local "
            "development."
        )
    configure(settings.server.log_level)
    try:
        run(
            settings,
            host=host or settings.grpc.host or settings.server.host,
            port=port or settings.grpc.port or DEFAULT_PORT,
            auth=not no_auth,
            tls_cert=cert,
            tls_key=key,
        )
    except RuntimeError as exc:
        errors.print(f"cannot start the gRPC server: {exc}", markup=False)
        raise typer.Exit(1) from None
