"""Upstream HTTP plumbing shared by every provider adapter.

The only module that creates aiohttp sessions (ruff's banned-API rule keeps it
so): one pooled session per provider, made at start-up, closed at shutdown.
:func:`upstream_errors` translates transport failures into the gateway's
error tree at this one boundary.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any

import aiohttp
import msgspec
from aiohttp.client_proto import ResponseHandler
from yarl import URL

from vdm import __version__
from vdm.config import ServerSettings
from vdm.errors import (
    GatewayError,
    LoopDetected,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from vdm.loops import HOP_HEADER, LOOP_STATUS, hop_value
from vdm.providers.base import RawResponse

if TYPE_CHECKING:
    from vdm.metrics import UpstreamPool

_decoder = msgspec.json.Decoder()

# Headers that describe one connection, not the message: never forwarded
# either way by a proxy (RFC 9110 7.6.1), plus host (the upstream's own).
HOP_BY_HOP_REQUEST = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
        "proxy-connection",
    }
)
# Client request headers forwarded upstream, an allowlist per wire family:
# the API's own options, the SDK's description of itself and the W3C trace
# context (vdm.tracing puts its attempt's traceparent there when it traces);
# never a credential, a cookie, a method override or any header not named here.
_TRACE_CONTEXT = frozenset({"traceparent", "tracestate"})
FORWARDED_REQUEST = {
    "openai": frozenset({"openai-beta", "idempotency-key", "user-agent"}) | _TRACE_CONTEXT,
    "anthropic": frozenset({"anthropic-version", "anthropic-beta", "idempotency-key", "user-agent"})
    | _TRACE_CONTEXT,
}
USER_AGENT = f"vdm/{__version__}"  # what a request whose client sent none says it is
SDK_PREFIX = "x-stainless-"  # the official SDKs' own description (language, version, retry)
# Which organization and project a key bills: only where the provider's
# FORWARD_ORGANIZATION says the clients may choose.
ORGANIZATION_HEADERS = ("openai-organization", "openai-project")


def client_headers(
    incoming: Mapping[str, str] | None, family: str, *, organization: bool = False
) -> dict[str, str]:
    """The client's headers (lower-case names) that go upstream to a ``family``
    provider: :data:`FORWARDED_REQUEST`, ``x-stainless-*``, and the
    organization headers when ``organization``."""
    out: dict[str, str] = {}
    if not incoming:
        return out
    allowed = FORWARDED_REQUEST[family]
    for name, value in incoming.items():
        if name in allowed or name.startswith(SDK_PREFIX):
            out[name] = value
    if organization:
        for name in ORGANIZATION_HEADERS:
            if name in incoming:
                out[name] = incoming[name]
    return out


# Response headers never relayed to a client: the hop-by-hop ones, and the
# upstream's cookies (the gateway is the origin its clients talk to; a cookie
# scoped to the upstream's domain is one a conforming client drops anyway, and
# one without a domain would be sent back to the gateway, shared by its tenants).
NOT_RELAYED_RAW = HOP_BY_HOP_REQUEST | {"set-cookie"}
# ... and, once aiohttp has decoded the body, its length and encoding (no
# longer the upstream's).
NOT_RELAYED = NOT_RELAYED_RAW | {"content-length", "content-encoding"}


Session = aiohttp.ClientSession  # the type other modules name; only this module creates one


class _ResponseHandler(ResponseHandler):
    """aiohttp's client protocol, whose ``resume_reading`` does nothing unless
    reading is paused.

    aiohttp 3.14's ``StreamReader`` calls it for every HTTP chunk it hands
    out, paused or not (3.13 asked ``_reading_paused`` first), and each call
    re-enters the parser with no data and the transport's resume: for a
    passthrough stream, of 20-odd chunks read at once, a tenth of its CPU.
    When reading is not paused, nothing waits to be resumed: the parser (and
    a decompression in progress) stops only through ``pause_reading``, which
    sets the flag; a resume that finds it set runs as before.
    """

    def resume_reading(self, resume_parser: bool = True) -> None:
        if self._reading_paused:
            super().resume_reading(resume_parser)


def _with_lean_resume(connector: aiohttp.TCPConnector) -> aiohttp.TCPConnector:
    """``connector`` making :class:`_ResponseHandler` connections, where this
    aiohttp makes them as we know (else it is left as it is)."""
    factory = getattr(connector, "_factory", None)
    if isinstance(factory, functools.partial) and factory.func is ResponseHandler:
        connector._factory = functools.partial(  # type: ignore[assignment]
            _ResponseHandler, *factory.args, **factory.keywords
        )
    return connector


class _PoolConnector(aiohttp.TCPConnector):
    """A connector that tells ``pool`` (:class:`vdm.metrics.UpstreamPool`)
    how many requests wait for one of its connections and how long each waited.

    Only a request that finds every connection busy runs this: aiohttp
    (3.10.11 and later) calls ``_wait_for_available_connection`` when its
    limit is reached, so a request that gets a connection at once costs
    nothing more.  (A ``TraceConfig``'s queued callbacks would cost every
    request its trace objects and awaited signals, and miss the end of a wait
    cut short by ``CONNECT_TIMEOUT``: docs/performance.md, "Upstream
    connections".)  A wait that ends in ``CONNECT_TIMEOUT`` is counted too.
    """

    def __init__(self, pool: UpstreamPool, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._pool = pool

    async def _wait_for_available_connection(self, key: Any, traces: Any) -> None:
        pool = self._pool
        pool.waiting += 1
        started = self._loop.time()
        try:
            await super()._wait_for_available_connection(key, traces)  # type: ignore[misc]
        finally:
            pool.waiting -= 1
            pool.waits.observe(self._loop.time() - started)


def make_session(
    server: ServerSettings,
    *,
    limit: int | None = None,
    provider: str = "",
    loops_back: str | None = None,
    pool: UpstreamPool | None = None,
) -> Session:
    """A pooled session: keep-alive connections, no cookie jar, timeouts set;
    every request carries ``provider``'s hop header (:mod:`vdm.loops`), and
    when the provider's base URL is the gateway itself (``loops_back``) every
    request is refused with a 508 before it is sent.

    At most ``limit`` connections are open at once (``{NAME}_MAX_CONNECTIONS``,
    else ``UPSTREAM_MAX_CONNECTIONS``); a request finding them all busy waits
    for one, and that wait counts against ``CONNECT_TIMEOUT``.  With ``pool``,
    the requests waiting and their waits are counted there (its metrics).

    ``CONNECT_TIMEOUT`` bounds connecting, ``IDLE_TIMEOUT`` every wait for
    upstream bytes (so also the wait for the first one), ``TOTAL_TIMEOUT``
    (unset by default) the whole answer.  ``FIRST_BYTE_TIMEOUT`` is enforced
    by the pipeline around the start of each attempt, so a long generation
    that keeps streaming is never cut.
    """
    limit = limit or server.upstream_max_connections
    options: dict[str, Any] = {
        "limit": limit,
        "limit_per_host": limit,
        "ttl_dns_cache": 300,
        "enable_cleanup_closed": True,
    }
    connector = aiohttp.TCPConnector(**options) if pool is None else _PoolConnector(pool, **options)
    timeout = aiohttp.ClientTimeout(
        total=server.total_timeout,
        connect=server.connect_timeout,
        sock_read=server.idle_timeout,
    )
    return aiohttp.ClientSession(
        connector=_with_lean_resume(connector),
        timeout=timeout,
        cookie_jar=aiohttp.DummyCookieJar(),
        json_serialize=lambda o: msgspec.json.encode(o).decode(),
        # The gateway names itself where a client sent no User-Agent of its own
        # (a client's replaces it): set here rather than skipping aiohttp's, whose
        # skip list costs every request a copy of its headers.
        headers=(
            {"User-Agent": USER_AGENT, HOP_HEADER: hop_value(server.gateway_id, provider)}
            if provider
            else {"User-Agent": USER_AGENT}
        ),
        middlewares=(_refusal(loops_back, provider),) if loops_back else (),
    )


def _refusal(message: str, provider: str) -> aiohttp.ClientMiddlewareType:
    async def refuse(request: aiohttp.ClientRequest, handler: Any) -> aiohttp.ClientResponse:
        raise LoopDetected(message, provider=provider)

    return refuse


class upstream_errors:
    """``with upstream_errors(provider):`` translates aiohttp/asyncio failures
    into the gateway's error tree.  A class, not a ``@contextmanager``
    generator: it wraps every upstream call and every relayed body."""

    __slots__ = ("_provider",)

    def __init__(self, provider: str) -> None:
        self._provider = provider

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: Any, tb: Any) -> None:
        if exc is not None and isinstance(exc, _TRANSLATED):
            raise _translated(exc, self._provider) from exc


_TRANSLATED = (aiohttp.ClientError, TimeoutError)


def _translated(exc: BaseException, provider: str) -> UpstreamError:
    """The gateway's error for a transport failure (most specific type first)."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return UpstreamTimeout(
            f"provider '{provider}' could not be connected to in time (CONNECT_TIMEOUT, "
            "which includes waiting for a free connection when all its max-connections are busy)",
            provider=provider,
        )
    if isinstance(exc, aiohttp.SocketTimeoutError):
        return UpstreamTimeout(
            f"provider '{provider}' sent nothing for longer than IDLE_TIMEOUT", provider=provider
        )
    if isinstance(exc, (TimeoutError, aiohttp.ServerTimeoutError)):
        return UpstreamTimeout(
            f"provider '{provider}' did not finish its answer within TOTAL_TIMEOUT",
            provider=provider,
        )
    if isinstance(exc, aiohttp.ClientConnectorError):
        return UpstreamUnreachable(
            f"provider '{provider}' is unreachable: {exc.os_error or exc}", provider=provider
        )
    if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError)):
        return UpstreamUnreachable(
            f"provider '{provider}' closed the connection: {exc}", provider=provider
        )
    return UpstreamUnreachable(
        f"provider '{provider}' request failed: {type(exc).__name__}: {exc}",
        provider=provider,
    )


