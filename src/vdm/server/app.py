"""The ASGI application: routes -> :class:`vdm.pipeline.Gateway`, and back.

Handlers only translate HTTP to the pipeline and back; rules live in the
pipeline and its modules.  Every error is Anthropic-shaped JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import msgspec

from vdm import __version__
from vdm.auth.proxy_key import ProxyKey, presented_key
from vdm.config import Settings, load_settings
from vdm.errors import GatewayError, NotFound, ShuttingDown
from vdm.logs import client_request_id
from vdm.logs import request_id as current_request_id
from vdm.pipeline import Gateway, Reply, new_request_id
from vdm.protocols import anthropic, openai_ingress
from vdm.server.asgi import (
    ClientGone,
    Receive,
    Scope,
    Send,
    cancel_on_disconnect,
    header_map,
    read_body,
    send_bytes,
    send_stream,
)

log = logging.getLogger("vdm.server")
access = logging.getLogger("vdm.access")
_encode = msgspec.json.Encoder().encode
_JSON = {"content-type": "application/json"}

# Paths that answer without the proxy key (probes).
OPEN_PATHS = frozenset({"/", "/live", "/ready"})


class MethodNotAllowed(GatewayError):
    status = 405
    kind = "invalid_request"


Handler = Callable[["App", Scope, Receive, Send, dict[str, str], str], Awaitable[None]]


class App:
    """ASGI callable; the gateway is built in the lifespan startup."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.gateway: Gateway | None = None
        self.proxy_key = (
            ProxyKey(settings.server.proxy_api_key) if settings.server.proxy_api_key else None
        )
        self.max_body = settings.server.max_body_size
        self.ping_interval = settings.server.ping_interval
        self.started = time.time()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    self.gateway = Gateway.from_settings(self.settings)
                    await self.gateway.start()
                    if self.settings.server.models_prefetch:
                        self.gateway.catalog.start()
                except Exception as exc:  # pragma: no cover - reported to the server
                    log.exception("start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.gateway is not None:
                    await self.gateway.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        if len(path) > 1 and path.endswith("/"):
            path = path.rstrip("/")
        headers = header_map(scope)
        request_id = client_request_id(headers.get("x-request-id")) or new_request_id()
        token = current_request_id.set(request_id)
        try:
            methods = ROUTES.get(path)
            if methods is None:
                raise NotFound(f"no such endpoint: {scope['method']} {scope['path']}")
            handler = methods.get(scope["method"])
            if handler is None:
                raise MethodNotAllowed(
                    f"method {scope['method']} not allowed on {path}; "
                    f"use {', '.join(sorted(methods))}"
                )
            if self.proxy_key is not None and path not in OPEN_PATHS:
                self.proxy_key.check(presented_key(headers))
            await handler(self, scope, receive, send, headers, request_id)
        except GatewayError as exc:
            await send_error(send, exc, request_id)
        except ClientGone:
            return
        finally:
            current_request_id.reset(token)


def id_headers(request_id: str) -> dict[str, str]:
    """Every response names its request (``request-id`` as Anthropic does,
    ``x-request-id`` as most proxies and OpenAI do)."""
    return {"request-id": request_id, "x-request-id": request_id}


class Door(Protocol):
    """A client protocol's error rendering (the protocol modules are doors)."""

    PING: bytes

    def encode_error(self, error: GatewayError) -> bytes: ...

    def encode_stream_error(self, error: GatewayError) -> bytes: ...


async def send_error(send: Send, exc: GatewayError, request_id: str,
                     door: Door = anthropic) -> None:  # type: ignore[assignment]
    headers = {**_JSON, **exc.headers, **id_headers(request_id)}
    await send_bytes(send, exc.status, headers, door.encode_error(exc))


def _internal(exc: BaseException) -> GatewayError:
    log.error("internal error", exc_info=exc)
    return GatewayError(f"internal gateway error ({type(exc).__name__}); see the gateway log")


async def _reply(
    app: App, scope: Scope, receive: Receive, send: Send, headers: dict[str, str],
    request_id: str, call: Callable[[bytes, dict[str, str], str | None], Awaitable[Reply]],
    door: Door = anthropic,  # type: ignore[assignment]
) -> None:
    """Read the body, run the pipeline, send its reply; cancel if the client leaves."""
    body = await read_body(receive, headers, app.max_body)
    client_key = presented_key(headers)
    reply: Reply | None = None
    async with cancel_on_disconnect(receive) as watch:
        try:
            reply = await call(body, headers, client_key)
        except GatewayError as exc:
            _log_failure(scope, exc)
            await send_error(send, exc, request_id, door)
            return
        except Exception as exc:
            await send_error(send, _internal(exc), request_id, door)
            return
        except asyncio.CancelledError:
            if not watch.gone:  # the server is ending this request (shutdown)
                with contextlib.suppress(Exception):
                    await send_error(send, ShuttingDown(), request_id, door)
            raise
        reply.headers.update(id_headers(request_id))
        if reply.stream is not None:
            await send_stream(send, reply.status, reply.headers, reply.stream,
                              lambda exc: door.encode_stream_error(_internal(exc)),
                              ping=door.PING, ping_interval=app.ping_interval,
                              on_cancel=lambda: door.encode_stream_error(ShuttingDown()))
        else:
            await send_bytes(send, reply.status, reply.headers, reply.body)
    if reply is not None and reply.outcome is not None and access.isEnabledFor(logging.INFO):
        _log_outcome(scope, reply, watch.gone)


def _log_outcome(scope: Scope, reply: Reply, gone: bool) -> None:
    o = reply.outcome
    assert o is not None
    usage = o.usage
    note = " error=" + o.error if o.error else (" client-disconnected" if gone else "")
    access.info(
        "%s %s %d %s:%s in=%s out=%s %.1fms%s",
        scope["method"], scope["path"], reply.status, o.provider, o.model,
        usage.input_tokens if usage else "-", usage.output_tokens if usage else "-",
        (time.perf_counter() - o.started) * 1000, note,
    )


def _log_failure(scope: Scope, exc: GatewayError) -> None:
    if access.isEnabledFor(logging.INFO):
        access.info("%s %s %d %s", scope["method"], scope["path"], exc.status, exc.message)


# ---------------------------------------------------------------- handlers


async def messages(app: App, scope: Scope, receive: Receive, send: Send,
                   headers: dict[str, str], request_id: str) -> None:
    assert app.gateway is not None
    await _reply(app, scope, receive, send, headers, request_id, app.gateway.messages)


async def count_tokens(app: App, scope: Scope, receive: Receive, send: Send,
                       headers: dict[str, str], request_id: str) -> None:
    assert app.gateway is not None
    await _reply(app, scope, receive, send, headers, request_id, app.gateway.count_tokens)


async def chat_completions(app: App, scope: Scope, receive: Receive, send: Send,
                           headers: dict[str, str], request_id: str) -> None:
    assert app.gateway is not None
    await _reply(app, scope, receive, send, headers, request_id, app.gateway.chat_completions,
                 openai_ingress)  # type: ignore[arg-type]


async def _json(send: Send, request_id: str, value: Any, status: int = 200) -> None:
    await send_bytes(send, status, {**_JSON, **id_headers(request_id)}, _encode(value))


async def models(app: App, scope: Scope, receive: Receive, send: Send,
                 headers: dict[str, str], request_id: str) -> None:
    assert app.gateway is not None
    entries = await app.gateway.models(presented_key(headers))
    if "anthropic-version" in headers:
        await _json(send, request_id, anthropic.model_list(entries, app.started))
    else:  # OpenAI-style clients send no anthropic-version
        await _json(send, request_id, openai_ingress.model_list(entries, app.started))


async def aliases(app: App, scope: Scope, receive: Receive, send: Send,
                  headers: dict[str, str], request_id: str) -> None:
    assert app.gateway is not None
    router = app.gateway.router
    await _json(send, request_id, {
        "default_provider": router.default_provider,
        "aliases": router.active_aliases(),
    })


async def health(app: App, scope: Scope, receive: Receive, send: Send,
                 headers: dict[str, str], request_id: str) -> None:
    settings = app.settings
    await _json(send, request_id, {
        "status": "healthy" if app.gateway is not None else "starting",
        "version": __version__,
        "uptime_seconds": round(time.time() - app.started, 1),
        "default_provider": settings.default_provider,
        "providers": {
            name: {
                "api_format": p.api_format,
                "base_url": p.base_url,
                "api_key_configured": p.has_key,
                "keys": len(p.api_keys),
                **({"api_version": p.api_version, "deployments": dict(p.deployments)}
                   if p.api_format == "azure" else {}),
            }
            for name, p in settings.providers.items()
        },
    })


async def root(app: App, scope: Scope, receive: Receive, send: Send,
               headers: dict[str, str], request_id: str) -> None:
    # Claude Code sends HEAD / before its first request.
    await _json(send, request_id, {"name": "vdm", "version": __version__})


async def ready(app: App, scope: Scope, receive: Receive, send: Send,
                headers: dict[str, str], request_id: str) -> None:
    if app.gateway is None:
        await _json(send, request_id, {"status": "starting"}, 503)
    else:
        await _json(send, request_id, {"status": "ready"})


async def live(app: App, scope: Scope, receive: Receive, send: Send,
               headers: dict[str, str], request_id: str) -> None:
    await _json(send, request_id, {"status": "alive"})


ROUTES: dict[str, dict[str, Handler]] = {
    "/": {"GET": root, "HEAD": root},
    "/v1/messages": {"POST": messages},
    "/v1/messages/count_tokens": {"POST": count_tokens},
    "/v1/chat/completions": {"POST": chat_completions},
    "/v1/models": {"GET": models},
    "/v1/aliases": {"GET": aliases},
    "/health": {"GET": health},
    "/ready": {"GET": ready},
    "/live": {"GET": live},
}


def create_app() -> App:
    """uvicorn factory: settings come from the environment and config files."""
    from vdm.logs import configure

    settings = load_settings()
    configure(settings.server.log_level)
    return App(settings)
