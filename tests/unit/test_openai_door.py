"""The Chat Completions door's mapping rules, codec alone (each is also
exercised end to end through the SDKs in tests/integration/test_openai_door.py
and the conversion tests)."""

from __future__ import annotations

import json

import pytest

from vdm import ir
from vdm.errors import InvalidRequest
from vdm.protocols import openai_door
from vdm.protocols.sse import SSEParser

_HI = [{"role": "user", "content": "hi"}]


def _decode(**body: object) -> ir.ChatRequest:
    return openai_door.decode_request({"model": "m", **body})[0]


def test_leading_system_messages_are_the_system_text_later_ones_stay_in_place() -> None:
    request = _decode(
        messages=[
            {"role": "system", "content": "be brief"},
            {"role": "developer", "content": "and kind"},
            {"role": "user", "content": "hi"},
            {"role": "system", "content": "now in French"},
        ]
    )
    assert [p.text for p in request.system] == ["be brief", "and kind"]
    assert [(m.role, m.content) for m in request.messages] == [
        ("user", [ir.TextPart("hi")]),
        ("system", [ir.TextPart("now in French")]),
    ]


def test_consecutive_tool_messages_are_one_user_turn_of_results() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    request = _decode(
        messages=[
            {"role": "assistant", "content": None, "tool_calls": [call, {**call, "id": "c2"}]},
            {"role": "tool", "tool_call_id": "c1", "content": "one"},
            {"role": "tool", "tool_call_id": "c2", "content": "two"},
        ]
    )
    assistant, results = request.messages
    assert [p.id for p in assistant.content if isinstance(p, ir.ToolUsePart)] == ["c1", "c2"]
    assert results.role == "user"
    assert [(p.tool_use_id, p.content) for p in results.content] == [  # type: ignore[union-attr]
        ("c1", [ir.TextPart("one")]),
        ("c2", [ir.TextPart("two")]),
    ]


@pytest.mark.parametrize(
    ("tool_choice", "parallel", "expected"),
    [
        (None, None, None),
        (None, False, ir.ToolChoice("auto", disable_parallel=True)),
        ("required", None, ir.ToolChoice("any")),
        ("none", True, ir.ToolChoice("none")),
        ({"type": "function", "function": {"name": "f"}}, False, ir.ToolChoice("tool", "f", True)),
    ],
)
def test_tool_choice_and_parallel_tool_calls(
    tool_choice: object, parallel: object, expected: ir.ToolChoice | None
) -> None:
    body: dict[str, object] = {"messages": _HI}
    if tool_choice is not None:
        body["tool_choice"] = tool_choice
    if parallel is not None:
        body["parallel_tool_calls"] = parallel
    assert _decode(**body).tool_choice == expected


def test_reasoning_effort_is_a_thinking_budget_none_and_minimal_turn_it_off() -> None:
    assert _decode(messages=_HI, reasoning_effort="medium").thinking == ir.Thinking(
        "enabled", openai_door.EFFORT_BUDGET["medium"]
    )
    assert _decode(messages=_HI, reasoning_effort="minimal").thinking == ir.Thinking("disabled")
    with pytest.raises(InvalidRequest, match="reasoning_effort"):
        _decode(messages=_HI, reasoning_effort="extreme")


@pytest.mark.parametrize(
    ("stop_reason", "finish_reason"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        (None, "stop"),
    ],
)
def test_stop_reasons_become_finish_reasons(stop_reason: str | None, finish_reason: str) -> None:
    assert openai_door.finish_reason(stop_reason) == finish_reason


def test_prompt_tokens_count_cache_reads_and_writes() -> None:
    usage = ir.Usage(
        input_tokens=10,
        output_tokens=5,
        cache_read_input_tokens=100,
        cache_creation_input_tokens=20,
        reasoning_tokens=3,
    )
    assert openai_door.usage_dict(usage) == {
        "prompt_tokens": 130,
        "completion_tokens": 5,
        "total_tokens": 135,
        "prompt_tokens_details": {"cached_tokens": 100},
        "completion_tokens_details": {"reasoning_tokens": 3},
    }


