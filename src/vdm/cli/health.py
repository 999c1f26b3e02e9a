"""``vdm health`` and ``vdm test``: is the gateway up, are its providers reachable.

* ``health server`` — the running gateway's ``/health``;
* ``health upstream`` — each provider asked for its model list (the cheapest
  authenticated call every API family has), concurrently, with latency;
* ``test connection`` — one tiny ``/v1/messages`` request through the gateway;
* ``test models`` — the gateway's ``/v1/models``, grouped by provider.

The gateway's URL: ``--url``, else the one the pid file records, else
``http://HOST:PORT`` from the settings.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from vdm.cli import process
from vdm.cli.common import console, errors, fail, settings_or_exit
from vdm.config import Settings
from vdm.errors import AuthenticationFailed, GatewayError

health_app = typer.Typer(help="Health of the gateway and of its providers.", no_args_is_help=True)
test_app = typer.Typer(help="Try the gateway with real requests.", no_args_is_help=True)

UrlOpt = Annotated[
    str | None, typer.Option(help="The gateway's URL (default: the running one's, else HOST:PORT).")
]


def gateway_url(url: str | None, settings: Settings, pid_file: Path | None = None) -> str:
    if url:
        return url.rstrip("/")
    info, _ = process.live_info(pid_file or process.default_pid_file())
    if info is not None and info.port:
        return info.url
    return process.RunInfo(0, settings.server.host, settings.server.port).url


def _unreachable(url: str, exc: BaseException) -> None:
    fail(
        f"no gateway answers at {url} ({getattr(exc, 'reason', exc)}); "
        "start one with `vdm server start`"
    )


@health_app.command("server")
def health_server(url: UrlOpt = None) -> None:
    """The running gateway's health (exit 0 healthy, 1 otherwise)."""
    settings = settings_or_exit()
    base = gateway_url(url, settings)
    try:
        code, body = process.get_json(base + "/health", key=settings.operator_key)
    except (OSError, ValueError) as exc:
        _unreachable(base, exc)
    if code != 200 or not isinstance(body, dict):
        fail(f"{base}/health answered HTTP {code}")
    table = Table(box=None, pad_edge=False, show_header=False)
    table.add_row("status", str(body.get("status")))
    table.add_row("url", base)
    table.add_row("version", str(body.get("version")))
    table.add_row("uptime", f"{body.get('uptime_seconds')} s")
    table.add_row("default provider", str(body.get("default_provider")))
    console.print(table)
    providers = Table(box=None, pad_edge=False)
    for column in ("provider", "format", "base URL", "key"):
        providers.add_column(column)
    for name, p in (body.get("providers") or {}).items():
        providers.add_row(
            name,
            str(p.get("api_format")),
            str(p.get("base_url")),
            "configured" if p.get("api_key_configured") else "-",
        )
    console.print(providers)
    raise typer.Exit(0 if body.get("status") == "healthy" else 1)


async def _probe_all(settings: Settings, seconds: float) -> list[tuple[str, str, str, str]]:
    from vdm.providers import build
    from vdm.providers.base import ModelLister
    from vdm.providers.cooldowns import MemoryCooldowns

    cooldowns = MemoryCooldowns()
    providers = {n: build(p, settings.server, cooldowns) for n, p in settings.providers.items()}

    async def probe(name: str, provider: Any) -> tuple[str, str, str, str]:
        if not isinstance(provider, ModelLister):
            return name, "ok", "-", "built in, nothing to reach"
        started = time.perf_counter()
        try:
            async with asyncio.timeout(seconds):
                models = await provider.list_models(None)
        except AuthenticationFailed:
            return name, "skipped", "-", "uses the client's own key (!PASSTHRU)"
        except GatewayError as exc:
            ms = f"{(time.perf_counter() - started) * 1000:.0f}"
            return name, "error", ms, exc.message
        except TimeoutError:
            return name, "error", f"{seconds * 1000:.0f}", f"no answer within {seconds:g} s"
        ms = f"{(time.perf_counter() - started) * 1000:.0f}"
        return name, "ok", ms, f"{len(models)} models"

    try:
        return list(await asyncio.gather(*(probe(n, p) for n, p in providers.items())))
    finally:
        for provider in providers.values():
            await provider.close()