def upstream_message(body: bytes) -> str:
    """The human message inside an upstream error body (either protocol)."""
    return upstream_error(body)[0]


def upstream_error(body: bytes) -> tuple[str, str | None]:
    """The human message and the machine-readable code (OpenAI's ``error.code``,
    when a string) inside an upstream error body (either protocol)."""
    try:
        value: Any = _decoder.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError):  # msgspec raises the latter for bad UTF-8
        text = body.decode("utf-8", "replace").strip()
        return (text[:500] if text else "(empty body)"), None
    if isinstance(value, dict):
        error = value.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            code = error.get("code")
            return error["message"], code if isinstance(code, str) and 0 < len(
                code
            ) <= 100 else None
        if isinstance(error, str):
            return error, None
        if isinstance(value.get("message"), str):
            return value["message"], None
        if isinstance(value.get("detail"), str):
            return value["detail"], None
    return body.decode("utf-8", "replace")[:500], None


async def raise_for_status(response: aiohttp.ClientResponse, provider: str) -> None:
    """Raise UpstreamStatusError for an error status, keeping what it said."""
    if response.status < 400:
        return
    body = await response.read()
    if response.status == LOOP_STATUS and HOP_HEADER in response.headers:
        raise LoopDetected(upstream_message(body), provider=provider)  # names the setting
    headers = {}
    if "retry-after" in response.headers:
        headers["retry-after"] = response.headers["retry-after"]
    message, code = upstream_error(body)
    raise UpstreamStatusError(
        f"provider '{provider}' returned HTTP {response.status}: {message}",
        provider=provider,
        upstream_status=response.status,
        body=body,
        headers=headers,
        code=code,
    )


