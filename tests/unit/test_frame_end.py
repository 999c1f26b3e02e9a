"""Passthrough relays whole SSE frames (pipeline._frame_end finds where they end)."""

from __future__ import annotations

import pytest

from vdm.pipeline import _frame_end


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
    ],
)
def test_frame_end(data: bytes, end: int) -> None:
    assert _frame_end(data) == end
    assert data[:end] == b"" or data[:end].endswith((b"\n\n", b"\r\n\r\n"))