@health_app.command("upstream")
def health_upstream(
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds per provider.")] = 10.0,
) -> None:
    """Reach every provider with a cheap call (its model list); exit 1 if any fails."""
    settings = settings_or_exit()
    with console.status(f"asking {len(settings.providers)} provider(s) …"):
        results = asyncio.run(_probe_all(settings, timeout))
    table = Table(box=None, pad_edge=False)
    for column in ("provider", "status", "latency ms", "detail"):
        table.add_column(column)
    colour = {"ok": "green", "error": "red", "skipped": "yellow"}
    for name, status, ms, detail in results:
        table.add_row(name, f"[{colour[status]}]{status}[/]", ms, detail)
    console.print(table)
    raise typer.Exit(1 if any(r[1] == "error" for r in results) else 0)


def _request(url: str, body: dict[str, Any] | None, key: str | None) -> tuple[int, Any, Any]:
    """(status, headers, JSON) of a GET (no body; OpenAI's list shape) or an
    Anthropic-shaped POST to the gateway."""
    headers = {"content-type": "application/json"}
    if body is not None:
        headers["anthropic-version"] = "2023-06-01"
    if key:
        headers["x-api-key"] = key
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.headers, json.load(response)
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, exc.headers, json.load(exc)
        except ValueError:
            return exc.code, exc.headers, None


@test_app.command("connection")
def test_connection(
    url: UrlOpt = None,
    model: Annotated[
        str, typer.Option(help="The model to ask (routed as any client's).")
    ] = "sonnet",
) -> None:
    """One tiny request through the gateway: who answered, how fast, what."""
    settings = settings_or_exit()
    base = gateway_url(url, settings)
    body = {"model": model, "max_tokens": 16, "messages": [{"role": "user", "content": "ping"}]}
    started = time.perf_counter()
    with console.status(f"asking {model} through {base} …"):
        try:
            status, headers, answer = _request(
                base + "/v1/messages", body, settings.server.proxy_api_key
            )
        except OSError as exc:
            _unreachable(base, exc)
    ms = (time.perf_counter() - started) * 1000
    if status != 200 or not isinstance(answer, dict):
        message = (
            (answer or {}).get("error", {}).get("message") if isinstance(answer, dict) else None
        )
        fail(f"HTTP {status}: {message or 'no error message'}")
    text = "".join(b.get("text", "") for b in answer.get("content", []) if isinstance(b, dict))
    usage = answer.get("usage") or {}
    console.print(
        f"ok: {headers.get('x-vdm-provider')}:{headers.get('x-vdm-model')} answered "
        f"in {ms:.0f} ms (in={usage.get('input_tokens')} "
        f"out={usage.get('output_tokens')})",
        markup=False,
    )
    console.print(f"answer: {text[:200]}", markup=False)


@test_app.command("models")
def test_models(url: UrlOpt = None) -> None:
    """The models the gateway lists, per provider."""
    settings = settings_or_exit()
    base = gateway_url(url, settings)
    with console.status(f"listing models at {base} …"):
        try:
            status, _, answer = _request(base + "/v1/models", None, settings.server.proxy_api_key)
        except OSError as exc:
            _unreachable(base, exc)
    if status != 200 or not isinstance(answer, dict):
        fail(f"{base}/v1/models answered HTTP {status}")
    by_provider: dict[str, list[str]] = {}
    for entry in answer.get("data", []):
        provider = entry.get("owned_by") or str(entry.get("id", "")).partition(":")[0]
        by_provider.setdefault(provider or "-", []).append(str(entry.get("id")))
    if not by_provider:
        errors.print("no models listed", markup=False)
        raise typer.Exit(1)
    table = Table(box=None, pad_edge=False)
    for column in ("provider", "models", ""):
        table.add_column(column)
    for provider, ids in by_provider.items():
        table.add_row(provider, str(len(ids)), ", ".join(ids))
    console.print(table)
