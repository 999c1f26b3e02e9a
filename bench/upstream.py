"""A very fast fake LLM upstream for benchmarks: raw asyncio + uvloop, no framework.

Serves fixed answers so the upstream is never the bottleneck:

* ``POST /v1/chat/completions`` (OpenAI): JSON, or SSE when the body has ``"stream": true``
  (20 content chunks, a ``finish_reason: "stop"`` chunk, a usage chunk when
  ``stream_options.include_usage`` is true, then ``data: [DONE]``).
* ``POST /v1/messages`` (Anthropic): JSON, or the Anthropic SSE event sequence
  (20 ``text_delta`` events).
* ``POST /v1/messages/count_tokens`` and ``GET /health`` for completeness.

The response ``model`` echoes the request's ``model``.  Streams use chunked
transfer encoding, one HTTP chunk per SSE event; with ``chunk_delay_ms`` > 0
the events are spaced out in time (to expose a gateway that buffers streams).

Run ``python bench/upstream.py --port P`` or import :func:`serve`.
"""

from __future__ import annotations

import argparse
import asyncio
import re
from collections.abc import Callable

import msgspec

# The answer every endpoint gives; the validators check it byte for byte.
CHUNKS: tuple[str, ...] = (
    "Hello",
    ",",
    " this",
    " is",
    " a",
    ' "bench"',
    " reply",
    " with",
    " unicode:",
    " é",
    " 漢字",
    " 🚀",
    " and",
    "\nnew",
    " lines,",
    " a \\ back",
    "slash,",
    " a\ttab",
    " done",
    ".",
)
EXPECTED_TEXT = "".join(CHUNKS)
PROMPT_TOKENS = 25
COMPLETION_TOKENS = 20
TOTAL_TOKENS = PROMPT_TOKENS + COMPLETION_TOKENS
CREATED = 1_700_000_000

_MODEL_RE = re.compile(rb'"model"\s*:\s*"((?:[^"\\]|\\.)*)"')
_STREAM_RE = re.compile(rb'"stream"\s*:\s*true')
_USAGE_RE = re.compile(rb'"include_usage"\s*:\s*true')
_enc = msgspec.json.encode

# A placeholder for the (already JSON-escaped) model string inside templates.
_M = "\x00MODEL\x00"
_MB = _enc(_M)[1:-1]  # as it appears inside an encoded JSON string


def _template(obj: object) -> tuple[bytes, ...]:
    """Encode ``obj`` to JSON and split it around the model placeholder."""
    return tuple(_enc(obj).split(_MB))


def _sse(prefix: bytes, obj: object) -> tuple[bytes, ...]:
    """One SSE event as a template: ``prefix`` + JSON + blank line."""
    parts = list(_template(obj))
    parts[0] = prefix + parts[0]
    parts[-1] += b"\n\n"
    return tuple(parts)


def _fill(parts: tuple[bytes, ...], model: bytes) -> bytes:
    return model.join(parts)


# --- OpenAI -----------------------------------------------------------------

_OA_USAGE = {
    "prompt_tokens": PROMPT_TOKENS,
    "completion_tokens": COMPLETION_TOKENS,
    "total_tokens": TOTAL_TOKENS,
}
_OA_JSON = _template(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": CREATED,
        "model": _M,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": EXPECTED_TEXT, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": _OA_USAGE,
        "system_fingerprint": "fp_bench",
    }
)


def _oa_chunk(delta: dict, finish: str | None, usage: bool, choices: bool = True) -> dict:
    chunk: dict = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": _M,
        "system_fingerprint": "fp_bench",
        "choices": (
            [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
            if choices
            else []
        ),
    }
    if usage:
        chunk["usage"] = None
    return chunk


def _oa_events(usage: bool) -> list[tuple[bytes, ...]]:
    events = []
    for i, text in enumerate(CHUNKS):
        delta = {"role": "assistant", "content": text} if i == 0 else {"content": text}
        events.append(_oa_chunk(delta, None, usage))
    events.append(_oa_chunk({}, "stop", usage))
    if usage:
        last = _oa_chunk({}, None, False, choices=False)
        last["usage"] = _OA_USAGE
        events.append(last)
    out = [_sse(b"data: ", e) for e in events]
    out.append((b"data: [DONE]\n\n",))
    return out


