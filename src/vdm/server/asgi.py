"""Minimal ASGI plumbing: read a bounded body, send bytes, relay a stream.

The hot routes are plain ASGI callables (no framework request objects): a
request costs a dict of headers and one body read.  A stream runs under a
watcher that cancels it when the client goes away, which in turn cancels the
upstream request.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from typing import Any
from urllib.parse import quote

from vdm.errors import InvalidRequest, PayloadTooLarge
from vdm.protocols.sse import whole_frames
from vdm.running import RUNNING

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class ClientGone(Exception):
    """The client disconnected before its request was read."""


# Header names seen so far, decoded once: clients send the same few names on
# every request, so a lookup replaces a decode.  Bounded, so that a client
# inventing names cannot grow it.
_NAMES: dict[bytes, str] = {}
_NAMES_MAX = 1024


def header_map(scope: Scope) -> dict[str, str]:
    """Request headers as a dict of lower-case names (ASGI lower-cases them)."""
    names = _NAMES
    out = {}
    for raw, value in scope["headers"]:
        name = names.get(raw)
        if name is None:
            name = raw.decode("latin-1")
            if len(names) < _NAMES_MAX:
                names[raw] = name
        out[name] = value.decode("latin-1")
    return out


async def read_body(receive: Receive, headers: Mapping[str, str], limit: int) -> bytes:
    length = headers.get("content-length")
    if length is not None:
        try:
            declared = int(length)
        except ValueError:
            raise InvalidRequest("content-length is not a number") from None
        if declared > limit:
            raise PayloadTooLarge(f"request body of {declared} bytes exceeds the limit of {limit}")
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientGone
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        if len(body) > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
        return body
    chunks = [body]
    size = len(body)
    while message.get("more_body", False):
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


# Printable ASCII: what a header value keeps as it is when it needs encoding.
_HEADER_SAFE = "".join(map(chr, range(0x20, 0x7F)))


def header_value(text: str) -> bytes:
    """A header value that cannot be sent as it is (not Latin-1, or with control
    characters): every byte outside printable ASCII %-encoded, so nothing a
    client or an upstream put in it breaks the response or adds a header."""
    return quote(text.encode("utf-8", "surrogateescape"), safe=_HEADER_SAFE).encode("ascii")


def raw_headers(items: Collection[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    """Header pairs as ASGI bytes; :func:`header_value` only when Latin-1 will not do."""
    try:
        return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in items]
    except UnicodeEncodeError:
        return [(k.encode("latin-1"), header_value(v)) for k, v in items]


def _raw_headers(headers: Mapping[str, str], length: int | None) -> list[tuple[bytes, bytes]]:
    raw = raw_headers(headers.items())
    if length is not None:
        raw.append((b"content-length", str(length).encode()))
    return raw


async def send_bytes(send: Send, status: int, headers: Mapping[str, str], body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": _raw_headers(headers, len(body)),
        }
    )
    await send({"type": "http.response.body", "body": body})


# The scope key under which our HTTP protocol (server.protocol) offers a
# DisconnectHook: word of the client leaving without a task waiting on
# receive().  Under another ASGI server the key is absent and a watcher task
# listens instead.
DISCONNECT_HOOK = "vdm.disconnect"


class DisconnectHook:
    """One request's line from the server: ``fire()`` when its client is gone."""

    __slots__ = ("_callback", "_resume_reading")

    def __init__(self, resume_reading: Callable[[], None]) -> None:
        self._callback: Callable[[], None] | None = None
        self._resume_reading = resume_reading

    def watch(self, callback: Callable[[], None]) -> None:
        self._callback = callback
        # A connection whose reading is paused would not notice its peer
        # leave (a waiting receive() resumes reading just the same).
        self._resume_reading()

    def unwatch(self) -> None:
        self._callback = None

    def fire(self) -> None:
        callback, self._callback = self._callback, None
        if callback is not None:
            callback()


