"""The route table: the doors' paths (from :mod:`vdm.doors`) and the
gateway's own, each path's handlers by method, and the door whose error
shape a path's failures take.

Every handler has one signature (:data:`vdm.server.scope.Handler`) and only
translates HTTP to the pipeline and back.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import parse_qs, quote

from vdm import __version__, doors
from vdm import passthrough as pt
from vdm.doors import WireDoor
from vdm.errors import InvalidRequest, MethodNotAllowed
from vdm.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from vdm.protocols import anthropic_door, openai_door
from vdm.server.answer import JSON, answer, door_handler, encode_json, id_headers
from vdm.server.asgi import Receive, Scope, Send, send_bytes
from vdm.server.relay import passthrough
from vdm.server.scope import NORMAL_PATH, OPERATOR, PATH_PARAMS, Handler, Host

# Paths that answer without the proxy key (probes).
OPEN_PATHS = frozenset({"/", "/live", "/ready"})
# Paths for the operator only (MANAGEMENT_TOKEN, else PROXY_API_KEY): every tenant's traffic.
OPERATOR_PATHS = frozenset({"/metrics", "/metrics/running-totals"})


async def _json(send: Send, request_id: str, value: Any, status: int = 200) -> None:
    await send_bytes(send, status, {**JSON, **id_headers(request_id)}, encode_json(value))


async def count_tokens(
    app: Host, scope: Scope, receive: Receive, send: Send, headers: dict[str, str], request_id: str
) -> None:
    assert app.gateway is not None
    operation = app.gateway.count_tokens
    await answer(app, scope, receive, send, headers, request_id, doors.ANTHROPIC, operation)


async def models(
    app: Host, scope: Scope, receive: Receive, send: Send, headers: dict[str, str], request_id: str
) -> None:
    assert app.gateway is not None
    entries = await app.gateway.models(app.provider_key(headers))
    if "anthropic-version" in headers:
        await _json(send, request_id, anthropic_door.model_list(entries, app.started))
    else:  # OpenAI-style clients send no anthropic-version
        await _json(send, request_id, openai_door.model_list(entries, app.started))


async def aliases(
    app: Host, scope: Scope, receive: Receive, send: Send, headers: dict[str, str], request_id: str
) -> None:
    assert app.gateway is not None
    router = app.gateway.router
    await _json(
        send,
        request_id,
        {"default_provider": router.default_provider, "aliases": router.active_aliases()},
    )


async def health(
    app: Host, scope: Scope, receive: Receive, send: Send, headers: dict[str, str], request_id: str
) -> None:
    """Status and version for any admitted client; the details (providers, their
    URLs and keys' count) for the operator only."""
    settings = app.settings
    status = {
        "status": "healthy" if app.gateway is not None else "starting",
        "version": __version__,
    }
    if not scope.get(OPERATOR):
        await _json(send, request_id, status)
        return
    await _json(
        send,
        request_id,
        {
            **status,
            "uptime_seconds": round(time.time() - app.started, 1),
            "default_provider": settings.default_provider,
            "last_reload": app.last_reload,  # SIGHUP: when, and the problem if it failed
            "providers": {
                name: {
                    "api_format": p.api_format,
                    "base_url": p.base_url,
                    "api_key_configured": p.has_key,
                    "keys": len(p.api_keys),
                    **(
                        {"api_version": p.api_version, "deployments": dict(p.deployments)}
                        if p.api_format == "azure"
                        else {}
                    ),
                }
                for name, p in settings.providers.items()
            },
        },
    )


async def metrics(
    app: Host, scope: Scope, receive: Receive, send: Send, headers: dict[str, str], request_id: str
) -> None:
    """Prometheus text exposition (built only now, from plain counters; with
    ``--workers N``, of all the workers), in a thread: the loop goes on serving."""
    shared = app.shared_metrics
    build = shared.exposition if shared is not None else app.metrics.exposition
    text = await asyncio.to_thread(build)
    await send_bytes(
        send, 200, {"content-type": METRICS_CONTENT_TYPE, **id_headers(request_id)}, text
    )


async def running_totals(
    app: Host, scope: Scope, receive: Receive, send: Send, headers: dict[str, str], request_id: str
) -> None:
    """JSON totals per provider and model; ``?provider=&model=&door=`` filter."""
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    unknown = set(query) - {"provider", "model", "door"}
    if unknown:
        raise InvalidRequest(
            f"unknown filter {', '.join(sorted(unknown))}; use provider, model or door"
        )
    pick = {k: v[-1] for k, v in query.items()}
    assert app.bus is not None and app.totals is not None
    await app.bus.flush()  # this instance's latest requests counted
    await _json(send, request_id, await app.totals.report(**pick))


async def root(
    app: Host, scope: Scope, receive: Receive, send: Send, headers: dict[str, str], request_id: str
) -> None:
    # Claude Code sends HEAD / before its first request.
    await _json(send, request_id, {"name": "vdm", "version": __version__})


async def ready(
    app: Host, scope: Scope, receive: Receive, send: Send, headers: dict[str, str], request_id: str
) -> None:
    if app.gateway is None:
        await _json(send, request_id, {"status": "starting"}, 503)
    elif app.drain_marker is not None and app.drain_marker.exists():  # (a stat: probes only)
        await _json(send, request_id, {"status": "draining"}, 503)
    else:
        await _json(send, request_id, {"status": "ready"})


async def live(
    app: Host, scope: Scope, receive: Receive, send: Send, headers: dict[str, str], request_id: str
) -> None:
    await _json(send, request_id, {"status": "alive"})


# The doors' routes: POST on each path a door declares.
_DOOR_HANDLERS: dict[str, Handler] = {door.name: door_handler(door) for door in doors.WIRE}

ROUTES: dict[str, dict[str, Handler]] = {
    "/": {"GET": root, "HEAD": root},
    **{
        path: {"POST": _DOOR_HANDLERS[door.name]}
        for door in doors.WIRE
        for path in door.paths
        if "{" not in path
    },
    "/v1/messages/count_tokens": {"POST": count_tokens},
    "/v1/models": {"GET": models},
    "/v1/aliases": {"GET": aliases},
    "/health": {"GET": health},
    "/metrics": {"GET": metrics},
    "/metrics/running-totals": {"GET": running_totals},
    "/ready": {"GET": ready},
    "/live": {"GET": live},
}


def handler_for(app: Host, scope: Scope, path: str) -> Handler:
    """The gateway's own routes first (a door's path with parameters after
    the exact ones); then the passthrough allowlist, on the path's normal form
    (kept in the scope for :func:`vdm.server.relay.passthrough`)."""
    method: str = scope["method"]
    methods = ROUTES.get(path)
    if methods is not None and method in methods:
        return methods[method]
    if methods is None:
        found = doors.match(path)  # (the exact paths are in ROUTES: patterns only here)
        if found is not None:
            if method != "POST":
                raise MethodNotAllowed(f"method {method} not allowed on {path}; use POST")
            scope[PATH_PARAMS] = found[1]
            return _DOOR_HANDLERS[found[0].name]
    if path.startswith("/v1/"):
        raw = scope.get("raw_path") or quote(scope["path"]).encode()
        path = scope[NORMAL_PATH] = pt.normal_path(raw)
    if app.allow.allows(method, path):
        return passthrough
    if methods is not None:
        raise MethodNotAllowed(
            f"method {method} not allowed on {path}; use {', '.join(sorted(methods))}"
        )
    app.allow.check(method, path)  # raises: 404 outside the allowlist, else 405
    return passthrough  # pragma: no cover - check() only returns for allowed requests


def door_for(app: Host, path: str, headers: dict[str, str]) -> WireDoor:
    """Which client protocol a request speaks, so its errors take that shape:
    the door whose path it is; ``/v1/models`` OpenAI's unless the client sends
    ``anthropic-version``; OpenAI's for the rest of the OpenAI API (the
    passthrough's paths, allowed or not); Anthropic's otherwise."""
    if len(path) > 1 and path.endswith("/"):
        path = path.rstrip("/")
    found = doors.match(path)
    if found is not None:
        return found[0]
    if path == "/v1/models":
        return doors.ANTHROPIC if "anthropic-version" in headers else doors.CHAT
    if app.openai_paths.covers(path):
        return doors.CHAT
    return doors.ANTHROPIC