_OA_SSE = {True: _oa_events(True), False: _oa_events(False)}

# --- Anthropic --------------------------------------------------------------

_ANT_JSON = _template(
    {
        "id": "msg_bench",
        "type": "message",
        "role": "assistant",
        "model": _M,
        "content": [{"type": "text", "text": EXPECTED_TEXT}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": PROMPT_TOKENS, "output_tokens": COMPLETION_TOKENS},
    }
)


def _ant_event(name: str, data: dict) -> tuple[bytes, ...]:
    return _sse(f"event: {name}\ndata: ".encode(), data)


def _ant_events() -> list[tuple[bytes, ...]]:
    ev = [
        _ant_event(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_bench",
                    "type": "message",
                    "role": "assistant",
                    "model": _M,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": PROMPT_TOKENS, "output_tokens": 1},
                },
            },
        ),
        _ant_event(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
        _ant_event("ping", {"type": "ping"}),
    ]
    for text in CHUNKS:
        ev.append(
            _ant_event(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": text},
                },
            )
        )
    ev.append(_ant_event("content_block_stop", {"type": "content_block_stop", "index": 0}))
    ev.append(
        _ant_event(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": COMPLETION_TOKENS},
            },
        )
    )
    ev.append(_ant_event("message_stop", {"type": "message_stop"}))
    return ev


_ANT_SSE = _ant_events()


def anthropic_json(model: bytes = b"bench-model") -> bytes:
    """The Anthropic message body this upstream answers (tests use it as the valid case)."""
    return _fill(_ANT_JSON, model)


def anthropic_sse(model: bytes = b"bench-model") -> bytes:
    """The whole Anthropic SSE body this upstream streams, without the HTTP chunking."""
    return b"".join(_fill(e, model) for e in _ANT_SSE)


def openai_json(model: bytes = b"bench-model") -> bytes:
    return _fill(_OA_JSON, model)


def openai_sse(model: bytes = b"bench-model", *, usage: bool = True) -> bytes:
    return b"".join(_fill(e, model) for e in _OA_SSE[usage])


# --- HTTP -------------------------------------------------------------------

_JSON_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: "
_SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\n"
    b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"
)
_CLOSE = b"connection: close\r\n"


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _json_response(body: bytes, status: bytes = b"200 OK", close: bool = False) -> bytes:
    head = _JSON_HEAD if status == b"200 OK" else _JSON_HEAD.replace(b"200 OK", status, 1)
    return head + str(len(body)).encode() + b"\r\n" + (_CLOSE if close else b"") + b"\r\n" + body


def _error(status: bytes, message: str) -> bytes:
    body = _enc({"error": {"type": "bench_upstream_error", "message": message}})
    return _json_response(body, status, close=True)


class _Cache:
    """Responses per (kind, model): the model varies little, so reuse the bytes."""

    def __init__(self, limit: int = 256) -> None:
        self._d: dict[tuple[str, bytes], object] = {}
        self._limit = limit

    def get(self, key: tuple[str, bytes], make: Callable[[], object]) -> object:
        value = self._d.get(key)
        if value is None:
            if len(self._d) >= self._limit:
                self._d.clear()
            value = self._d[key] = make()
        return value


_cache = _Cache()


def _stream_chunks(events: list[tuple[bytes, ...]], model: bytes) -> list[bytes]:
    return [_chunk(_fill(e, model)) for e in events]


def build_response(method: bytes, path: bytes, body: bytes) -> tuple[bytes, list[bytes] | None]:
    """Return ``(head_or_whole_response, stream_chunks_or_None)``."""
    path = path.split(b"?", 1)[0]
    if method == b"GET" and path in (b"/health", b"/ready", b"/"):
        return _json_response(b'{"status":"ok"}'), None
    if method != b"POST":
        return _error(b"405 Method Not Allowed", "method not allowed"), None
    m = _MODEL_RE.search(body)
    model = m.group(1) if m else b"unknown"
    stream = _STREAM_RE.search(body) is not None
    if path == b"/v1/chat/completions":
        if not stream:
            resp = _cache.get(("oa", model), lambda: _json_response(_fill(_OA_JSON, model)))
            return resp, None  # type: ignore[return-value]
        usage = _USAGE_RE.search(body) is not None
        chunks = _cache.get(
            ("oas" if usage else "oan", model), lambda: _stream_chunks(_OA_SSE[usage], model)
        )
        return _SSE_HEAD, chunks  # type: ignore[return-value]
    if path == b"/v1/messages":
        if not stream:
            resp = _cache.get(("ant", model), lambda: _json_response(_fill(_ANT_JSON, model)))
            return resp, None  # type: ignore[return-value]
        chunks = _cache.get(("ants", model), lambda: _stream_chunks(_ANT_SSE, model))
        return _SSE_HEAD, chunks  # type: ignore[return-value]
    if path == b"/v1/messages/count_tokens":
        return _json_response(b'{"input_tokens":%d}' % PROMPT_TOKENS), None
    return _error(b"404 Not Found", "no such route"), None


