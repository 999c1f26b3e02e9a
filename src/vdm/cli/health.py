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
from rich.text import Text

from vdm.cli import output, process
from vdm.cli.common import (
    NEEDS_TOKEN,
    TokenOpt,
    console,
    errors,
    fail,
    operator_token,
    settings_or_exit,
)
from vdm.cli.output import waiting
from vdm.config import Settings
from vdm.errors import AuthenticationFailed, GatewayError

health_app = typer.Typer(help="Health of the gateway and of its providers.", no_args_is_help=True)
test_app = typer.Typer(help="Try the gateway with real requests.", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
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
def health_server(url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """The running gateway's health (exit 0 healthy, 1 otherwise)."""
    settings = settings_or_exit()
    base = gateway_url(url, settings)
    try:
        code, body = process.get_json(base + "/health", key=operator_token(token, settings))
    except (OSError, ValueError) as exc:
        _unreachable(base, exc)
    if code == 401:
        fail(f"{base}/health answered HTTP 401: {NEEDS_TOKEN}")
    if code != 200 or not isinstance(body, dict):
        fail(f"{base}/health answered HTTP {code}")
    healthy = body.get("status") == "healthy"
    if as_json:
        output.emit_json({"url": base, **body})
        raise typer.Exit(0 if healthy else 1)
    output.table(
        None,
        [
            ["status", str(body.get("status"))],
            ["url", base],
            ["version", str(body.get("version"))],
            ["uptime", f"{body.get('uptime_seconds')} s"],
            ["default provider", str(body.get("default_provider"))],
        ],
    )
    output.table(
        ["provider", "format", "base URL", "key"],
        [
            [
                name,
                str(p.get("api_format")),
                str(p.get("base_url")),
                "configured" if p.get("api_key_configured") else "-",
            ]
            for name, p in (body.get("providers") or {}).items()
        ],
        whole={"base URL"},
    )
    raise typer.Exit(0 if healthy else 1)


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
    as_json: JsonOpt = False,
) -> None:
    """Reach every provider with a cheap call (its model list); exit 1 if any fails."""
    settings = settings_or_exit()
    with waiting(f"asking {len(settings.providers)} provider(s) for their model lists …"):
        results = asyncio.run(_probe_all(settings, timeout))
    failed = any(r[1] == "error" for r in results)
    if as_json:
        output.emit_json(
            [
                {
                    "provider": name,
                    "status": status,
                    "latency_ms": None if ms == "-" else int(ms),
                    "detail": detail,
                }
                for name, status, ms, detail in results
            ]
        )
        raise typer.Exit(1 if failed else 0)
    colour = {"ok": "green", "error": "red", "skipped": "yellow"}
    output.table(
        ["provider", "status", "latency ms", "detail"],
        [[n, Text(status, colour[status]), ms, d] for n, status, ms, d in results],
    )
    raise typer.Exit(1 if failed else 0)


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


def _default_model(base: str, key: str | None) -> str:
    """What ``test connection`` asks when no ``--model`` is given: ``sonnet``
    where the default provider maps it (what Claude Code sends), else the first
    model that provider lists, else (echo answers anything) ``sonnet``."""
    try:
        status, _, aliases = _request(base + "/v1/aliases", None, key)
        if status != 200 or not isinstance(aliases, dict):
            return "sonnet"  # the request itself will say what is wrong
        default = str(aliases.get("default_provider"))
        if "sonnet" in (aliases.get("aliases") or {}).get(default, {}) or default == "echo":
            return "sonnet"
        status, _, listed = _request(base + "/v1/models", None, key)
    except OSError as exc:
        _unreachable(base, exc)
    for entry in listed.get("data", []) if isinstance(listed, dict) else []:
        if isinstance(entry, dict) and entry.get("owned_by") == default:
            return str(entry.get("id"))
    fail(f"the default provider '{default}' has no 'sonnet' alias and lists no model; pass --model")


@test_app.command("connection")
def test_connection(
    url: UrlOpt = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="The model to ask (routed as any client's; default: one the default "
            "provider lists, else its 'sonnet' alias)."
        ),
    ] = None,
    token: TokenOpt = None,
) -> None:
    """One tiny request through the gateway: who answered, how fast, what."""
    settings = settings_or_exit()
    base = gateway_url(url, settings)
    key = operator_token(token, settings)
    model = model or _default_model(base, key)
    body = {"model": model, "max_tokens": 16, "messages": [{"role": "user", "content": "ping"}]}
    started = time.perf_counter()
    with waiting(f"asking {model} through {base} …"):
        try:
            status, headers, answer = _request(base + "/v1/messages", body, key)
        except OSError as exc:
            _unreachable(base, exc)
    ms = (time.perf_counter() - started) * 1000
    if status == 401:
        fail(f"HTTP 401: {NEEDS_TOKEN}")
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
def test_models(url: UrlOpt = None, token: TokenOpt = None, as_json: JsonOpt = False) -> None:
    """The models the gateway lists, per provider."""
    settings = settings_or_exit()
    base = gateway_url(url, settings)
    key = operator_token(token, settings)
    with waiting(f"listing models at {base} …"):
        try:
            status, _, answer = _request(base + "/v1/models", None, key)
        except OSError as exc:
            _unreachable(base, exc)
    if status == 401:
        fail(f"{base}/v1/models answered HTTP 401: {NEEDS_TOKEN}")
    if status != 200 or not isinstance(answer, dict):
        fail(f"{base}/v1/models answered HTTP {status}")
    by_provider: dict[str, list[str]] = {}
    for entry in answer.get("data", []):
        provider = entry.get("owned_by") or str(entry.get("id", "")).partition(":")[0]
        by_provider.setdefault(provider or "-", []).append(str(entry.get("id")))
    if as_json:
        output.emit_json(by_provider)
    if not by_provider:
        errors.print("no models listed", markup=False)
        raise typer.Exit(1)
    if as_json:
        return
    output.table(
        ["provider", "models", ""],
        [[provider, str(len(ids)), ", ".join(ids)] for provider, ids in by_provider.items()],
    )
