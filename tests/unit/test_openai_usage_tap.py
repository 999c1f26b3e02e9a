"""The OpenAI passthrough's usage tap decodes only the frames that carry usage
or a finish reason, whatever the upstream's JSON spacing."""

from __future__ import annotations

import json

import pytest

from vdm.protocols.openai import UsageTap


def frame(obj: object, spaced: bool) -> bytes:
    text = json.dumps(obj) if spaced else json.dumps(obj, separators=(",", ":"))
    return b"data: " + text.encode() + b"\n\n"


class CountingTap(UsageTap):
    __slots__ = ("decoded",)

    def __init__(self) -> None:
        super().__init__()
        self.decoded: list[bytes] = []

    def read(self, data: bytes) -> None:
        self.decoded.append(data)
        super().read(data)


@pytest.mark.parametrize("spaced", [False, True])
def test_reads_usage_and_finish_reason_and_skips_null_ones(spaced: bool) -> None:
    tap = CountingTap()
    decoded = tap.decoded
    delta = {"choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": None}]}
    for _ in range(20):
        tap.feed(frame({**delta, "usage": None}, spaced))
    assert decoded == []  # nothing to read in those
    tap.feed(frame({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}, spaced))
    tap.feed(frame({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 7}}, spaced))
    tap.feed(b"data: [DONE]\n\n")
    assert len(decoded) == 2
    assert tap.stop_reason == "stop"
    assert tap.usage is not None
    assert (tap.usage.input_tokens, tap.usage.output_tokens) == (5, 7)
