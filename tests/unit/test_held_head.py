"""The HTTP protocol writes a fixed-length response's head and body in one go."""

from __future__ import annotations

from vdm.server.protocol import HeldHead


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
    held = HeldHead(transport, hold=True)
    held.write(HEAD)
    assert transport.writes == []
    held.write(b"{}")
    assert transport.writes == [HEAD + b"{}"]
    held.write(b"more")  # (nothing is held after the head)
    assert transport.writes[-1] == b"more"


def test_an_empty_body_still_sends_the_head() -> None:
    transport = FakeTransport()
    held = HeldHead(transport, hold=True)
    held.write(HEAD)
    held.write(b"")
    assert transport.writes == [HEAD]


def test_a_stream_head_is_written_at_once() -> None:
    transport = FakeTransport()
    held = HeldHead(transport, hold=True)
    held.write(CHUNKED)
    assert transport.writes == [CHUNKED]


def test_head_requests_are_not_held() -> None:
    transport = FakeTransport()
    HeldHead(transport, hold=False).write(HEAD)
    assert transport.writes == [HEAD]


def test_a_large_body_is_not_copied_behind_the_head() -> None:
    transport = FakeTransport()
    held = HeldHead(transport, hold=True)
    held.write(HEAD)
    body = b"x" * 200_000
    held.write(body)
    assert transport.writes == [HEAD, body]


def test_close_flushes_a_held_head_and_other_calls_pass_through() -> None:
    transport = FakeTransport()
    held = HeldHead(transport, hold=True)
    held.write(HEAD)
    assert not held.is_closing()
    held.close()
    assert transport.writes == [HEAD]
    assert transport.closed
