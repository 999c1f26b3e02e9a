"""Fake upstreams on loopback that record what they receive.

Each fake runs an aiohttp server on its own thread and event loop, so
synchronous tests (the official SDKs' sync clients) can drive the gateway
process while the fake answers it.  A test scripts the answers in order
(``fake.reply(...)``) or installs a responder function; every request is
recorded as :class:`Recorded`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import socket
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

from tests.support.waiting import BOUND, until, wait_for


@dataclass
class Recorded:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # lower-case names
    body: bytes
    size: int | None = None  # CountBody: bytes received (the body itself is not kept)
    sha256: str | None = None  # CountBody: hex digest of those bytes
    target: str = ""  # the request target as sent (path and query, still %-encoded)

    @property
    def json(self) -> Any:
        return json.loads(self.body)


# A reply's headers: a dict, or pairs when a name is to be sent on several lines.
Headers = dict[str, str] | list[tuple[str, str]]


def _with(base: dict[str, str], extra: Headers) -> CIMultiDict[str]:
    """``base``, with the names ``extra`` sends replaced by its lines."""
    pairs = list(extra.items()) if isinstance(extra, dict) else list(extra)
    named = {k.lower() for k, _ in pairs}
    out = CIMultiDict((k, v) for k, v in base.items() if k.lower() not in named)
    out.extend(pairs)
    return out


@dataclass
class JSONReply:
    """``release``, when given, holds the answer until the test sets it (a
    request kept in flight for as long as the test needs, on any machine)."""

    body: Any
    status: int = 200
    headers: Headers = field(default_factory=dict)
    delay: float = 0.0
    release: threading.Event | None = None


@dataclass
class SSEReply:
    """Raw SSE: each item is sent as its own network write.

    ``delays[i]`` (when given) replaces ``delay`` before chunk ``i``, so a
    stream can pause at one chosen point.  To keep a stream in flight for as
    long as a test needs, whatever the machine's load, hold it instead:
    ``gate`` (when given) holds chunk ``gate_before`` back until the test sets
    it, and ``holds`` maps more chunk indexes to events of their own (each 60 s
    at most; the test sets them in a ``finally``).  ``cut_after=n`` sends only
    the first ``n`` chunks and then aborts the connection: the chunked body never
    gets its terminating chunk, as when an upstream dies mid-answer.
    """

    chunks: list[bytes]
    status: int = 200
    delay: float = 0.0  # before each chunk
    headers: Headers = field(default_factory=dict)
    delays: list[float] | None = None
    cut_after: int | None = None
    gate: threading.Event | None = None
    gate_before: int = 1
    holds: dict[int, threading.Event] = field(default_factory=dict)

    def pause_before(self, index: int) -> float:
        if self.delays is not None and index < len(self.delays):
            return self.delays[index]
        return self.delay

    def hold_before(self, index: int) -> threading.Event | None:
        if self.gate is not None and index == self.gate_before:
            return self.gate
        return self.holds.get(index)


@dataclass
class RawReply:
    body: bytes
    status: int = 200
    content_type: str = "application/json"
    headers: Headers = field(default_factory=dict)


@dataclass
class Hang:
    """Accept the request and never answer (until the client leaves)."""

    seconds: float = 3600.0


@dataclass
class Drop:
    """Close the connection without answering."""


@dataclass
class CountBody:
    """Read the request body as it streams in, keeping only its size and
    SHA-256 (large uploads without the fake holding them); answer ``body``
    with ``bytes`` and ``sha256`` added."""

    body: dict[str, Any] = field(default_factory=dict)
    status: int = 200


@dataclass
class StreamBytes:
    """Stream ``total`` bytes of :func:`pattern` with a content-length."""

    total: int
    status: int = 200
    content_type: str = "application/octet-stream"


def pattern(total: int, chunk: int = 1 << 20) -> Iterator[bytes]:
    """Deterministic, non-repeating-looking bytes, generated chunk by chunk."""
    block = b"".join(hashlib.sha256(str(i).encode()).digest() for i in range(chunk // 32 + 1))
    sent = 0
    while sent < total:
        piece = block[: min(chunk, total - sent)]
        sent += len(piece)
        yield piece


Reply = JSONReply | SSEReply | RawReply | Hang | Drop | CountBody | StreamBytes
Responder = Callable[[Recorded], Reply]


class FakeUpstream:
    def __init__(self, name: str) -> None:
        self.name = name
        self.requests: list[Recorded] = []
        self.cancelled = 0  # streams/requests whose client went away
        self.cut = 0  # streams this fake aborted on purpose (SSEReply.cut_after)
        self._script: deque[Reply] = deque()
        self.responder: Responder | None = None
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self.port = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"fake-{name}", daemon=True)
        # Threads that wait for a test's events (JSONReply.release, SSEReply
        # holds): many answers may be held at once, more than the loop's
        # default executor has threads.
        self._held = ThreadPoolExecutor(256, thread_name_prefix=f"fake-{name}-held")

    # ------------------------------------------------------------ control

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeUpstream:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError(f"fake upstream {self.name} did not start")
        return self

    def stop(self) -> None:
        async def shutdown() -> None:
            if self._runner is not None:
                await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._held.shutdown(wait=False, cancel_futures=True)

    def reset(self) -> None:
        self.requests.clear()
        self._script.clear()
        self.responder = None
        self.cancelled = 0
        self.cut = 0

    def reply(self, *replies: Reply) -> None:
        self._script.extend(replies)

    @property
    def last(self) -> Recorded:
        assert self.requests, f"fake upstream {self.name} received no request"
        return self.requests[-1]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = BOUND) -> bool:
        return wait_for(predicate, timeout)

    async def _until_set(self, event: threading.Event) -> None:
        await asyncio.get_running_loop().run_in_executor(self._held, event.wait, 60)

    # ------------------------------------------------------------ server

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(
            app, access_log=None, handle_signals=False, handler_cancellation=True
        )
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._ready.set()
        self._loop.run_forever()

    def _next(self, recorded: Recorded) -> Reply:
        if self._script:
            return self._script.popleft()
        if self.responder is not None:
            return self.responder(recorded)
        return JSONReply(
            {"error": {"message": f"fake {self.name}: no scripted reply", "type": "test"}},
            status=599,
        )

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if self._script and isinstance(self._script[0], CountBody):
            return await self._count(request, self._script.popleft())  # type: ignore[arg-type]
        body = await request.read()
        recorded = Recorded(
            request.method,
            request.path,
            request.query_string,
            {k.lower(): v for k, v in request.headers.items()},
            body,
            target=request.raw_path,
        )
        self.requests.append(recorded)
        answer = self._next(recorded)
        try:
            return await self._answer(request, answer)
        except _Cut:
            # The transport is gone; aiohttp must not try to finish the response.
            raise asyncio.CancelledError from None
        except (asyncio.CancelledError, ConnectionResetError):
            self.cancelled += 1
            raise

    async def _count(self, request: web.Request, answer: CountBody) -> web.StreamResponse:
        digest = hashlib.sha256()
        size = 0
        async for piece in request.content.iter_any():
            size += len(piece)
            digest.update(piece)
        self.requests.append(
            Recorded(
                request.method,
                request.path,
                request.query_string,
                {k.lower(): v for k, v in request.headers.items()},
                b"",
                size,
                digest.hexdigest(),
                request.raw_path,
            )
        )
        return web.json_response(
            {**answer.body, "bytes": size, "sha256": digest.hexdigest()}, status=answer.status
        )

    async def _answer(self, request: web.Request, answer: Reply) -> web.StreamResponse:
        match answer:
            case JSONReply(body=body, status=status, headers=headers, delay=delay, release=gate):
                if delay:
                    await asyncio.sleep(delay)
                if gate is not None:
                    await self._until_set(gate)
                return web.json_response(body, status=status, headers=_with({}, headers))
            case RawReply(body=body, status=status, content_type=ctype, headers=headers):
                return web.Response(
                    body=body, status=status, headers=_with({"content-type": ctype}, headers)
                )
            case SSEReply(chunks=chunks, status=status, headers=headers, cut_after=cut):
                response = web.StreamResponse(
                    status=status, headers=_with({"content-type": "text/event-stream"}, headers)
                )
                await response.prepare(request)
                for index, chunk in enumerate(chunks if cut is None else chunks[:cut]):
                    pause = answer.pause_before(index)
                    if pause:
                        await asyncio.sleep(pause)
                    if (hold := answer.hold_before(index)) is not None:
                        await self._until_set(hold)
                    await response.write(chunk)
                if cut is not None:
                    self.cut += 1
                    if cut:
                        await reset_once_read(request)
                    elif request.transport is not None:
                        # No chunk: reset at once, before the gateway could have
                        # sent its client anything of its own (a ping, say).
                        request.transport.abort()
                    raise _Cut
                await response.write_eof()
                return response
            case StreamBytes(total=total, status=status, content_type=ctype):
                response = web.StreamResponse(
                    status=status, headers={"content-type": ctype, "content-length": str(total)}
                )
                await response.prepare(request)
                for piece in pattern(total):
                    await response.write(piece)
                await response.write_eof()
                return response
            case CountBody():
                raise AssertionError("CountBody is handled before the body is read")
            case Hang(seconds=seconds):
                await asyncio.sleep(seconds)
                return web.Response(status=204)
            case Drop():
                transport = request.transport
                if transport is not None:
                    transport.close()
                raise ConnectionResetError("dropped by test")
        raise AssertionError(f"unknown reply {answer!r}")


class _Cut(Exception):
    """Raised inside the fake after it aborted a stream on purpose."""


async def reset_once_read(request: web.Request) -> None:
    """Reset the connection (no final chunk) once the client has read every byte
    written so far: a reset may discard what the client has not read yet."""
    transport = request.transport
    if transport is None:
        return
    await until(lambda: _all_read(transport))
    transport.abort()


def _all_read(transport: asyncio.BaseTransport) -> bool:
    """Whether the peer of ``transport`` (a loopback TCP connection) has read
    all that was written to it: nothing in the transport's buffer, nothing
    unacknowledged in ours, nothing unread in the peer's receive queue."""
    if transport.get_write_buffer_size():  # type: ignore[attr-defined]
        return False
    ours = transport.get_extra_info("sockname")[1]
    theirs = transport.get_extra_info("peername")[1]
    for line in _tcp_lines():
        local, remote, queues = line[1], line[2], line[4]
        tx, rx = (int(n, 16) for n in queues.split(":"))
        ends = (_port(local), _port(remote))
        if ends == (ours, theirs) and tx:
            return False
        if ends == (theirs, ours) and rx:
            return False
    return True


