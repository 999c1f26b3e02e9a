"""uvicorn's httptools protocol, writing a response in as few writes as it can.

uvicorn writes a response's status line and headers as soon as the app sends
``http.response.start``, and every body message as its own write.  On a
socket every write is a system call (on loopback the sender's CPU also runs
the receiver's TCP path), and each small segment costs the client a read too.

* A response that declares ``content-length`` (a whole JSON answer): its head
  is held back and goes out with the body, one write instead of two.
* A chunked response (a stream): what it writes within one turn of the event
  loop is gathered and written at the end of that turn.  The frames rendered
  from one upstream read (often many events) leave in one write; nothing
  waits for data that has not arrived, so the first event or a ping goes out
  as early as before.  (A converted stream lets the loop turn end once after
  its first content delta, ``pipeline._render_stream``, so that delta is not
  held back while the rest of a large read is converted.)

It also bounds what one connection may cost (:class:`ConnectionLimits`, from
the server settings; docs/security-limits.md):

* the request line and headers together: at most ``MAX_HEADER_SIZE`` bytes
  (counted per read, before the parser has buffered more), else 431;
* they must arrive within ``HEADER_TIMEOUT`` of the connection, or of the
  request's first byte on a kept-alive one, else 408 (a connection that sent
  nothing is just closed);
* a request body must bring at least ``BODY_MIN_RATE * BODY_TIMEOUT``
  bytes (one at the least) in every ``BODY_TIMEOUT`` window, else 408; time
  during which the server itself stopped reading does not count;
* beyond ``MAX_CONNECTIONS`` open connections a new one first closes an idle
  one (kept alive, or that sent nothing yet); when none is idle, the next
  :data:`PROBE_RESERVE` connections may ask only ``/live`` and ``/ready``
  (everything else: 503) and are closed after one answer; beyond those a
  connection gets a 503 at once.

One timer per connection at most, armed only while a head or a body is
incomplete at the end of a read: a request that arrives whole costs no timer.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import httptools
import msgspec
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from vdm.config import ServerSettings
from vdm.server.asgi import DISCONNECT_HOOK, DisconnectHook, Receive, Scope, Send

# Larger bodies are written after the held head rather than copied behind it.
_JOIN_LIMIT = 64 * 1024


class ResponseWrites:
    """One response's view of the connection's transport (see the module's
    docstring); its first write is the response's head."""

    __slots__ = ("_first", "_held", "_hold", "_loop", "_pending", "_scheduled", "_transport")

    def __init__(self, transport: Any, loop: asyncio.AbstractEventLoop, *, hold: bool) -> None:
        self._transport = transport
        self._loop = loop
        self._hold = hold  # False for HEAD: no body write follows its head
        self._first = True
        self._held: bytes | None = None  # a fixed-length response's head
        self._pending: list[bytes] | None = None  # a stream's writes in this loop turn
        self._scheduled = False

    def write(self, data: bytes) -> None:
        pending = self._pending
        if pending is not None:
            pending.append(data)
            if not self._scheduled:
                self._scheduled = True
                self._loop.call_soon(self._write_pending)
            return
        held = self._held
        if held is not None:
            self._held = None
            if len(data) <= _JOIN_LIMIT:
                self._transport.write(held + data)
            else:
                self._transport.write(held)
                self._transport.write(data)
            return
        if self._first:
            self._first = False
            if data.startswith(b"HTTP/1."):
                if self._hold and b"\r\ncontent-length:" in data:
                    self._held = data
                    return
                if b"\r\ntransfer-encoding: chunked\r\n" in data:
                    self._pending = []
                    self.write(data)
                    return
        self._transport.write(data)

    def _write_pending(self) -> None:
        self._scheduled = False
        pending = self._pending
        if pending:
            data = pending[0] if len(pending) == 1 else b"".join(pending)
            pending.clear()
            if not self._transport.is_closing():
                self._transport.write(data)

    def flush(self) -> None:
        """Write whatever is held or gathered now."""
        if self._held is not None:
            held, self._held = self._held, None
            self._transport.write(held)
        self._write_pending()

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:  # is_closing, get_extra_info, ...
        return getattr(self._transport, name)


