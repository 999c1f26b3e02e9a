"""The Anthropic Messages door's mapping rules, codec alone (each is also
exercised end to end through the SDKs and Claude Code in tests/integration)."""

from __future__ import annotations

import json
from typing import get_args

import msgspec
import pytest

from vdm import ir
from vdm.errors import InvalidRequest
from vdm.protocols import anthropic_door
from vdm.protocols.sse import SSEParser, frame

_HI = [{"role": "user", "content": "hi"}]


def _decode(**body: object) -> ir.ChatRequest:
    return anthropic_door.decode_request({"model": "m", "max_tokens": 9, "messages": _HI, **body})


def test_tool_choice_carries_the_parallel_switch_and_a_tool_needs_its_name() -> None:
    choice = {"type": "tool", "name": "f", "disable_parallel_tool_use": True}
    assert _decode(tool_choice=choice).tool_choice == ir.ToolChoice("tool", "f", True)
    with pytest.raises(InvalidRequest, match=r"tool_choice\.name"):
        _decode(tool_choice={"type": "tool"})
    with pytest.raises(InvalidRequest, match=r"tool_choice\.type"):
        _decode(tool_choice={"type": "required"})


def test_thinking_modes_and_the_effort_that_is_not_one() -> None:
    assert _decode(thinking={"type": "enabled", "budget_tokens": 2048}).thinking == ir.Thinking(
        "enabled", 2048
    )
    assert _decode(thinking={"type": "adaptive"}).thinking == ir.Thinking("adaptive")
    assert _decode(output_config={"effort": "high"}).effort == "high"
    assert _decode(output_config={"effort": "ludicrous"}).effort is None  # unknown: ignored


def _frames(events: list[ir.Event]) -> list[tuple[str | None, dict[str, object]]]:
    parser = SSEParser()
    return [
        (name, json.loads(data))
        for event in events
        for name, data in parser.feed(anthropic_door.encode_event(event))
    ]


def test_stream_events_follow_the_messages_grammar() -> None:
    usage = ir.Usage(input_tokens=3, cache_read_input_tokens=5)
    frames = _frames(
        [
            ir.MessageStart("msg_1", "m", usage),
            ir.ThinkingStart(0),
            ir.ThinkingDelta(0, "hmm"),
            ir.SignatureDelta(0, "sig"),
            ir.BlockStop(0),
            ir.ToolUseStart(1, "toolu_a", "f"),
            ir.ToolInputDelta(1, "{}"),
            ir.BlockStop(1),
            ir.MessageDelta("tool_use", ir.Usage(output_tokens=2)),
            ir.MessageStop(),
        ]
    )
    assert [name for name, _ in frames] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(name == body["type"] for name, body in frames)  # event name == data type
    start = frames[0][1]["message"]
    assert start["content"] == [] and start["stop_reason"] is None  # type: ignore[index]
    assert start["usage"] == {  # type: ignore[index]
        "input_tokens": 3,
        "output_tokens": 0,
        "cache_read_input_tokens": 5,
    }
    deltas = [body["delta"] for name, body in frames if name == "content_block_delta"]
    assert deltas == [
        {"type": "thinking_delta", "thinking": "hmm"},
        {"type": "signature_delta", "signature": "sig"},
        {"type": "input_json_delta", "partial_json": "{}"},
    ]
    assert frames[5][1]["content_block"] == {
        "type": "tool_use",
        "id": "toolu_a",
        "name": "f",
        "input": {},
    }
    assert frames[8][1]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}


def test_every_ir_event_type_has_an_encoder() -> None:
    """The encoder is a table keyed by event type: a new member of ir.Event
    without its row would be a KeyError mid-stream."""
    assert set(anthropic_door.EVENT_ENCODERS) == set(get_args(ir.Event))


_AWKWARD = ['"quoted" \\ back', "line\nbreak\r\ttab \x00\x1f", "é ✓ 🙂 \u2028", "</script>", ""]


@pytest.mark.parametrize("text", _AWKWARD)
def test_a_delta_frame_is_the_json_a_dict_would_encode_to(text: str) -> None:
    """The deltas are byte templates around one encoded string: the same bytes
    as the dict they stand for, whatever the string holds."""
    cases: list[tuple[ir.Event, dict[str, str]]] = [
        (ir.TextDelta(7, text), {"type": "text_delta", "text": text}),
        (ir.ToolInputDelta(7, text), {"type": "input_json_delta", "partial_json": text}),
        (ir.ThinkingDelta(7, text), {"type": "thinking_delta", "thinking": text}),
        (ir.SignatureDelta(7, text), {"type": "signature_delta", "signature": text}),
    ]
    for event, delta in cases:
        body = {"type": "content_block_delta", "index": 7, "delta": delta}
        assert anthropic_door.encode_event(event) == frame(
            "content_block_delta", msgspec.json.encode(body)
        )
    assert anthropic_door.encode_event(ir.BlockStop(12345)) == frame(
        "content_block_stop", b'{"type":"content_block_stop","index":12345}'
    )