def decode_json(body: bytes, provider: str) -> Any:
    try:
        return _decoder.decode(body)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise UpstreamProtocolError(
            f"provider '{provider}' sent a body that is not JSON: {body[:200]!r}",
            provider=provider,
        ) from exc


def relay_headers(headers: Any) -> dict[str, str]:
    """Upstream headers to relay, with lower-case names so that the gateway's
    own (``request-id``, ``x-request-id``, ``x-vdm-*``) replace, not duplicate, them.
    A field sent on several lines comes out as one, its values joined by
    ``", "`` in order (RFC 9110 5.3; ``set-cookie``, the one field that cannot
    be joined, is not relayed)."""
    return _relayed(headers, NOT_RELAYED)


def relay_raw_headers(headers: Any) -> dict[str, str]:
    """Headers of an undecoded body (``auto_decompress=False``): only hop-by-hop
    ones (and cookies) go; ``content-length`` and ``content-encoding`` stay true."""
    return _relayed(headers, NOT_RELAYED_RAW)


def _relayed(headers: Any, dropped: frozenset[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in headers.items():
        lower = name.lower()
        if lower in dropped or lower.startswith("proxy-"):
            continue
        if lower in out:
            out[lower] = f"{out[lower]}, {value}"
        else:
            out[lower] = value
    return out


async def relay(response: aiohttp.ClientResponse, provider: str) -> AsyncIterator[bytes]:
    """An upstream body as it arrives; the connection is pooled again when it
    completes, dropped when the relay is cancelled or fails."""
    try:
        with upstream_errors(provider):
            async for chunk in response.content.iter_any():
                yield chunk
    except BaseException:
        response.close()
        raise
    response.release()


# A model listing is small: it gets a whole-answer bound, unlike chat.
LIST_TIMEOUT = aiohttp.ClientTimeout(total=30.0)


async def get_json(session: Session, url: str, headers: dict[str, str], provider: str) -> Any:
    """GET a small JSON document (model lists); error statuses raise."""
    with upstream_errors(provider):
        async with session.get(url, headers=headers, timeout=LIST_TIMEOUT) as response:
            await raise_for_status(response, provider)
            body = await response.read()
    return decode_json(body, provider)


async def open_response(
    session: Session, url: str, body: bytes, headers: dict[str, str], provider: str
) -> aiohttp.ClientResponse:
    """POST and return the open response; an error status raises (body read,
    connection released), so the caller only ever sees a good answer."""
    with upstream_errors(provider):
        response = await session.post(url, data=body, headers=headers)
        try:
            await raise_for_status(response, provider)
        except BaseException:
            response.release()
            raise
    return response


def raw_response(response: aiohttp.ClientResponse, provider: str) -> RawResponse:
    """An open response handed on undecoded (passthrough)."""
    return RawResponse(response.status, relay_headers(response.headers), relay(response, provider))


Body = bytes | AsyncIterator[bytes] | None


async def request_raw(
    session: Session,
    method: str,
    url: str,
    body: Body,
    headers: dict[str, str],
    provider: str,
) -> RawResponse:
    """Any request, answer relayed as the upstream sent it: error statuses too,
    body neither decoded nor decompressed (so its length and encoding hold).
    ``url`` is sent as it is (already %-encoded by the client).

    A failure of the client's own streamed body (too large) surfaces as
    itself, not as an upstream failure: aiohttp wraps it, ``__cause__`` keeps it.
    """
    headers.pop(HOP_HEADER, None)  # a client's would replace the session's own
    try:
        with upstream_errors(provider):
            response = await session.request(
                method,
                URL(url, encoded=True),
                data=body,
                headers=headers,
                auto_decompress=False,
                allow_redirects=False,
            )
    except UpstreamError as exc:
        cause = exc.__cause__.__cause__ if exc.__cause__ is not None else None
        if isinstance(cause, GatewayError) and not isinstance(cause, UpstreamError):
            raise cause from None
        raise
    return RawResponse(
        response.status, relay_raw_headers(response.headers), relay(response, provider)
    )


def is_event_stream(headers: Mapping[str, str]) -> bool:
    return any(
        k.lower() == "content-type" and v.startswith("text/event-stream")
        for k, v in headers.items()
    )


async def require_end(
    body: AsyncIterator[bytes], provider: str, ends: tuple[bytes, ...]
) -> AsyncIterator[bytes]:
    """Relay a passthrough stream; if it closes before one of ``ends`` (the
    protocol's last frame, or its error frame) was seen, raise, so the client
    gets an error frame rather than a silently truncated answer.  A cheap
    substring test per chunk over a small tail window, no SSE parsing."""
    finished = False
    tail = b""
    keep = max(len(end) for end in ends)
    try:
        async for chunk in body:
            if not finished:
                window = tail + chunk
                finished = any(end in window for end in ends)
                tail = window[-keep:]
            yield chunk
    finally:
        await body.aclose()  # type: ignore[attr-defined]
    if not finished:
        raise UpstreamProtocolError(
            f"provider '{provider}' ended the stream before it finished", provider=provider
        )