# Connections beyond MAX_CONNECTIONS that may still ask for a probe.
PROBE_RESERVE = 16
PROBES = frozenset({"/live", "/ready"})
# A connection of the reserve gets this long (at most) for its request's head.
_RESERVE_HEADER_TIMEOUT = 2.0


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """What one connection may cost (the defaults are the settings' own)."""

    max_header_size: int = ServerSettings.max_header_size
    header_timeout: float = ServerSettings.header_timeout
    body_timeout: float = ServerSettings.body_timeout
    body_min_rate: int = ServerSettings.body_min_rate
    max_connections: int = ServerSettings.max_connections
    reserve: int = PROBE_RESERVE

    @classmethod
    def from_settings(cls, server: ServerSettings) -> ConnectionLimits:
        return cls(
            server.max_header_size,
            server.header_timeout,
            server.body_timeout,
            server.body_min_rate,
            server.max_connections,
        )

    @property
    def body_window_bytes(self) -> int:
        return max(1, int(self.body_min_rate * self.body_timeout))


def limits_of(config: Any) -> ConnectionLimits:
    """The limits of the app ``config`` serves (its ``connection_limits``, under
    uvicorn's middleware), found once per process and kept on the config."""
    limits = getattr(config, "vdm_limits", None)
    if limits is None:
        app = config.loaded_app
        while not hasattr(app, "connection_limits") and hasattr(app, "app"):
            app = app.app
        limits = getattr(app, "connection_limits", None) or ConnectionLimits()
        config.vdm_limits = limits
    return limits  # type: ignore[no-any-return]


