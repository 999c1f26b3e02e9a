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
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from vdm.server.asgi import DISCONNECT_HOOK, DisconnectHook

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


class GatewayHttpProtocol(HttpToolsProtocol):
    """:class:`HttpToolsProtocol` whose request cycles write through
    :class:`ResponseWrites`, and tell the app of a lost connection through the
    scope's :class:`~vdm.server.asgi.DisconnectHook` (no watcher task per request)."""

    def on_headers_complete(self) -> None:
        previous = self.cycle
        super().on_headers_complete()
        cycle = self.cycle
        # (The cycle's task is created but has not run yet: no write has happened.)
        if cycle is not None and cycle is not previous:
            cycle.transport = ResponseWrites(  # type: ignore[assignment]
                self.transport, self.loop, hold=self.scope["method"] != "HEAD"
            )
            cycle.scope[DISCONNECT_HOOK] = DisconnectHook(self.flow.resume_reading)  # type: ignore[literal-required]

    def connection_lost(self, exc: Exception | None) -> None:
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
