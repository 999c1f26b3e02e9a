"""The OpenAI API beyond the doors: any other allowed ``/v1/*`` request,
relayed to an OpenAI-format provider (:mod:`vdm.passthrough` holds its rules).

A JSON body is read (bounded by MAX_BODY_SIZE) for its ``model``; so is a
multipart body that names one (audio, images) when a token's models are
limited; any other body (uploads) is streamed on as it arrives, bounded by
MAX_UPLOAD_SIZE.  A tenant's token is held to the rule of every door
(:meth:`vdm.pipeline.Gateway.passthrough_context`), and the usage the answer
reports counts toward its TPM before the answer's end goes out.  The answer
is relayed chunk by chunk either way; its accounting is the pipeline's
(:class:`vdm.pipeline.Account`, under the ``openai`` door).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from vdm import doors
from vdm import passthrough as pt
from vdm.errors import GatewayError, InvalidRequest, PayloadTooLarge, PermissionDenied
from vdm.outcome import Outcome, Reply
from vdm.pipeline import Gateway
from vdm.providers.base import ClientContext, OpenAIPassthrough, RawResponse
from vdm.server import access as access_record
from vdm.server.asgi import (
    DISCONNECT_HOOK,
    Receive,
    Scope,
    Send,
    cancel_on_disconnect,
    raw_headers,
    read_body,
    stream_request,
)
from vdm.server.scope import NORMAL_PATH, PRINCIPAL, Host

log = logging.getLogger("vdm.server")
access = logging.getLogger("vdm.access")

# The gateway's own headers on a relayed answer: an upstream's of the same name
# gives way instead of going out twice.
_OWN_RELAY_HEADERS = frozenset({"request-id", "x-vdm-provider"})


async def passthrough(
    app: Host, scope: Scope, receive: Receive, send: Send, headers: dict[str, str], request_id: str
) -> None:
    gateway = app.gateway  # (this request's, whatever a reload does)
    assert gateway is not None
    normal: str = scope[NORMAL_PATH]
    principal = scope.get(PRINCIPAL)
    limited = principal is not None and principal.allowed_models is not None
    request = _Request(app, gateway, scope, headers)
    with gateway.account(doors.CHAT, principal, headers) as account:
        if pt.is_json(headers) or (
            limited and pt.is_form(headers) and pt.names_model_in_form(normal)
        ):
            body = await read_body(receive, headers, app.max_body)
            if pt.is_json(headers):
                target, body = pt.route_json(gateway.router, app.formats, body, request.explicit)
                if limited:
                    _refuse_unnamed_models(scope["method"], normal, target.model is not None)
            else:
                content_type = headers["content-type"]
                target = pt.route_form(
                    gateway.router, app.formats, body, content_type, request.explicit
                )
            ctx = request.context(target)
            upstream_headers = pt.request_headers(
                headers, streamed=False, read=principal is not None
            )
            async with cancel_on_disconnect(receive, hook=scope.get(DISCONNECT_HOOK)) as watch:
                raw = await _forward(gateway, target, request, upstream_headers, body, ctx)
                reply = await _relay(send, raw, request_id, target.provider, account)
        else:
            has_body = "content-length" in headers or "transfer-encoding" in headers
            if limited and has_body and not pt.is_form(headers):
                raise InvalidRequest(
                    "this API token may use only some models, so its passthrough bodies must "
                    "be JSON or multipart/form-data (the model they name is checked)"
                )
            if limited:
                _refuse_unnamed_models(scope["method"], normal, False)
            _check_declared(headers, app.max_upload)
            target = pt.choose(gateway.router, app.formats, None, request.explicit)
            ctx = request.context(target)
            upstream_headers = pt.request_headers(
                headers, streamed=True, read=principal is not None
            )
            async with stream_request(receive, app.max_upload) as (watch, streamed):
                chunks = streamed.chunks() if has_body else None
                raw = await _forward(gateway, target, request, upstream_headers, chunks, ctx)
                streamed.abandon()
                reply = await _relay(send, raw, request_id, target.provider, account)
    await account.ended(reply.status, None)
    if access.isEnabledFor(logging.INFO):
        _log(app, scope, reply, target, watch.gone, account.started)


def _refuse_unnamed_models(method: str, path: str, names_model: bool) -> None:
    if pt.runs_unnamed_models(method, path, names_model):
        raise PermissionDenied(
            "this API token may use only some models, and this request would run models "
            "it does not name (a batch's are in its file, a run's are its assistant's or "
            "its data source's): name the model in the body, or use a token without a "
            "model limit"
        )


class _Request:
    """What the passthrough of one request needs besides its body."""

    __slots__ = (
        "client_key",
        "explicit",
        "gateway",
        "headers",
        "method",
        "path",
        "principal",
        "query",
    )

    def __init__(self, app: Host, gateway: Gateway, scope: Scope, headers: dict[str, str]) -> None:
        self.gateway = gateway
        self.method: str = scope["method"]
        self.path = scope[NORMAL_PATH][len("/v1") :]  # the base URL ends in /v1
        self.query = pt.checked_query(scope.get("query_string", b""))
        self.headers = headers
        self.principal = scope.get(PRINCIPAL)
        self.client_key = app.provider_key(headers)
        self.explicit = headers.get(pt.PROVIDER_HEADER)

    def context(self, target: pt.Target) -> ClientContext:
        return self.gateway.passthrough_context(
            self.client_key,
            self.headers,
            self.principal,
            target.provider,
            target.requested,
            target.model,
        )


def _check_declared(headers: dict[str, str], limit: int) -> None:
    length = headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise PayloadTooLarge(
            f"request body of {length} bytes exceeds the limit of {limit} (MAX_UPLOAD_SIZE)"
        )


async def _forward(
    gateway: Gateway,
    target: pt.Target,
    request: _Request,
    headers: dict[str, str],
    body: bytes | Any,
    ctx: ClientContext,
) -> RawResponse:
    provider = gateway.providers[target.provider]
    assert isinstance(provider, OpenAIPassthrough)  # choose() admits OpenAI-format only
    return await provider.forward(request.method, request.path, request.query, headers, body, ctx)


async def _relay(
    send: Send, raw: RawResponse, request_id: str, provider: str, account: Any
) -> Reply:
    """Status, headers and body as the upstream sent them; the usage the answer
    reported, when it can be read, counted before the end goes out.  A failure
    after the status went out can only be told by cutting the connection:
    returning without the final body message makes the ASGI server close it."""
    headers = raw_headers([(k, v) for k, v in raw.headers.items() if k not in _OWN_RELAY_HEADERS])
    headers += [(b"request-id", request_id.encode()), (b"x-vdm-provider", provider.encode())]
    reply = Reply(raw.status, {}, outcome=Outcome(provider=provider))
    before_end: Callable[[], Awaitable[None]] | None = account.answered(reply)
    await send({"type": "http.response.start", "status": raw.status, "headers": headers})
    tail = pt.UsageTail(raw.headers)
    feed = tail.feed if tail.readable else None
    assert reply.outcome is not None
    try:
        async for chunk in raw.body:
            if feed is not None:
                feed(chunk)
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    except GatewayError as exc:
        log.warning("passthrough relay from %s broke off: %s", provider, exc.message)
        reply.outcome.usage = tail.usage()  # (what was relayed was used)
        return reply
    finally:
        await raw.body.aclose()  # type: ignore[attr-defined]
    reply.outcome.usage = tail.usage()
    if before_end is not None:
        await before_end()
    await send({"type": "http.response.body", "body": b""})
    return reply


def _log(
    app: Host, scope: Scope, reply: Reply, target: pt.Target, gone: bool, started: float
) -> None:
    assert reply.outcome is not None
    elapsed = time.perf_counter() - started
    extra = None
    if app.access_fields:
        fields = access_record.fields(
            scope,
            scope.get(PRINCIPAL),
            doors.CHAT.name,
            reply.status,
            started,
            provider=target.provider,
            model=target.model,
            usage=reply.outcome.usage,
            disconnected=gone,
        )
        extra = {access_record.FIELD: fields}
    access.info(
        "%s %s %d %s passthrough %.1fms%s",
        scope["method"],
        scope["path"],
        reply.status,
        target.provider,
        elapsed * 1000,
        " client-disconnected" if gone else "",
        extra=extra,
    )