_END = b"0\r\n\r\n"
_MAX_HEAD = 64 * 1024


class UpstreamProtocol(asyncio.Protocol):
    """HTTP/1.1 keep-alive with Content-Length request bodies (pipelining works)."""

    __slots__ = ("_buf", "_busy", "_closing", "_delay", "_loop", "_transport")

    def __init__(self, chunk_delay: float = 0.0) -> None:
        self._delay = chunk_delay
        self._buf = bytearray()
        self._busy = False
        self._closing = False
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop() if chunk_delay else None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._closing = True

    def data_received(self, data: bytes) -> None:
        self._buf += data
        if not self._busy:
            self._process()

    def _process(self) -> None:
        buf = self._buf
        t = self._transport
        while t is not None and not self._closing:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > _MAX_HEAD:
                    self._fail(b"431 Request Header Fields Too Large", "headers too large")
                return
            lines = bytes(buf[:end]).split(b"\r\n")
            try:
                method, path, version = lines[0].split(b" ", 2)
            except ValueError:
                self._fail(b"400 Bad Request", "bad request line")
                return
            length = 0
            close = version == b"HTTP/1.0"
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    try:
                        length = int(value)
                    except ValueError:
                        self._fail(b"400 Bad Request", "bad content-length")
                        return
                elif name == b"transfer-encoding":
                    self._fail(b"411 Length Required", "chunked request bodies not supported")
                    return
                elif name == b"connection":
                    v = value.strip().lower()
                    close = v == b"close" or (close and v != b"keep-alive")
            need = end + 4 + length
            if len(buf) < need:
                return
            body = bytes(buf[end + 4 : need])
            del buf[:need]
            head, chunks = build_response(method, path, body)
            if chunks is None:
                t.write(head)
            elif not self._delay:
                t.writelines((head, *chunks, _END))
            else:
                self._busy = True
                t.write(head)
                self._drip(chunks, 0, close)
                return
            if close:
                self._closing = True
                t.close()
                return

    def _drip(self, chunks: list[bytes], i: int, close: bool) -> None:
        t = self._transport
        if t is None:
            return
        if i < len(chunks):
            t.write(chunks[i])
            assert self._loop is not None
            self._loop.call_later(self._delay, self._drip, chunks, i + 1, close)
            return
        t.write(_END)
        self._busy = False
        if close:
            self._closing = True
            t.close()
            return
        self._process()

    def _fail(self, status: bytes, message: str) -> None:
        self._closing = True
        if self._transport is not None:
            self._transport.write(_error(status, message))
            self._transport.close()


async def serve(
    host: str = "127.0.0.1", port: int = 0, chunk_delay_ms: float = 0.0
) -> asyncio.Server:
    """Start the upstream on the running loop; ``server.sockets[0]`` has the port."""
    loop = asyncio.get_running_loop()
    delay = chunk_delay_ms / 1000.0
    return await loop.create_server(
        lambda: UpstreamProtocol(delay), host, port, reuse_address=True, backlog=1024
    )


async def _main(host: str, port: int, chunk_delay_ms: float) -> None:
    server = await serve(host, port, chunk_delay_ms)
    print(f"bench upstream on http://{host}:{server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9099)
    parser.add_argument(
        "--chunk-delay-ms", type=float, default=0.0, help="space stream events by this much"
    )
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        uvloop = None
    try:
        if uvloop is not None:
            uvloop.run(_main(args.host, args.port, args.chunk_delay_ms))
        else:
            asyncio.run(_main(args.host, args.port, args.chunk_delay_ms))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