def error_reply(
    status: int, message: str | None = None, *, style: str = "openai", **headers: str
) -> JSONReply:
    """An error status with a body in the upstream's own error shape."""
    text = message or f"fake upstream says {status}"
    if style == "anthropic":
        body: dict[str, Any] = {"type": "error", "error": {"type": "api_error", "message": text}}
    else:
        body = {"error": {"message": text, "type": "upstream_error", "code": None}}
    return JSONReply(body, status=status, headers=dict(headers))


# ---------------------------------------------------------------- sockets


def refused_url(path: str = "") -> str:
    """A loopback URL where nothing listens (a port just bound and released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"


_ESTABLISHED = "01"


def established_connections(port: int) -> int:
    """ESTABLISHED TCP connections whose local end is ``port`` (IPv4 and IPv6).

    For a fake upstream that is one per connection a client holds to it,
    whoever the client is, so a test compares counts rather than expecting 0.
    Each table is read in as few ``read`` calls as possible: the kernel walks
    it again at every call, and a busy machine's churn can then skip lines.
    """
    return sum(fields[3] == _ESTABLISHED and _port(fields[1]) == port for fields in _tcp_lines())


def unread_requests(port: int) -> int:
    """ESTABLISHED connections whose local end is ``port`` with bytes their
    server has not read yet (a request still in the kernel's receive queue)."""
    return sum(
        fields[3] == _ESTABLISHED
        and _port(fields[1]) == port
        and int(fields[4].split(":")[1], 16) > 0
        for fields in _tcp_lines()
    )


def _tcp_lines() -> Iterator[list[str]]:
    """The fields of every line of the kernel's TCP tables (IPv4 and IPv6)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            text = _read_proc(table)
        except FileNotFoundError:
            continue
        for line in text.splitlines()[1:]:
            yield line.split()


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1], 16)


def _read_proc(path: str) -> str:
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = []
        while chunk := os.read(fd, 1 << 22):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return b"".join(chunks).decode("ascii", "replace")


# ---------------------------------------------------------------- OpenAI answers

USAGE = {"prompt_tokens": 25, "completion_tokens": 20, "total_tokens": 45}


def completion(
    content: str | None = "Hello!",
    *,
    tool_calls: list[dict[str, Any]] | None = None,
    reasoning: str | None = None,
    finish: str = "stop",
    usage: dict[str, Any] | None = None,
    model: str = "upstream-model",
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    if reasoning:
        message["reasoning_content"] = reasoning
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 1,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": usage if usage is not None else USAGE,
    }


def tool_call(id_: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": id_, "type": "function", "function": {"name": name, "arguments": arguments}}


def sse(*objects: Any, done: bool = True) -> list[bytes]:
    chunks = [b"data: " + json.dumps(o).encode() + b"\n\n" for o in objects]
    if done:
        chunks.append(b"data: [DONE]\n\n")
    return chunks


def chunk(
    delta: dict[str, Any] | None = None,
    finish: str | None = None,
    usage: dict[str, Any] | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "upstream-model",
        "choices": []
        if delta is None and finish is None
        else [{"index": 0, "delta": delta or {}, "finish_reason": finish}],
    }
    if usage is not None:
        out["usage"] = usage
    return out


def stream_of(completion_body: dict[str, Any], *, pieces: int = 3) -> list[bytes]:
    """The streaming rendering of a chat.completion: content, reasoning and
    tool-call arguments split into ``pieces`` fragments each, then the finish
    chunk and a usage chunk."""
    message = completion_body["choices"][0]["message"]
    out = [chunk({"role": "assistant", "content": ""})]
    if message.get("reasoning_content"):
        for part in _split(message["reasoning_content"], pieces):
            out.append(chunk({"reasoning_content": part}))
    if message.get("content"):
        for part in _split(message["content"], pieces):
            out.append(chunk({"content": part}))
    for i, call in enumerate(message.get("tool_calls") or []):
        function = call["function"]
        out.append(
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": i,
                            "id": call["id"],
                            "type": "function",
                            "function": {"name": function["name"], "arguments": ""},
                        }
                    ]
                }
            )
        )
        for part in _split(function["arguments"], pieces):
            out.append(chunk({"tool_calls": [{"index": i, "function": {"arguments": part}}]}))
    out.append(chunk({}, finish=completion_body["choices"][0]["finish_reason"]))
    out.append(chunk(None, usage=completion_body["usage"]))
    return sse(*out)


def _split(text: str, pieces: int) -> list[str]:
    if not text:
        return []
    size = max(1, -(-len(text) // pieces))
    return [text[i : i + size] for i in range(0, len(text), size)]


# ---------------------------------------------------------------- Anthropic answers


def anthropic_message(
    text: str = "Hi from Anthropic",
    *,
    model: str = "claude-upstream",
    content: list[dict[str, Any]] | None = None,
    stop_reason: str = "end_turn",
) -> dict[str, Any]:
    return {
        "id": "msg_upstream123",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content if content is not None else [{"type": "text", "text": text}],
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": 25, "output_tokens": 20, "cache_read_input_tokens": 3},
    }


def anthropic_stream(text_pieces: list[str], *, model: str = "claude-upstream") -> list[bytes]:
    def ev(name: str, data: dict[str, Any]) -> bytes:
        return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()

    out = [
        ev(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_upstream123",
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": 25, "output_tokens": 1},
                },
            },
        ),
        ev(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "text", "text": ""},
            },
        ),
        ev("ping", {"type": "ping"}),
    ]
    for piece in text_pieces:
        out.append(
            ev(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": piece},
                },
            )
        )
    out += [
        ev("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ev(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                "usage": {"output_tokens": 20},
            },
        ),
        ev("message_stop", {"type": "message_stop"}),
    ]
    return out


def anthropic_stream_of(message: dict[str, Any]) -> list[bytes]:
    """The streaming rendering of an Anthropic message (see :func:`anthropic_message`):
    every block (text, thinking with its signature, tool_use) with its deltas, then the
    stop reason and usage."""

    def ev(name: str, data: dict[str, Any]) -> bytes:
        return f"event: {name}\ndata: {json.dumps({'type': name, **data})}\n\n".encode()

    head = {
        **message,
        "content": [],
        "stop_reason": None,
        "usage": {**message["usage"], "output_tokens": 1},
    }
    out = [ev("message_start", {"message": head})]
    for index, block in enumerate(message["content"]):
        kind = block["type"]
        if kind == "text":
            start, deltas = (
                {"type": "text", "text": ""},
                [{"type": "text_delta", "text": p} for p in _split(block["text"], 3)],
            )
        elif kind == "thinking":
            start = {"type": "thinking", "thinking": "", "signature": ""}
            deltas = [
                {"type": "thinking_delta", "thinking": p} for p in _split(block["thinking"], 3)
            ]
            deltas.append({"type": "signature_delta", "signature": block["signature"]})
        else:  # tool_use
            start = {"type": "tool_use", "id": block["id"], "name": block["name"], "input": {}}
            deltas = [
                {"type": "input_json_delta", "partial_json": p}
                for p in _split(json.dumps(block["input"]), 3)
            ]
        out.append(ev("content_block_start", {"index": index, "content_block": start}))
        out += [ev("content_block_delta", {"index": index, "delta": d}) for d in deltas]
        out.append(ev("content_block_stop", {"index": index}))
    out.append(
        ev(
            "message_delta",
            {
                "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                "usage": {"output_tokens": message["usage"]["output_tokens"]},
            },
        )
    )
    out.append(ev("message_stop", {}))
    return out
