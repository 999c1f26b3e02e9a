"""Server-sent events: incremental parsing of upstream bytes, framing of ours.

Pure functions and one small buffer object; no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator

__all__ = ["SSEParser", "frame"]


def frame(event: str | None, data: bytes) -> bytes:
    """One SSE frame; ``data`` must be a single line (compact JSON is)."""
    if event is None:
        return b"data: " + data + b"\n\n"
    return b"event: " + event.encode() + b"\ndata: " + data + b"\n\n"


class SSEParser:
    """Splits a byte stream into ``(event, data)`` pairs as they complete.

    Handles frames split across reads anywhere (even inside ``\\r\\n``),
    ``\\n``/``\\r\\n``/``\\r`` line ends, multi-line data, comments, and a
    final frame without its blank line (``flush``).
    """

    __slots__ = ("_buf", "_data", "_event")

    def __init__(self) -> None:
        self._buf = b""
        self._event: str | None = None
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> Iterator[tuple[str | None, bytes]]:
        buf = self._buf + chunk if self._buf else chunk
        if b"\r" in buf:
            # A trailing \r may be the first half of \r\n: keep it for later.
            keep_cr = buf.endswith(b"\r")
            if keep_cr:
                buf = buf[:-1]
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            if keep_cr:
                buf += b"\r"
        start = 0
        while True:
            end = buf.find(b"\n", start)
            if end < 0:
                break
            line = buf[start:end]
            start = end + 1
            result = self._line(line)
            if result is not None:
                yield result
        self._buf = buf[start:]

    def idle(self) -> bool:
        """Between frames: nothing buffered, no frame begun."""
        return not self._buf and self._event is None and not self._data

    def flush(self) -> Iterator[tuple[str | None, bytes]]:
        """End of stream: emit a pending frame that lacked its blank line."""
        if self._buf:
            tail, self._buf = self._buf.rstrip(b"\r"), b""
            result = self._line(tail)
            if result is not None:
                yield result
        result = self._line(b"")
        if result is not None:
            yield result

    def _line(self, line: bytes) -> tuple[str | None, bytes] | None:
        if not line:
            if not self._data and self._event is None:
                return None
            event, data = self._event, b"\n".join(self._data)
            self._event, self._data = None, []
            return event, data
        if line[0] == 58:  # b":" comment / keep-alive
            return None
        field, _, value = line.partition(b":")
        if value[:1] == b" ":
            value = value[1:]
        if field == b"data":
            self._data.append(value)
        elif field == b"event":
            self._event = value.decode("utf-8", "replace")
        return None


def whole_frames(chunk: bytes) -> bool:
    """Does ``chunk`` end at a frame boundary (a blank line)?"""
    return chunk.endswith(b"\n\n") or chunk.endswith(b"\r\n\r\n")
