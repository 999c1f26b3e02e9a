"""The HTTP protocol writes a response in as few writes as it can: a fixed-length
response's head with its body, a stream's writes of one loop turn together; a
converted stream's first text is not held back for the rest of its read."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from vdm import doors, ir
from vdm.outcome import Outcome
from vdm.pipeline.streams import render_stream
from vdm.server.asgi import send_stream
from vdm.server.protocol import ResponseWrites


class FakeLoop:
    def __init__(self) -> None:
        self.soon: list = []

    def call_soon(self, callback) -> None:  # type: ignore[no-untyped-def]
        self.soon.append(callback)

    def turn(self) -> None:
        soon, self.soon = self.soon, []
        for callback in soon:
            callback()


def writes(transport: FakeTransport, hold: bool = True) -> ResponseWrites:
    return ResponseWrites(transport, FakeLoop(), hold=hold)  # type: ignore[arg-type]


class FakeTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n"
CHUNKED = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
)


def test_a_fixed_length_head_goes_out_with_the_body() -> None:
    transport = FakeTransport()
    held = writes(transport)
    held.write(HEAD)
    assert transport.writes == []
    held.write(b"{}")
    assert transport.writes == [HEAD + b"{}"]
    held.write(b"more")  # (nothing is held after the head)
    assert transport.writes[-1] == b"more"


def test_an_empty_body_still_sends_the_head() -> None:
    transport = FakeTransport()
    held = writes(transport)
    held.write(HEAD)
    held.write(b"")
    assert transport.writes == [HEAD]


def test_a_streams_writes_of_one_loop_turn_leave_together() -> None:
    transport = FakeTransport()
    loop = FakeLoop()
    stream = ResponseWrites(transport, loop, hold=True)  # type: ignore[arg-type]
    stream.write(CHUNKED)
    stream.write(b"5\r\nhello\r\n")
    assert transport.writes == []
    loop.turn()
    assert transport.writes == [CHUNKED + b"5\r\nhello\r\n"]
    stream.write(b"1\r\n!\r\n")
    stream.write(b"0\r\n\r\n")
    loop.turn()
    assert transport.writes[1:] == [b"1\r\n!\r\n0\r\n\r\n"]
    loop.turn()  # nothing more
    assert len(transport.writes) == 2


def test_closing_a_stream_writes_what_it_gathered_first() -> None:
    transport = FakeTransport()
    stream = writes(transport)
    stream.write(CHUNKED)
    stream.close()
    assert transport.writes == [CHUNKED]
    assert transport.closed


def test_head_requests_are_not_held() -> None:
    transport = FakeTransport()
    writes(transport, hold=False).write(HEAD)
    assert transport.writes == [HEAD]


def test_a_large_body_is_not_copied_behind_the_head() -> None:
    transport = FakeTransport()
    held = writes(transport)
    held.write(HEAD)
    body = b"x" * 200_000
    held.write(body)
    assert transport.writes == [HEAD, body]


def test_close_flushes_a_held_head_and_other_calls_pass_through() -> None:
    transport = FakeTransport()
    held = writes(transport)
    held.write(HEAD)
    assert not held.is_closing()
    held.close()
    assert transport.writes == [HEAD]
    assert transport.closed


def test_flush_writes_a_streams_gathered_writes_at_once() -> None:
    transport = FakeTransport()
    loop = FakeLoop()
    stream = ResponseWrites(transport, loop, hold=True)  # type: ignore[arg-type]
    stream.write(CHUNKED)
    stream.write(b"0\r\n\r\n")
    stream.flush()
    assert transport.writes == [CHUNKED + b"0\r\n\r\n"]
    loop.turn()  # (the scheduled write finds nothing left)
    assert len(transport.writes) == 1


def test_a_converted_streams_first_text_is_written_before_the_rest_is_converted() -> None:
    """One upstream read that holds a whole answer (a fast upstream) is converted in
    one loop turn; the frames up to the first text delta leave in a write of their
    own, so the first text does not wait for the last."""

    async def one_read() -> AsyncIterator[ir.Event]:  # never suspends: all of it is in
        yield ir.TextStart(0)
        for n in range(20):
            yield ir.TextDelta(0, f"w{n} ")
        yield ir.BlockStop(0)
        yield ir.MessageDelta("end_turn", ir.Usage(0, 20))
        yield ir.MessageStop()

    async def relay() -> list[bytes]:
        transport = FakeTransport()
        stream = ResponseWrites(transport, asyncio.get_running_loop(), hold=True)

        async def send(message: dict) -> None:  # uvicorn's framing, shortened
            if message["type"] == "http.response.start":
                stream.write(CHUNKED)
            elif message["body"]:
                stream.write(b"%x\r\n%s\r\n" % (len(message["body"]), message["body"]))

        first = ir.MessageStart("msg_1", "m", ir.Usage(5, 0))
        rendering = doors.ANTHROPIC.render(None, "m")  # type: ignore[arg-type]
        body = render_stream(first, one_read(), Outcome(), rendering)
        await send_stream(send, 200, {}, body, lambda exc: b"")
        await asyncio.sleep(0)  # the last turn's writes
        return transport.writes

    written = asyncio.run(relay())
    assert len(written) == 2, written
    head, rest = written
    assert b"event: message_start" in head and b'"text":"w0 "' in head
    assert b"w1 " not in head
    assert b'"text":"w1 "' in rest and rest.count(b"event: message_stop") == 1