def _chunks(events: list[ir.Event], include_usage: bool) -> list[dict[str, object] | str]:
    encoder = openai_door.ChunkEncoder("m", openai_door.Options(include_usage=include_usage))
    parser = SSEParser()
    out: list[dict[str, object] | str] = []
    for event in events:
        for _, data in parser.feed(encoder.encode(event)):
            out.append("[DONE]" if data == b"[DONE]" else json.loads(data))
    return out


_TWO_TOOLS: list[ir.Event] = [
    ir.MessageStart("msg_1", "m", ir.Usage(input_tokens=7)),
    ir.TextStart(0),
    ir.TextDelta(0, "ok"),
    ir.BlockStop(0),
    ir.ToolUseStart(1, "toolu_a", "f"),
    ir.ToolInputDelta(1, '{"x":'),
    ir.BlockStop(1),
    ir.ToolUseStart(3, "toolu_b", "g"),
    ir.ToolInputDelta(3, "{}"),
    ir.ToolInputDelta(1, "1}"),
    ir.MessageDelta("tool_use", ir.Usage(output_tokens=4)),
    ir.MessageStop(),
]


def test_stream_numbers_tool_calls_in_order_whatever_their_block_index() -> None:
    chunks = _chunks(_TWO_TOOLS, include_usage=False)
    deltas = [c["choices"][0]["delta"] for c in chunks if isinstance(c, dict)]  # type: ignore[index]
    assert deltas[0] == {"role": "assistant", "content": ""}
    calls = [d["tool_calls"][0] for d in deltas if "tool_calls" in d]
    assert [(c["index"], c.get("id")) for c in calls] == [
        (0, "toolu_a"),
        (0, None),
        (1, "toolu_b"),
        (1, None),
        (0, None),  # a late delta of the first call keeps its index
    ]
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"  # type: ignore[index]
    assert chunks[-1] == "[DONE]"


def test_the_usage_chunk_comes_only_when_asked_for() -> None:
    assert not any(isinstance(c, dict) and "usage" in c for c in _chunks(_TWO_TOOLS, False))
    *_, usage_chunk, done = _chunks(_TWO_TOOLS, include_usage=True)
    assert done == "[DONE]"
    assert usage_chunk["choices"] == []  # type: ignore[index]
    assert usage_chunk["usage"] == {  # type: ignore[index]
        "prompt_tokens": 7,
        "completion_tokens": 4,
        "total_tokens": 11,
    }


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            [{"type": "input_text", "text": "hi"}],
            "'input_text' is not supported; use text, image_url",
        ),
        ([{"type": {"text": 1}, "text": "hi"}], r"\{'text': 1\} is not supported"),  # unhashable
        ([{"type": "text", "text": 5}], r"messages.0.content.0.text: expected string"),
        ([{"type": "file", "file": "x"}], r"messages.0.content.0.file: expected object"),
        (["hi"], r"messages.0.content.0: expected object"),
    ],
)
def test_content_parts_each_read_by_its_type_another_is_a_400(
    content: object, message: str
) -> None:
    with pytest.raises(InvalidRequest, match=message):
        _decode(messages=[{"role": "user", "content": content}])


def test_content_parts_of_every_supported_type() -> None:
    content = [
        {"type": "text", "text": "a"},
        {"type": "refusal", "refusal": "no"},
        {"type": "image_url", "image_url": {"url": "https://example.com/i.png"}},
    ]
    (message,) = _decode(messages=[{"role": "user", "content": content}]).messages
    assert message.content[:2] == [ir.TextPart("a"), ir.TextPart("no")]
    assert isinstance(message.content[2], ir.ImagePart)
    assert (
        _decode(messages=[*_HI, {"role": "assistant", "content": None}]).messages[1].content == []
    )
