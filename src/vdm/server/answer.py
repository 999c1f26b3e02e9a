"""A wire door's request over HTTP: body in, the pipeline's reply out.

Thin by design: :func:`answer` reads the body, hands it to
:meth:`vdm.pipeline.Gateway.serve`, and sends the reply (bytes, or a stream
with the door's pings); what a request costs and uses is recorded by the
pipeline's :class:`~vdm.pipeline.Account`, told here only *when* the answer
started and ended.  Every error is rendered in the door's own shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from vdm.cache import HEADER as CACHE_HEADER
from vdm.doors import WireDoor
from vdm.errors import GatewayError, ShuttingDown
from vdm.outcome import Reply
from vdm.protocols.fields import too_deep
from vdm.server import access as access_record
from vdm.server.asgi import (
    DISCONNECT_HOOK,
    Receive,
    Scope,
    Send,
    cancel_on_disconnect,
    read_body,
    send_bytes,
    send_stream,
)
from vdm.server.scope import PATH_PARAMS, PRINCIPAL, Host

log = logging.getLogger("vdm.server")
access = logging.getLogger("vdm.access")
JSON = {"content-type": "application/json"}
encode_json = msgspec.json.Encoder().encode

# A pipeline operation besides serve (count_tokens): (body, headers, client key, principal).
Operation = Callable[[bytes, dict[str, str], "str | None", Any], Awaitable[Reply]]


def id_headers(request_id: str) -> dict[str, str]:
    """Every response names its request (``request-id`` as Anthropic does,
    ``x-request-id`` as most proxies and OpenAI do)."""
    return {"request-id": request_id, "x-request-id": request_id}


async def send_error(send: Send, exc: GatewayError, request_id: str, door: WireDoor) -> None:
    headers = {**JSON, **exc.headers, **id_headers(request_id)}
    await send_bytes(send, exc.status, headers, door.encode_error(exc))


def internal(exc: BaseException) -> GatewayError:
    if isinstance(exc, RecursionError):  # a request nested too deeply to convert: a 400
        return too_deep("the request")
    log.error("internal error", exc_info=exc)
    return GatewayError(f"internal gateway error ({type(exc).__name__}); see the gateway log")


def door_handler(door: WireDoor) -> Any:
    """The route handler of ``door``'s paths."""

    async def handler(
        app: Host, scope: Scope, receive: Receive, send: Send, headers: dict[str, str], rid: str
    ) -> None:
        await answer(app, scope, receive, send, headers, rid, door)

    return handler


async def answer(
    app: Host,
    scope: Scope,
    receive: Receive,
    send: Send,
    headers: dict[str, str],
    request_id: str,
    door: WireDoor,
    operation: Operation | None = None,
) -> None:
    """Read the body, run the pipeline (``door``'s serve, or ``operation``),
    send its reply in ``door``'s protocol; cancel if the client leaves."""
    gateway = app.gateway
    assert gateway is not None
    principal = scope.get(PRINCIPAL)
    reply: Reply | None = None
    with gateway.account(door, principal, headers) as account:
        body = await read_body(receive, headers, app.max_body)
        client_key = app.provider_key(headers)  # (never the gateway's own credential)
        async with cancel_on_disconnect(receive, hook=scope.get(DISCONNECT_HOOK)) as watch:
            try:
                if operation is None:
                    reply = await gateway.serve(
                        door, body, headers, client_key, principal, scope.get(PATH_PARAMS)
                    )
                else:
                    reply = await operation(body, headers, client_key, principal)
            except Exception as caught:
                exc = caught if isinstance(caught, GatewayError) else internal(caught)
                account.failed(exc)
                log_failure(app, scope, exc, door.name, account.started)
                await send_error(send, exc, request_id, door)
                return
            except asyncio.CancelledError:
                if not watch.gone:  # the server is ending this request (shutdown)
                    with contextlib.suppress(Exception):
                        await send_error(send, ShuttingDown(), request_id, door)
                raise
            reply.headers.update(id_headers(request_id))
            if reply.stream is None:
                account.cost_header(reply, reply.headers)
            upstream_end = time.perf_counter()  # (a stream's: when it ends, below)
            if await _send(app, send, reply, door, account.answered(reply)):
                upstream_end = time.perf_counter()
    if reply is None:
        return  # the client left before the answer started
    await account.ended(
        reply.status, upstream_end, cache_hit=reply.headers.get(CACHE_HEADER) == "hit"
    )
    if reply.outcome is not None and access.isEnabledFor(logging.INFO):
        log_outcome(app, scope, reply, watch.gone, door.name, account.started)


async def _send(
    app: Host,
    send: Send,
    reply: Reply,
    door: WireDoor,
    before_end: Callable[[], Awaitable[None]] | None,
) -> bool:
    """Send ``reply``, awaiting ``before_end`` before its last byte; True
    for a stream (its upstream's part ended with it)."""
    if reply.stream is None:
        if before_end is not None:
            await before_end()
        await send_bytes(send, reply.status, reply.headers, reply.body)
        return False
    metrics = app.metrics
    metrics.open_streams += 1
    try:
        await send_stream(
            send,
            reply.status,
            reply.headers,
            reply.stream,
            lambda exc: door.encode_stream_error(internal(exc)),
            ping=door.ping,
            ping_interval=app.ping_interval,
            on_cancel=lambda: door.encode_stream_error(ShuttingDown()),
            before_end=before_end,
        )
    finally:
        metrics.open_streams -= 1
    return True


def log_outcome(
    app: Host, scope: Scope, reply: Reply, gone: bool, door: str, started: float
) -> None:
    o = reply.outcome
    assert o is not None
    usage = o.usage
    note = " error=" + o.error if o.error else (" client-disconnected" if gone else "")
    fields = None
    if app.access_fields:
        fields = access_record.fields(
            scope,
            scope.get(PRINCIPAL),
            door,
            reply.status,
            started,
            provider=o.provider,
            model=o.model,
            first_byte=o.first_byte,
            usage=usage,
            cache=reply.headers.get(CACHE_HEADER),
            error=o.error,
            disconnected=gone,
            cost=o.cost,
        )
    access.info(
        "%s %s %d %s:%s in=%s out=%s %.1fms%s",
        scope["method"],
        scope["path"],
        reply.status,
        o.provider,
        o.model,
        usage.input_tokens if usage else "-",
        usage.output_tokens if usage else "-",
        (time.perf_counter() - o.started) * 1000,
        note,
        extra={access_record.FIELD: fields} if fields is not None else None,
    )


def log_failure(app: Host, scope: Scope, exc: GatewayError, door: str, started: float) -> None:
    """The access-log line of a request that ended in an error status."""
    if not access.isEnabledFor(logging.INFO):
        return
    extra = None
    if app.access_fields:
        fields = access_record.fields(
            scope,
            scope.get(PRINCIPAL),
            door,
            exc.status,
            started,
            provider=getattr(exc, "provider", None),
            error=f"{exc.kind}: {exc.message}",
        )
        extra = {access_record.FIELD: fields}
    access.info("%s %s %d %s", scope["method"], scope["path"], exc.status, exc.message, extra=extra)
