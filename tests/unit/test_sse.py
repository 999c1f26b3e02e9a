"""SSEParser: frames come out whole whatever the read boundaries, line ends,
comments, multi-line data and event names; ``flush`` emits a last frame that
lacked its blank line."""

from __future__ import annotations

import pytest

from vdm.protocols.sse import SSEParser, frame

Frames = list[tuple[str | None, bytes]]


def parse(*chunks: bytes, flush: bool = True) -> Frames:
    parser = SSEParser()
    out: Frames = []
    for chunk in chunks:
        out.extend(parser.feed(chunk))
    if flush:
        out.extend(parser.flush())
    return out


STREAM_LF = (
    b": keep-alive comment\n"
    b"event: message_start\n"
    b'data: {"type":"message_start","text":"h\xc3\xa9llo"}\n'
    b"\n"
    b"data: first line\n"
    b"data: second line\n"
    b"data:no-space\n"
    b"\n"
    b":another comment\n"
    b"event: content_block_delta\n"
    b"id: 7\n"
    b"retry: 100\n"
    b'data: {"a": "b: c"}\n'
    b"\n"
    b"data: [DONE]\n"
    b"\n"
)
EXPECTED: Frames = [
    ("message_start", b'{"type":"message_start","text":"h\xc3\xa9llo"}'),
    (None, b"first line\nsecond line\nno-space"),
    ("content_block_delta", b'{"a": "b: c"}'),
    (None, b"[DONE]"),
]


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"], ids=["LF", "CRLF", "CR"])
def test_whole_stream(newline: bytes) -> None:
    stream = STREAM_LF.replace(b"\n", newline)
    assert parse(stream) == EXPECTED
    if newline != b"\r":
        # every frame is complete before flush: flush adds nothing
        assert parse(stream, flush=False) == EXPECTED
    else:
        # a final lone \r may be half of \r\n: that frame waits for more or flush
        assert parse(stream, flush=False) == EXPECTED[:-1]


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"], ids=["LF", "CRLF"])
def test_split_at_every_byte_position(newline: bytes) -> None:
    stream = STREAM_LF.replace(b"\n", newline)
    for cut in range(len(stream) + 1):
        assert parse(stream[:cut], stream[cut:]) == EXPECTED, f"split at {cut}"


@pytest.mark.parametrize("newline", [b"\n", b"\r\n"], ids=["LF", "CRLF"])
def test_split_at_every_pair_of_positions(newline: bytes) -> None:
    stream = STREAM_LF.replace(b"\n", newline)[:90]  # a prefix keeps this quadratic test fast
    expected = parse(stream)
    assert expected  # the prefix holds at least one whole frame
    for a in range(len(stream) + 1):
        for b in range(a, len(stream) + 1):
            assert parse(stream[:a], stream[a:b], stream[b:]) == expected, (a, b)


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"], ids=["LF", "CRLF", "CR"])
def test_one_byte_at_a_time(newline: bytes) -> None:
    stream = STREAM_LF.replace(b"\n", newline)
    chunks = [stream[i : i + 1] for i in range(len(stream))]
    assert parse(*chunks) == EXPECTED


def test_crlf_split_between_cr_and_lf_makes_one_line_end() -> None:
    # "\r" then "\n" in the next read is one line end, not a line end plus an
    # empty line (which would end the frame early and split the data).
    assert parse(b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n") == [(None, b"a\nb")]
    parser = SSEParser()
    assert list(parser.feed(b"data: a\r")) == []
    assert list(parser.feed(b"\ndata: b\r")) == []
    assert list(parser.feed(b"\n\r")) == []  # may be the first half of \r\n
    assert list(parser.feed(b"\n")) == [(None, b"a\nb")]


def test_mixed_line_ends_in_one_stream() -> None:
    assert parse(b"event: x\r\ndata: 1\n\rdata: 2\r\r\n") == [("x", b"1"), (None, b"2")]


def test_events_come_out_as_soon_as_complete() -> None:
    parser = SSEParser()
    assert list(parser.feed(b"event: a\ndata: 1\n")) == []
    assert list(parser.feed(b"\nevent: b\ndata: 2")) == [("a", b"1")]
    assert list(parser.feed(b"\n\n")) == [("b", b"2")]
    assert list(parser.flush()) == []


def test_comments_only_and_blank_lines_yield_nothing() -> None:
    assert parse(b": ping\n\n: ping\n\n\n\n") == []
    assert parse(b":\n:x\n\n") == []


def test_event_name_applies_to_its_frame_only() -> None:
    assert parse(b"event: one\ndata: a\n\ndata: b\n\n") == [("one", b"a"), (None, b"b")]


def test_multiline_data_keeps_empty_lines_and_leading_spaces() -> None:
    # only the one space after "data:" is removed
    assert parse(b"data:  two spaces\ndata\ndata: \ndata: end\n\n") == [
        (None, b" two spaces\n\n\nend")
    ]


def test_unknown_fields_are_ignored() -> None:
    assert parse(b"id: 3\nretry: 10\nfoo: bar\ndata: x\n\n") == [(None, b"x")]


@pytest.mark.parametrize("tail", [b"", b"\n", b"\r", b"\r\n"], ids=["none", "LF", "CR", "CRLF"])
def test_flush_emits_a_last_frame_without_blank_line(tail: bytes) -> None:
    parser = SSEParser()
    assert list(parser.feed(b"data: one\n\nevent: last\ndata: final" + tail)) == [(None, b"one")]
    assert list(parser.flush()) == [("last", b"final")]
    assert list(parser.flush()) == []  # nothing left after a flush


def test_flush_of_a_split_last_frame() -> None:
    assert parse(b'data: {"a"', b": 1}") == [(None, b'{"a": 1}')]


def test_flush_of_nothing_pending_is_empty() -> None:
    assert parse(b"data: x\n\n") == [(None, b"x")]
    assert parse(b"") == []
    assert parse(b": only a comment") == []


def test_frame_round_trips_through_the_parser() -> None:
    frames = [frame("message_start", b'{"x":1}'), frame(None, b"[DONE]"), frame("ping", b"{}")]
    assert frames[0] == b'event: message_start\ndata: {"x":1}\n\n'
    assert frames[1] == b"data: [DONE]\n\n"
    stream = b"".join(frames)
    for cut in range(len(stream) + 1):
        assert parse(stream[:cut], stream[cut:], flush=False) == [
            ("message_start", b'{"x":1}'),
            (None, b"[DONE]"),
            ("ping", b"{}"),
        ]