def error_response(status: int, reason: str, kind: str, message: str) -> bytes:
    """A whole response that closes the connection, for refusals made before any
    door is known: its body reads as an Anthropic error and as an OpenAI one."""
    body = msgspec.json.encode(
        {"type": "error", "error": {"type": kind, "message": message, "code": kind}}
    )
    return (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode() + body


_OVERLOADED_MESSAGE = "the gateway has too many open connections (MAX_CONNECTIONS); retry shortly"
_OVERLOADED = error_response(503, "Service Unavailable", "overloaded_error", _OVERLOADED_MESSAGE)
_OVERLOADED_HEADERS = [
    (b"content-type", b"application/json"),
    (b"retry-after", b"1"),
    (b"connection", b"close"),
]

# Where a connection is in its current request.
_IDLE, _HEAD, _BODY, _DONE, _TOO_LARGE = 0, 1, 2, 3, 4


class _HeadTooLarge(Exception):
    pass


class ProbesOnly:
    """The app for a connection of the reserve: the probes, every other path a
    503; either way the connection closes after the answer."""

    __slots__ = ("app",)

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in PROBES:
            body = _OVERLOADED[_OVERLOADED.index(b"\r\n\r\n") + 4 :]
            headers = [*_OVERLOADED_HEADERS, (b"content-length", str(len(body)).encode())]
            await send({"type": "http.response.start", "status": 503, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return

        async def closing(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", ()), (b"connection", b"close")]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, closing)


class GatewayHttpProtocol(HttpToolsProtocol):
    """:class:`HttpToolsProtocol` whose request cycles write through
    :class:`ResponseWrites`, and tell the app of a lost connection through the
    scope's :class:`~vdm.server.asgi.DisconnectHook` (no watcher task per request);
    held to :class:`ConnectionLimits` (see the module's docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._limits = limits_of(self.config)
        self._phase = _IDLE
        self._bytes = 0  # of the head being read, or of the body
        self._mark = 0  # body bytes at the start of the current window
        self._chunk = 0  # the size of the read being parsed
        self._timer: asyncio.TimerHandle | None = None
        self._header_timeout = self._limits.header_timeout

    # ------------------------------------------------------------ admission

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        limits = self._limits
        count = len(self.connections)
        if count > limits.max_connections and not self._close_an_idle_one():
            if count > limits.max_connections + limits.reserve:
                transport.write(_OVERLOADED)
                transport.close()
                return
            self.app = ProbesOnly(self.app)
            self._header_timeout = min(self._header_timeout, _RESERVE_HEADER_TIMEOUT)
        self._arm(self._header_timeout, self._head_timed_out)

    def _close_an_idle_one(self) -> bool:
        for other in self.connections:
            if (
                other is not self
                and isinstance(other, GatewayHttpProtocol)
                and other._phase == _IDLE
                and other._bytes == 0
                and (other.cycle is None or other.cycle.response_complete)
                and not other.transport.is_closing()
            ):
                other.transport.close()
                return True
        return False

    # ------------------------------------------------------------ reading

    def data_received(self, data: bytes) -> None:
        # uvicorn's, but a head found too large while parsing is answered 431
        # (uvicorn would answer any parser error with its plain-text 400).
        self._unset_keepalive_if_required()
        self._chunk = len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self._phase == _TOO_LARGE:
                self._head_too_large()
                return
            self.logger.warning("Invalid HTTP request received.")
            self.send_400_response("Invalid HTTP request received.")
            return
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        phase = self._phase
        if phase == _BODY:
            self._bytes += len(data)
            if self._timer is None:
                self._mark = self._bytes
                self._arm(self._limits.body_timeout, self._body_window_ended)
        elif phase != _DONE:  # a head (or stray bytes between requests)
            self._bytes += len(data)
            if self._bytes > self._limits.max_header_size:
                self._head_too_large()
            elif self._timer is None:
                self._arm(self._header_timeout, self._head_timed_out)

    def _head_too_large(self) -> None:
        self._refuse(
            431,
            "Request Header Fields Too Large",
            "invalid_request_error",
            f"the request line and headers exceed {self._limits.max_header_size} bytes "
            "(MAX_HEADER_SIZE)",
        )

    def _head_size(self) -> int:
        """The parsed head's size (the bytes of its line and headers, less the
        separators the parser dropped)."""
        return len(self.url) + sum(len(name) + len(value) + 4 for name, value in self.headers)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._phase = _HEAD
        self._bytes = 0

    def on_headers_complete(self) -> None:
        limit = self._limits.max_header_size
        # Only a head that may be that large is measured (it came in this read).
        if self._bytes + self._chunk > limit and self._head_size() > limit:
            self._phase = _TOO_LARGE
            raise _HeadTooLarge  # (stops the parser; data_received answers)
        previous = self.cycle
        super().on_headers_complete()
        self._phase = _BODY
        self._bytes = 0
        self._disarm()
        cycle = self.cycle
        # (The cycle's task is created but has not run yet: no write has happened.)
        if cycle is not None and cycle is not previous:
            cycle.transport = ResponseWrites(  # type: ignore[assignment]
                self.transport, self.loop, hold=self.scope["method"] != "HEAD"
            )
            cycle.scope[DISCONNECT_HOOK] = DisconnectHook(self.flow.resume_reading)  # type: ignore[literal-required]

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._disarm()
        cycle = self.cycle
        if cycle is not None and cycle.response_complete:  # answered before the body ended
            self._phase = _IDLE
            self._bytes = 0
            self._arm(self._header_timeout, self._head_timed_out)
        else:
            self._phase = _DONE

    def on_response_complete(self) -> None:
        super().on_response_complete()  # (arms uvicorn's keep-alive timer)
        if self._phase == _DONE:
            self._phase = _IDLE
            self._bytes = 0

    # ------------------------------------------------------------ timers

    def _arm(self, delay: float, callback: Any) -> None:
        self._timer = self.loop.call_later(delay, callback)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _head_timed_out(self) -> None:
        self._timer = None
        if self._phase not in (_IDLE, _HEAD) or self.transport.is_closing():
            return
        if self._bytes == 0:  # nothing asked: nobody to answer
            self.transport.close()
            return
        self._refuse(
            408,
            "Request Timeout",
            "timeout_error",
            f"the request line and headers did not arrive within {self._header_timeout:g} s "
            "(HEADER_TIMEOUT)",
        )

    def _body_window_ended(self) -> None:
        self._timer = None
        if self._phase != _BODY or self.transport.is_closing():
            return
        limits = self._limits
        if self.flow.read_paused or self._bytes - self._mark >= limits.body_window_bytes:
            self._mark = self._bytes  # (paused: the server stopped reading, not the client)
            self._arm(limits.body_timeout, self._body_window_ended)
            return
        self._refuse(
            408,
            "Request Timeout",
            "timeout_error",
            f"the request body did not progress by {limits.body_window_bytes} bytes within "
            f"{limits.body_timeout:g} s (BODY_TIMEOUT, BODY_MIN_RATE)",
        )

    def _refuse(self, status: int, reason: str, kind: str, message: str) -> None:
        """Answer ``status`` (unless a response has begun) and close the connection."""
        self._disarm()
        self._phase = _DONE
        cycle = self.cycle
        if cycle is None or cycle.response_complete:  # between requests
            self.transport.write(error_response(status, reason, kind, message))
        else:  # the app has this request: it hears of a client gone, its answer goes nowhere
            if not cycle.response_started:
                self.transport.write(error_response(status, reason, kind, message))
            cycle.disconnected = True
            cycle.message_event.set()
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        cycle = self.cycle
        super().connection_lost(exc)
        if cycle is not None and cycle.disconnected:
            hook = cycle.scope.get(DISCONNECT_HOOK)
            if isinstance(hook, DisconnectHook):
                hook.fire()

    def shutdown(self) -> None:
        """(Server shutdown may close the connection right after a response
        completed, before the end of the loop turn: its last writes go first.)"""
        writes = self.cycle.transport if self.cycle is not None else None
        if isinstance(writes, ResponseWrites):
            writes.flush()
        super().shutdown()
