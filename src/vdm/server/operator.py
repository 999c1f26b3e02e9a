"""The operator's mounts: ``/manage/*`` (the management API) and
``/dashboard/*`` (the shipped page and its snapshot).  Their errors take the
management API's ``{"detail": …}`` shape, not a door's."""

from __future__ import annotations

from typing import Any

from vdm.errors import GatewayError, NotFound
from vdm.server import dashboard
from vdm.server.answer import JSON, encode_json, id_headers
from vdm.server.asgi import Receive, Scope, Send, read_body, send_bytes
from vdm.server.scope import Host

MANAGE = "/manage"


def is_management(path: str) -> bool:
    return path.startswith(MANAGE) and (len(path) == 7 or path[7] == "/")


async def management(
    app: Host, scope: Scope, receive: Receive, send: Send, headers: dict[str, str], request_id: str
) -> None:
    """``/manage/*``: the MANAGEMENT_TOKEN bearer, a body of MAX_BODY_SIZE at
    most, then the management API (its errors in its own ``detail`` shape)."""
    if app.manage is None:
        raise NotFound("the management API is off; set MANAGEMENT_TOKEN to turn it on")
    assert app.management_key is not None
    try:
        await app.login(scope, app.management_key, headers, request_id, "management")
        body = await read_body(receive, headers, app.max_body)
    except GatewayError as exc:
        await send_bytes(
            send,
            exc.status,
            {**JSON, **id_headers(request_id), **exc.headers},
            encode_json({"detail": exc.message}),
        )
        return
    scope = {**scope, "vdm.request_id": request_id}

    async def send_with_id(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            message = {
                **message,
                "headers": [
                    *message.get("headers", ()),
                    (b"x-request-id", request_id.encode()),
                ],
            }
        await send(message)

    given = False

    async def replay() -> dict[str, Any]:
        nonlocal given
        if given:
            return await receive()  # (a disconnect)
        given = True
        return {"type": "http.request", "body": body, "more_body": False}

    await app.manage(scope, replay, send_with_id)


async def dashboard_files(
    app: Host, scope: Scope, send: Send, headers: dict[str, str], request_id: str, path: str
) -> None:
    """``/dashboard/*``: the shipped page (no data, open) and its snapshot
    (MANAGEMENT_TOKEN when set, else PROXY_API_KEY when set, else open)."""
    ids = id_headers(request_id)
    if scope["method"] not in ("GET", "HEAD"):
        await send_bytes(
            send,
            405,
            {**JSON, **ids, "allow": "GET, HEAD"},
            encode_json({"detail": f"method {scope['method']} not allowed; use GET"}),
        )
        return
    if path != dashboard.SNAPSHOT:
        found = dashboard.asset(path)
        if found is None:
            await send_bytes(
                send, 404, {**JSON, **ids}, encode_json({"detail": f"no dashboard file {path}"})
            )
            return
        body, content_type = found
        await send_bytes(
            send,
            200,
            {
                "content-type": content_type,
                **ids,
                "cache-control": "no-cache",
                "content-security-policy": dashboard.CSP,
            },
            body,
        )
        return
    try:
        await app.check_operator(scope, headers, request_id, "dashboard")
    except GatewayError as exc:
        await send_bytes(
            send, exc.status, {**JSON, **ids, **exc.headers}, encode_json({"detail": exc.message})
        )
        return
    await send_bytes(
        send,
        200,
        {**JSON, **ids, "cache-control": "no-store"},
        encode_json(app.snapshot()),
    )
