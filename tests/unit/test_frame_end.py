"""Passthrough relays whole SSE frames (sse.frame_end finds where they end,
sse.FrameCutter holds the unfinished rest back)."""

from __future__ import annotations

import pytest

from vdm.protocols.sse import FrameCutter, frame_end, last_frame, whole_frames


@pytest.mark.parametrize(
    ("data", "end"),
    [
        (b"", 0),
        (b"data: {", 0),
        (b"data: {}\n", 0),
        (b"data: {}\n\n", 10),
        (b"data: 1\n\ndata: 2\n\n", 18),
        (b"data: 1\n\ndata: {", 9),
        (b"event: ping\r\ndata: {}\r\n\r\n", 25),
        (b"data: 1\r\n\r\ndata: 2", 11),
        (b"data: 1\r\rdata: 2", 9),
    ],
)
def test_frame_end(data: bytes, end: int) -> None:
    assert frame_end(data) == end
    assert data[:end] == b"" or whole_frames(data[:end])


def test_the_cutter_gives_whole_frames_however_the_stream_is_cut() -> None:
    import random

    stream = b"".join(f'event: e{i}\ndata: {{"n":{i}}}\n\n'.encode() for i in range(30))
    rng = random.Random(3)
    for crlf in (False, True):
        data = stream.replace(b"\n", b"\r\n") if crlf else stream
        for _ in range(100):
            cutter, out = FrameCutter(), []
            cuts = sorted(rng.sample(range(1, len(data)), rng.randint(0, 40)))
            for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True):
                frames = cutter.cut(data[a:b])
                assert frames == b"" or whole_frames(frames)
                out.append(frames)
            assert b"".join(out) == data and cutter.held == b""


def test_last_frame_finds_the_last_real_frame_of_an_event() -> None:
    stream = (
        b'event: message_start\ndata: {"a":1}\n\n'
        + b'event: content_block_delta\ndata: {"text":"x"}\n\n' * 5
        + b'event: message_delta\ndata: {"b":1}\n\n'
        + b'event: message_delta\ndata: {"b":2}\n\n'
        # text that names both events comes after the real frames
        + b'event: content_block_delta\ndata: {"text":"message_start message_delta"}\n\n'
        + b"event: message_stop\ndata: {}"  # an unterminated tail
    )
    for data in (stream, stream.replace(b"\n", b"\r\n")):
        assert last_frame(data, (b"message_start",), "message_start") == (
            "message_start",
            b'{"a":1}',
        )
        assert last_frame(data, (b"message_delta",), "message_delta") == (
            "message_delta",
            b'{"b":2}',
        )
        assert last_frame(data, (b"message_delta",)) == (
            "content_block_delta",
            b'{"text":"message_start message_delta"}',
        )
        assert last_frame(data, (b"message_stop",), "message_stop") == ("message_stop", b"{}")
        # the second way of writing it counts when the first is nowhere
        assert last_frame(data, (b"absent", b'"b":1'))[1] == b'{"b":1}'
    assert last_frame(stream, (b"nothing",)) is None
    assert last_frame(stream, (b"message_start",), "message_stop") is None