class Watch:
    """Set by :func:`cancel_on_disconnect`: did the client go away?"""

    __slots__ = ("gone",)

    def __init__(self) -> None:
        self.gone = False


class cancel_on_disconnect:
    """Cancel the enclosed work (and so the upstream call) if the client leaves.

    ``async with cancel_on_disconnect(receive, hook=...) as watch: ...``.  With
    the server's ``hook`` (the scope's :data:`DISCONNECT_HOOK`) no task is
    needed: the server calls back when the connection is lost.  Otherwise a
    watcher task waits on ``receive()``; with ``body``, it first feeds the
    request body into it (a streamed passthrough: ASGI allows one reader of
    ``receive()``), then keeps watching.  The cancellation is absorbed here:
    the block simply ends early.

    A class rather than an ``asynccontextmanager`` generator: it runs once per
    request, and the generator machinery cost about as much as the watcher.
    """

    __slots__ = ("_body", "_hook", "_receive", "_task", "_waiting", "watch")

    def __init__(
        self,
        receive: Receive,
        body: StreamedBody | None = None,
        *,
        hook: DisconnectHook | None = None,
    ) -> None:
        self._receive = receive
        self._body = body
        self._hook = hook if body is None else None  # a streamed body needs the reader
        self.watch = Watch()

    async def __aenter__(self) -> Watch:
        self._task, _ = RUNNING.task()
        if self._hook is not None:
            self._waiting = None
            self._hook.watch(self._gone)
        else:
            self._waiting = asyncio.create_task(self._watcher())
        return self.watch

    async def __aexit__(self, kind: type[BaseException] | None, exc: Any, tb: Any) -> bool:
        if self._waiting is not None:
            self._waiting.cancel()
        else:
            self._hook.unwatch()  # type: ignore[union-attr]
        if kind is not None and issubclass(kind, asyncio.CancelledError) and self.watch.gone:
            self._task.uncancel()
            return True
        return False

    async def _watcher(self) -> None:
        receive, body = self._receive, self._body
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self._gone()
                return
            if body is not None and not body.done:
                await body._put(message)

    def _gone(self) -> None:
        self.watch.gone = True
        self._task.cancel()


class _Beat:
    """When the stream last sent something, and whether that ended an SSE frame."""

    __slots__ = ("boundary", "last")

    def __init__(self, now: float) -> None:
        self.last = now
        self.boundary = True


class _Heartbeat:
    """Send ``ping`` whenever the stream has been silent for ``interval`` seconds,
    only between SSE frames (a relayed upstream chunk may end mid-frame).

    A timer, re-armed for when the silence would reach ``interval``, rather
    than a task per stream: a stream that never falls silent costs one timer
    and its cancel, not two task steps (and at low load, two loop turns).  A
    ping itself is sent from a task of its own, as the relay's sends are."""

    __slots__ = ("_beat", "_handle", "_interval", "_loop", "_ping", "_send", "_sending")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, send: Send, beat: _Beat, ping: bytes, interval: float
    ) -> None:
        self._loop, self._send, self._beat = loop, send, beat
        self._ping, self._interval = ping, interval
        self._sending: asyncio.Task[None] | None = None
        self._handle = loop.call_at(beat.last + interval, self._due)

    def _due(self) -> None:
        due = self._beat.last + self._interval
        if due > self._loop.time():  # the relay sent meanwhile: wait for the rest
            self._handle = self._loop.call_at(due, self._due)
        else:
            self._sending = self._loop.create_task(self._ping_once())  # it re-arms

    async def _ping_once(self) -> None:
        beat = self._beat
        try:
            # Asked here, not in the timer: the relay may have sent (even the
            # stream's last frame) between the timer and this task's turn.
            if beat.last + self._interval <= self._loop.time():
                if beat.boundary:  # (mid-frame: no ping, wait for another silence)
                    await self._send(
                        {"type": "http.response.body", "body": self._ping, "more_body": True}
                    )
                beat.last = self._loop.time()
        finally:
            self._sending = None
        self._handle = self._loop.call_at(beat.last + self._interval, self._due)

    def cancel(self) -> None:
        self._handle.cancel()
        if self._sending is not None:
            self._sending.cancel()


