"""The OpenAI passthrough's usage tap decodes only the frames that carry usage
or a finish reason, whatever the upstream's JSON spacing."""

from __future__ import annotations

import json

import pytest

from vdm.protocols.openai_upstream import UsageTap
from vdm.protocols.sse import FrameCutter


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


def _anthropic_stream(spaced: bool) -> bytes:
    def ev(name: str, obj: object) -> bytes:
        text = json.dumps(obj) if spaced else json.dumps(obj, separators=(",", ":"))
        return f"event: {name}\ndata: {text}\n\n".encode()

    start = {"type": "message_start", "message": {"usage": {"input_tokens": 11}}}
    text = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta"}}
    end = {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn"},
        "usage": {"output_tokens": 9},
    }
    return (
        ev("message_start", start)
        + ev("content_block_delta", text) * 20
        + ev("message_delta", end)
        + ev("message_stop", {"type": "message_stop"})
    )


@pytest.mark.parametrize("spaced", [False, True])
@pytest.mark.parametrize("crlf", [False, True])
def test_both_taps_read_the_same_whatever_the_chunking(spaced: bool, crlf: bool) -> None:
    """Frames skipped unparsed (nothing to read) never change the result:
    every way of cutting the stream reads the same usage."""
    import random

    from vdm.protocols.anthropic_upstream import UsageTap as AnthropicTap

    rng = random.Random(7)
    ant = _anthropic_stream(spaced)
    oai = b"".join(
        frame({"choices": [{"index": 0, "delta": {"content": "x"}}], "usage": None}, spaced)
        for _ in range(20)
    ) + frame({"choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 7}}, spaced)
    if crlf:
        ant, oai = ant.replace(b"\n", b"\r\n"), oai.replace(b"\n", b"\r\n")
    for _ in range(200):
        taps = (AnthropicTap(), UsageTap())
        for tap, stream in zip(taps, (ant, oai), strict=True):
            cutter = FrameCutter()  # as the passthrough relay feeds a tap: whole frames
            cuts = sorted(rng.sample(range(1, len(stream)), rng.randint(0, 30)))
            for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True):
                tap.feed(cutter.cut(stream[a:b]))
        ant_tap, oai_tap = taps
        assert (ant_tap.usage.input_tokens, ant_tap.usage.output_tokens) == (11, 9)
        assert ant_tap.stop_reason == "end_turn"
        assert oai_tap.usage is not None and oai_tap.usage.output_tokens == 7
