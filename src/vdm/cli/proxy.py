"""``vdm proxy``: point this machine at an LLMProxy server, test it, show the setting."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

if TYPE_CHECKING:
    from vdm.grpc.client import ProxyURL

app = typer.Typer(help="Use an LLMProxy (gRPC) server as a client.", no_args_is_help=True)
console = Console(highlight=False, soft_wrap=True)
errors = Console(stderr=True, highlight=False, soft_wrap=True)

CaBundle = Annotated[
    str | None,
    typer.Option("--ca-bundle", help="PEM file of the CA that signed the server's certificate."),
]


def _parse(url: str) -> ProxyURL:
    from vdm.grpc.client import parse_url

    try:
        return parse_url(url)
    except ValueError as exc:
        errors.print(f"invalid proxy URL: {exc}", markup=False)
        raise typer.Exit(2) from None


def _check(url: str, ca_bundle: str | None, timeout: float, as_json: bool = False) -> None:
    """GetServerInfo, a table of what it says (or JSON), and the version verdict."""
    import grpc

    from vdm import __version__
    from vdm.grpc.client import compatibility, server_info

    target = _parse(url)
    from vdm.cli import output

    try:
        with output.waiting(f"asking {target.redacted()} for its server info …"):
            info = server_info(target, timeout=timeout, ca_bundle=ca_bundle)
    except grpc.RpcError as exc:
        code = exc.code().name if hasattr(exc, "code") else "ERROR"  # type: ignore[attr-defined]
        details = exc.details() if hasattr(exc, "details") else str(exc)  # type: ignore[attr-defined]
        errors.print(f"connection to {target.redacted()} failed: {code}: {details}", markup=False)
        raise typer.Exit(1) from None
    except OSError as exc:
        errors.print(f"cannot read the CA bundle: {exc}", markup=False)
        raise typer.Exit(2) from None
    limits = info.limits

    def limit(field: str) -> int | None:
        return int(getattr(limits, field)) if limits.HasField(field) else None

    verdict, message = compatibility(__version__, info.server_version)
    if as_json:
        output.emit_json(
            {
                "server": target.redacted(),
                "server_name": info.server_name,
                "version": info.server_version,
                "default_model": info.default_model or None,
                "models": [
                    {"id": m.model_id, "provider": m.provider} for m in info.available_models
                ],
                "aliases": dict(sorted(info.model_aliases.items())),
                "max_requests_per_minute": limit("max_requests_per_minute"),
                "max_concurrent_requests": limit("max_concurrent_requests"),
                "max_input_length": limit("max_input_length"),
                "request_timeout_seconds": limit("request_timeout_seconds"),
                "compatibility": verdict,
            }
        )
        raise typer.Exit(1 if verdict == "refuse" else 0)

    def shown(field: str) -> str:
        value = limit(field)
        return "none" if value is None else str(value)

    rows = [
        ("Server", target.redacted()),
        ("Server Name", info.server_name),
        ("Version", info.server_version),
        ("Default Model", info.default_model or "-"),
        # one per line: a long list then wraps between names, never inside one
        ("Models", "\n".join(f"{m.model_id} ({m.provider})" for m in info.available_models) or "-"),
        ("Aliases", "\n".join(f"{a} → {t}" for a, t in sorted(info.model_aliases.items())) or "-"),
        ("Requests/min", shown("max_requests_per_minute")),
        ("Concurrent", shown("max_concurrent_requests")),
        ("Max Input", shown("max_input_length")),
        ("Timeout (s)", shown("request_timeout_seconds")),
    ]
    output.table(None, [list(row) for row in rows])
    if verdict == "refuse":
        errors.print(f"[bold red]error[/]: {message}", markup=True)
        raise typer.Exit(1)
    if verdict == "warn":
        errors.print(f"[yellow]warning[/]: {message}", markup=True)
    console.print("connection OK")


@app.command("configure")
def configure(
    url: Annotated[str, typer.Argument(help="vibectl-server[-insecure]://[jwt@]host[:port]")],
    ca_bundle: CaBundle = None,
    no_test: Annotated[bool, typer.Option("--no-test", help="Save without testing.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the server.")] = 10.0,
) -> None:
    """Test the server, then save its URL (mode 0600: it may hold a token)."""
    from vdm.grpc.client import save

    _parse(url)
    if not no_test:
        _check(url, ca_bundle, timeout)
    path = save(url.strip(), ca_bundle)
    console.print(f"saved to {path}", markup=False)


@app.command("test")
def test(
    url: Annotated[str | None, typer.Argument(help="Default: the configured URL.")] = None,
    ca_bundle: CaBundle = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the server.")] = 10.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Call the server's GetServerInfo and show what it serves."""
    from vdm.grpc.client import load

    saved = load()
    if url is None:
        if saved is None:
            errors.print("no proxy configured: pass a URL or run `vdm proxy configure URL`")
            raise typer.Exit(2)
        url = str(saved["url"])
        ca_bundle = ca_bundle or saved.get("ca_bundle")
    _check(url, ca_bundle, timeout, as_json)


@app.command("status")
def status() -> None:
    """The configured proxy (the token redacted)."""
    from vdm.grpc.client import config_path, load

    saved = load()
    if saved is None:
        console.print("no proxy configured (`vdm proxy configure URL`)")
        return
    target = _parse(str(saved["url"]))
    console.print(f"proxy: {target.redacted()}", markup=False)
    console.print(f"TLS: {'on' if target.tls else 'off (insecure)'}", markup=False)
    console.print(
        f"token: {'in the URL' if target.token else 'none (VDM_PROXY_TOKEN if set)'}", markup=False
    )
    console.print(f"CA bundle: {saved.get('ca_bundle') or 'system trust store'}", markup=False)
    console.print(f"config: {config_path()}", markup=False)
