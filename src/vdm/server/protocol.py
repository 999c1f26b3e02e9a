"""uvicorn's httptools protocol, with a fixed-length response written in one go.

uvicorn writes a response's status line and headers as soon as the app sends
``http.response.start``, and the body in a second write.  On a socket every
write is a system call (on loopback the sender's CPU also runs the receiver's
TCP path), and for a whole JSON answer the client can do nothing with the
head alone.  So here the head of a response that declares ``content-length``
is held back and goes out with the body, in one write: one system call per
answer instead of two.  Streams (chunked) are written as before, head first,
so a client sees the status before the first event, however long that takes.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# Larger bodies are written after the held head rather than copied behind it.
_JOIN_LIMIT = 64 * 1024


class HeldHead:
    """One response's view of the connection's transport: the first write, if
    it is the head of a response with a ``content-length``, waits for the next
    one (the body; uvicorn writes it even when it is empty)."""

    __slots__ = ("_held", "_hold", "_transport")

    def __init__(self, transport: Any, *, hold: bool) -> None:
        self._transport = transport
        self._hold = hold  # False for HEAD: no body write follows its head
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            self._held = None
            if len(data) <= _JOIN_LIMIT:
                self._transport.write(held + data)
            else:
                self._transport.write(held)
                self._transport.write(data)
            return
        if self._hold:
            self._hold = False  # only a response's first write is its head
            if data.startswith(b"HTTP/1.") and b"\r\ncontent-length:" in data:
                self._held = data
                return
        self._transport.write(data)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def _flush(self) -> None:
        if self._held is not None:
            held, self._held = self._held, None
            self._transport.write(held)

    def __getattr__(self, name: str) -> Any:  # is_closing, get_extra_info, ...
        return getattr(self._transport, name)


class GatewayHttpProtocol(HttpToolsProtocol):
    """:class:`HttpToolsProtocol` whose request cycles write through :class:`HeldHead`."""

    def on_headers_complete(self) -> None:
        previous = self.cycle
        super().on_headers_complete()
        cycle = self.cycle
        # (The cycle's task is created but has not run yet: no write has happened.)
        if cycle is not None and cycle is not previous:
            cycle.transport = HeldHead(  # type: ignore[assignment]
                self.transport, hold=self.scope["method"] != "HEAD"
            )
