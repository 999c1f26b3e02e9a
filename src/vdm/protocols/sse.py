"""Server-sent events: incremental parsing of upstream bytes, framing of ours.

Pure functions and one small buffer object; no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator

__all__ = ["FrameCutter", "SSEParser", "frame", "frame_end", "last_frame", "whole_frames"]


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


# A frame ends with a blank line, after any of the three line ends SSE allows.
_BLANK_LINES = (b"\n\n", b"\r\n\r\n", b"\r\r")


def whole_frames(chunk: bytes) -> bool:
    """Does ``chunk`` end at a frame boundary (a blank line)?"""
    return chunk.endswith(_BLANK_LINES)


def frame_end(data: bytes) -> int:
    """Where the last complete frame in ``data`` ends (0 if none does).
    (The three blank lines of ``_BLANK_LINES``, spelt out: it runs per chunk.)"""
    lf = data.rfind(b"\n\n")
    crlf = data.rfind(b"\r\n\r\n")
    cr = data.rfind(b"\r\r")
    return max(lf + 2 if lf >= 0 else 0, crlf + 4 if crlf >= 0 else 0, cr + 2 if cr >= 0 else 0)


class FrameCutter:
    """Cuts a byte stream, however it is chunked, into runs of whole frames,
    holding back the unfinished frame at the end of each chunk."""

    __slots__ = ("held",)

    def __init__(self) -> None:
        self.held = b""

    def cut(self, chunk: bytes) -> bytes:
        """The whole frames that ``chunk`` completes (``b""`` if none)."""
        data = self.held + chunk if self.held else chunk
        end = frame_end(data)
        if end == len(data):
            self.held = b""
            return data
        self.held = data[end:]
        return data[:end]


def _one_frame(text: bytes) -> tuple[str | None, bytes] | None:
    """The frame in ``text`` (LF line ends, no blank line inside), by the parser's rules."""
    parser = SSEParser()
    line = parser._line
    for each in text.split(b"\n"):
        line(each)
    return line(b"")


def last_frame(
    frames: bytes, needles: tuple[bytes, ...], event: str | None = None
) -> tuple[str | None, bytes] | None:
    """The last frame of ``frames`` that holds ``needles[0]`` (and, with ``event``,
    is that event), parsed; failing that, the same for ``needles[1]``, and so
    on (the same fact written two ways); None if no frame qualifies.

    ``frames`` is whole frames (:meth:`FrameCutter.cut`), except that the last
    may lack its blank line (a stream's unterminated tail).  The search runs
    backwards from the end, where the frames a usage tap wants are, and never
    splits the frames it passes over into lines."""
    if b"\r" in frames:
        frames = frames.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    for needle in needles:
        limit = len(frames)
        while (hit := frames.rfind(needle, 0, limit)) >= 0:
            begin = frames.rfind(b"\n\n", 0, hit)
            begin = 0 if begin < 0 else begin + 2
            end = frames.find(b"\n\n", hit)
            found = _one_frame(frames[begin:end] if end >= 0 else frames[begin:])
            if found is not None and (event is None or found[0] == event):
                return found
            limit = begin
    return None