class StreamedBody:
    """The request body as it arrives, for a streamed passthrough.

    Made by :func:`stream_request`, whose watcher is the one reader of
    ``receive()`` (ASGI allows no concurrent readers): body messages go through
    a small queue, so at most a few chunks are held and the ASGI server stops
    reading the socket while the upstream is slow (constant memory).
    """

    __slots__ = ("_abandoned", "_limit", "_queue", "done")

    def __init__(self, limit: int) -> None:
        self._queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=4)
        self._limit = limit
        self._abandoned = False
        self.done = False

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body, chunk by chunk; 413 once it exceeds the limit."""
        size = 0
        while (chunk := await self._queue.get()) is not None:
            size += len(chunk)
            if size > self._limit:
                raise PayloadTooLarge(
                    f"request body exceeds the limit of {self._limit} bytes (MAX_UPLOAD_SIZE)"
                )
            if chunk:
                yield chunk

    def abandon(self) -> None:
        """The upstream answered: drop whatever of the body is still coming."""
        self._abandoned = True
        while not self._queue.empty():
            self._queue.get_nowait()

    async def _put(self, message: Message) -> None:
        more = message.get("more_body", False)
        if not self._abandoned:
            await self._queue.put(message.get("body", b""))
            if not more:
                await self._queue.put(None)
        self.done = not more


@contextlib.asynccontextmanager
async def stream_request(receive: Receive, limit: int) -> AsyncIterator[tuple[Watch, StreamedBody]]:
    """:func:`cancel_on_disconnect` for a request whose body is streamed on."""
    body = StreamedBody(limit)
    async with cancel_on_disconnect(receive, body) as watch:
        yield watch, body


async def send_stream(
    send: Send,
    status: int,
    headers: Mapping[str, str],
    body: AsyncIterator[bytes],
    on_error: Callable[[Exception], bytes],
    *,
    ping: bytes | None = None,
    ping_interval: float = 0.0,
    on_cancel: Callable[[], bytes] | None = None,
    before_end: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Relay ``body`` as the response; ``on_error`` renders a failure (a bug
    below us) as the stream's last frame, since the status is already sent.
    ``before_end`` is awaited once the body is relayed, before the response's
    end goes out (what must be counted before the client may ask again).

    With ``ping``, a silence of ``ping_interval`` seconds (a slow first token,
    a long tool call being buffered) is filled with that frame, so proxies
    and clients do not time out.  If the relay is cancelled (the server is
    shutting down), ``on_cancel``'s frame ends the stream before it closes.
    """
    heart: _Heartbeat | None = None
    try:
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": _raw_headers(headers, None),
            }
        )
        loop = asyncio.get_running_loop()
        beat = _Beat(loop.time())
        if ping is not None and ping_interval > 0:
            heart = _Heartbeat(loop, send, beat, ping, ping_interval)
        try:
            async for chunk in body:
                beat.boundary = whole_frames(chunk)  # before the send: a ping may run meanwhile
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                beat.last = loop.time()
        except asyncio.CancelledError:
            if heart is not None:
                heart.cancel()
            if on_cancel is not None:
                with contextlib.suppress(Exception):
                    await send(
                        {"type": "http.response.body", "body": on_cancel(), "more_body": False}
                    )
            raise
        except OSError:
            raise
        except Exception as exc:
            await send({"type": "http.response.body", "body": on_error(exc), "more_body": True})
        if before_end is not None:
            await before_end()
        if heart is not None:
            heart.cancel()
        await send({"type": "http.response.body", "body": b""})
    finally:
        if heart is not None:
            heart.cancel()
        with contextlib.suppress(Exception):
            await body.aclose()  # type: ignore[attr-defined]
