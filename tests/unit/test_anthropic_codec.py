"""Anthropic Messages API as an upstream: IR -> request body, and the
upstream's answer (SSE events or one JSON message) -> IR events."""

from __future__ import annotations

import base64
import itertools
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vdm import ir
from vdm.errors import InvalidRequest, UpstreamProtocolError
from vdm.protocols.anthropic_door import decode_request, encode_response
from vdm.protocols.anthropic_upstream import EventDecoder, encode_request, response_events
from vdm.protocols.sse import SSEParser


def request(*messages: ir.Message, **fields: Any) -> ir.ChatRequest:
    return ir.ChatRequest(model="client-model", messages=list(messages), **fields)


def user(*parts: ir.Part) -> ir.Message:
    return ir.Message("user", list(parts))


def assistant(*parts: ir.Part) -> ir.Message:
    return ir.Message("assistant", list(parts))


HI = user(ir.TextPart("hi"))


# ---------------------------------------------------------------- encode_request


def test_minimal_request_gets_default_max_tokens_and_upstream_model() -> None:
    assert encode_request(request(HI), "claude-up") == {
        "model": "claude-up",
        "max_tokens": 4096,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
    }


def test_max_tokens_kept_and_clamped_by_limit() -> None:
    assert encode_request(request(HI, max_tokens=100), "m")["max_tokens"] == 100
    assert encode_request(request(HI, max_tokens=100), "m", max_tokens_limit=50)["max_tokens"] == 50
    assert encode_request(request(HI), "m", max_tokens_limit=1000)["max_tokens"] == 1000
    assert encode_request(request(HI, max_tokens=10), "m", max_tokens_limit=50)["max_tokens"] == 10


def test_one_system_block_is_a_string_several_are_blocks() -> None:
    one = encode_request(request(HI, system=[ir.TextPart("be brief")]), "m")
    assert one["system"] == "be brief"
    two = encode_request(request(HI, system=[ir.TextPart("a"), ir.TextPart("b")]), "m")
    assert two["system"] == [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    assert "system" not in encode_request(request(HI, system=[ir.TextPart("")]), "m")


def test_mid_conversation_system_joins_top_level_system_and_turns_merge() -> None:
    body = encode_request(
        request(
            user(ir.TextPart("one")),
            ir.Message("system", [ir.TextPart("later rule")]),
            user(ir.TextPart("two")),
            system=[ir.TextPart("first rule")],
        ),
        "m",
    )
    assert body["system"] == [
        {"type": "text", "text": "first rule"},
        {"type": "text", "text": "later rule"},
    ]
    assert body["messages"] == [
        {
            "role": "user",
            "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}],
        }
    ]


def test_mid_conversation_system_alone_is_a_string() -> None:
    body = encode_request(request(ir.Message("system", [ir.TextPart("rule")]), HI), "m")
    assert body["system"] == "rule"
    assert [m["role"] for m in body["messages"]] == ["user"]


def test_consecutive_assistant_turns_merge() -> None:
    body = encode_request(
        request(
            HI,
            assistant(ir.TextPart("a")),
            assistant(ir.TextPart("b")),
            user(ir.TextPart("c")),
        ),
        "m",
    )
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "hi"}]},
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
        },
        {"role": "user", "content": [{"type": "text", "text": "c"}]},
    ]


def test_images_base64_and_url() -> None:
    body = encode_request(
        request(
            user(
                ir.ImagePart(media_type="image/png", data="AAAA"),
                ir.ImagePart(url="https://example.com/cat.jpg"),
            )
        ),
        "m",
    )
    assert body["messages"][0]["content"] == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
    ]


def test_tool_use_and_tool_result_blocks() -> None:
    body = encode_request(
        request(
            HI,
            assistant(
                ir.TextPart("let me look"), ir.ToolUsePart("toolu_1", "Read", {"path": "a.txt"})
            ),
            user(
                ir.ToolResultPart(
                    "toolu_1",
                    [ir.TextPart("contents"), ir.ImagePart(media_type="image/gif", data="R0")],
                ),
                ir.ToolResultPart("toolu_2", [], is_error=True),
            ),
        ),
        "m",
    )
    assert body["messages"][1:] == [
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "let me look"},
                {"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {"path": "a.txt"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "content": [
                        {"type": "text", "text": "contents"},
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/gif", "data": "R0"},
                        },
                    ],
                },
                {"type": "tool_result", "tool_use_id": "toolu_2", "is_error": True},
            ],
        },
    ]


def test_tool_results_open_a_merged_user_turn() -> None:
    body = encode_request(
        request(
            HI,
            assistant(ir.ToolUsePart("toolu_1", "Read", {})),
            user(ir.TextPart("also this")),
            user(ir.ToolResultPart("toolu_1", [ir.TextPart("ok")])),
        ),
        "m",
    )
    assert body["messages"][2] == {
        "role": "user",
        "content": [
            {
                "type": "tool_result",
                "tool_use_id": "toolu_1",
                "content": [{"type": "text", "text": "ok"}],
            },
            {"type": "text", "text": "also this"},
        ],
    }


def test_thinking_with_signature_and_redacted_thinking_kept() -> None:
    body = encode_request(
        request(
            HI,
            assistant(
                ir.ThinkingPart("hmm", "sig=="),
                ir.ThinkingPart("unsigned reasoning from elsewhere"),
                ir.RedactedThinkingPart("opaque"),
                ir.TextPart("answer"),
            ),
        ),
        "m",
    )
    assert body["messages"][1]["content"] == [
        {"type": "thinking", "thinking": "hmm", "signature": "sig=="},
        {"type": "redacted_thinking", "data": "opaque"},
        {"type": "text", "text": "answer"},
    ]


def test_parts_foreign_to_the_role_and_empty_turns_drop() -> None:
    body = encode_request(
        request(
            user(ir.TextPart("q"), ir.ToolUsePart("t", "x", {}), ir.ThinkingPart("t", "s")),
            assistant(ir.TextPart(""), ir.ImagePart(url="u"), ir.ToolResultPart("t", [])),
        ),
        "m",
    )
    assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "q"}]}]


def test_tools_and_tool_choice() -> None:
    tools = [
        ir.Tool(
            "get_weather",
            "Weather now",
            {"type": "object", "properties": {"city": {"type": "string"}}},
        ),
        ir.Tool("noop"),
    ]
    body = encode_request(
        request(HI, tools=tools, tool_choice=ir.ToolChoice("tool", "get_weather", True)), "m"
    )
    assert body["tools"] == [
        {
            "name": "get_weather",
            "description": "Weather now",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
        {"name": "noop", "input_schema": {"type": "object", "properties": {}}},
    ]
    assert body["tool_choice"] == {
        "type": "tool",
        "name": "get_weather",
        "disable_parallel_tool_use": True,
    }


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        (ir.ToolChoice("auto"), {"type": "auto"}),
        (ir.ToolChoice("any"), {"type": "any"}),
        (
            ir.ToolChoice("any", disable_parallel=True),
            {"type": "any", "disable_parallel_tool_use": True},
        ),
        (ir.ToolChoice("none", disable_parallel=True), {"type": "none"}),
    ],
)
def test_tool_choice_modes(choice: ir.ToolChoice, expected: dict[str, Any]) -> None:
    body = encode_request(request(HI, tools=[ir.Tool("t")], tool_choice=choice), "m")
    assert body["tool_choice"] == expected


def test_tool_choice_without_tools_is_dropped() -> None:
    assert "tool_choice" not in encode_request(request(HI, tool_choice=ir.ToolChoice("none")), "m")


@pytest.mark.parametrize(
    ("thinking", "max_tokens", "expected"),
    [
        (ir.Thinking("enabled", 2048), 8000, {"type": "enabled", "budget_tokens": 2048}),
        (ir.Thinking("enabled", 10_000), 8000, {"type": "enabled", "budget_tokens": 7999}),
        (ir.Thinking("enabled"), 8000, {"type": "enabled", "budget_tokens": 1024}),
        (ir.Thinking("adaptive"), 8000, {"type": "adaptive"}),
        (ir.Thinking("disabled"), 8000, {"type": "disabled"}),
    ],
)
def test_thinking(thinking: ir.Thinking, max_tokens: int, expected: dict[str, Any]) -> None:
    body = encode_request(request(HI, thinking=thinking, max_tokens=max_tokens), "m")
    assert body["thinking"] == expected


@pytest.mark.parametrize(
    ("effort", "expected"),
    [
        ("minimal", "low"),
        ("low", "low"),
        ("medium", "medium"),
        ("high", "high"),
        ("max", "max"),
    ],
)
def test_effort_goes_to_output_config(effort: ir.Effort, expected: str) -> None:
    body = encode_request(request(HI, effort=effort), "m")
    assert body["output_config"] == {"effort": expected}


def test_sampling_stop_user_and_stream() -> None:
    body = encode_request(
        request(
            HI,
            temperature=0.5,
            top_p=0.9,
            top_k=40,
            stop=["END", "STOP"],
            user="u-1",
            stream=True,
        ),
        "m",
    )
    assert {k: v for k, v in body.items() if k not in ("model", "max_tokens", "messages")} == {
        "temperature": 0.5,
        "top_p": 0.9,
        "top_k": 40,
        "stop_sequences": ["END", "STOP"],
        "metadata": {"user_id": "u-1"},
        "stream": True,
    }
    assert "stream" not in encode_request(request(HI), "m")


# ---------------------------------------------------------------- stream decoding


def ev(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()


def start(index: int, block: dict[str, Any]) -> bytes:
    return ev(
        "content_block_start",
        {"type": "content_block_start", "index": index, "content_block": block},
    )


def delta(index: int, d: dict[str, Any]) -> bytes:
    return ev("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d})


def stop(index: int) -> bytes:
    return ev("content_block_stop", {"type": "content_block_stop", "index": index})


def message_start(usage: dict[str, Any], id_: str = "msg_1") -> bytes:
    return ev(
        "message_start",
        {
            "type": "message_start",
            "message": {
                "id": id_,
                "type": "message",
                "role": "assistant",
                "model": "claude-up",
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": usage,
            },
        },
    )


def message_end(reason: str, usage: dict[str, Any]) -> list[bytes]:
    return [
        ev(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": reason, "stop_sequence": None},
                "usage": usage,
            },
        ),
        ev("message_stop", {"type": "message_stop"}),
    ]


def decode(frames: list[bytes], decoder: EventDecoder | None = None) -> list[ir.Event]:
    decoder = decoder or EventDecoder("ant")
    parser = SSEParser()
    events: list[ir.Event] = []
    for chunk in frames:
        for name, data in parser.feed(chunk):
            events.extend(decoder.feed(name, data))
    for name, data in parser.flush():
        events.extend(decoder.feed(name, data))
    return events


REALISTIC = [
    message_start({"input_tokens": 50, "output_tokens": 1, "cache_read_input_tokens": 7}),
    start(0, {"type": "thinking", "thinking": "", "signature": ""}),
    delta(0, {"type": "thinking_delta", "thinking": "Let me "}),
    delta(0, {"type": "thinking_delta", "thinking": "search."}),
    delta(0, {"type": "signature_delta", "signature": "EqQBsig"}),
    stop(0),
    start(1, {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}}),
    delta(1, {"type": "input_json_delta", "partial_json": '{"query": "wea'}),
    delta(1, {"type": "input_json_delta", "partial_json": 'ther"}'}),
    stop(1),
    start(2, {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": []}),
    stop(2),
    ev("ping", {"type": "ping"}),
    start(3, {"type": "text", "text": ""}),
    delta(3, {"type": "text_delta", "text": "It is "}),
    delta(3, {"type": "citations_delta", "citation": {"type": "web_search_result_location"}}),
    delta(3, {"type": "text_delta", "text": "sunny."}),
    stop(3),
    start(4, {"type": "tool_use", "id": "toolu_9", "name": "get_weather", "input": {}}),
    delta(4, {"type": "input_json_delta", "partial_json": ""}),
    delta(4, {"type": "input_json_delta", "partial_json": '{"ci'}),
    delta(4, {"type": "input_json_delta", "partial_json": 'ty": "Par'}),
    delta(4, {"type": "input_json_delta", "partial_json": 'is"}'}),
    stop(4),
    *message_end("tool_use", {"output_tokens": 88}),
]


def test_realistic_stream_events() -> None:
    decoder = EventDecoder("ant")
    events = decode(REALISTIC, decoder)
    assert decoder.saw_stop
    assert events == [
        ir.MessageStart("msg_1", "claude-up", ir.Usage(50, 1, 7)),
        ir.ThinkingStart(0),
        ir.ThinkingDelta(0, "Let me "),
        ir.ThinkingDelta(0, "search."),
        ir.SignatureDelta(0, "EqQBsig"),
        ir.BlockStop(0),
        ir.Ping(),
        ir.TextStart(1),
        ir.TextDelta(1, "It is "),
        ir.TextDelta(1, "sunny."),
        ir.BlockStop(1),
        ir.ToolUseStart(2, "toolu_9", "get_weather"),
        ir.ToolInputDelta(2, '{"ci'),
        ir.ToolInputDelta(2, 'ty": "Par'),
        ir.ToolInputDelta(2, 'is"}'),
        ir.BlockStop(2),
        ir.MessageDelta("tool_use", ir.Usage(0, 88)),
        ir.MessageStop(),
    ]
    assert ir.fold(events) == ir.ChatResponse(
        id="msg_1",
        model="claude-up",
        content=[
            ir.ThinkingPart("Let me search.", "EqQBsig"),
            ir.TextPart("It is sunny."),
            ir.ToolUsePart("toolu_9", "get_weather", {"city": "Paris"}),
        ],
        stop_reason="tool_use",
        usage=ir.Usage(50, 88, 7),
    )


def test_stream_split_at_every_byte_decodes_the_same() -> None:
    whole = b"".join(REALISTIC)
    assert decode([whole[i : i + 1] for i in range(len(whole))]) == decode(REALISTIC)


def test_client_model_replaces_upstream_model() -> None:
    events = decode(REALISTIC, EventDecoder("ant", model="client-model"))
    assert events[0] == ir.MessageStart("msg_1", "client-model", ir.Usage(50, 1, 7))


def test_redacted_thinking_block() -> None:
    events = decode(
        [
            message_start({"input_tokens": 1}),
            start(0, {"type": "redacted_thinking", "data": "opaque"}),
            stop(0),
            *message_end("end_turn", {"output_tokens": 2}),
        ]
    )
    assert ir.fold(events).content == [ir.RedactedThinkingPart("opaque")]


def test_error_event_raises_with_its_message() -> None:
    frames = [
        message_start({"input_tokens": 1}),
        ev(
            "error",
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
        ),
    ]
    with pytest.raises(UpstreamProtocolError, match="overloaded_error: Overloaded") as info:
        decode(frames)
    assert info.value.provider == "ant"


def test_non_json_event_is_a_protocol_error() -> None:
    with pytest.raises(UpstreamProtocolError, match="not JSON"):
        list(EventDecoder("ant").feed("message_start", b"{oops"))


def test_unfinished_stream_does_not_see_stop() -> None:
    decoder = EventDecoder("ant")
    decode(REALISTIC[:10], decoder)
    assert not decoder.saw_stop


def test_unknown_stop_reason_maps_to_neutral_one() -> None:
    events = decode(
        [
            message_start({"input_tokens": 1}),
            *message_end("model_context_window_exceeded", {"output_tokens": 2}),
        ]
    )
    assert ir.fold(events).stop_reason == "max_tokens"


# ---------------------------------------------------------------- non-streaming


MESSAGE = {
    "id": "msg_2",
    "type": "message",
    "role": "assistant",
    "model": "claude-up",
    "content": [
        {"type": "thinking", "thinking": "ponder", "signature": "sig"},
        {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}},
        {"type": "text", "text": "Hello", "citations": None},
        {"type": "tool_use", "id": "toolu_1", "name": "Read", "input": {"path": "/a"}},
        {"type": "tool_use", "id": "toolu_2", "name": "Noop", "input": {}},
        {"type": "redacted_thinking", "data": "xyz"},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {"input_tokens": 10, "output_tokens": 5, "cache_creation_input_tokens": 2},
}


def test_response_events_fold_to_the_message() -> None:
    assert ir.fold(list(response_events(MESSAGE))) == ir.ChatResponse(
        id="msg_2",
        model="claude-up",
        content=[
            ir.ThinkingPart("ponder", "sig"),
            ir.TextPart("Hello"),
            ir.ToolUsePart("toolu_1", "Read", {"path": "/a"}),
            ir.ToolUsePart("toolu_2", "Noop", {}),
            ir.RedactedThinkingPart("xyz"),
        ],
        stop_reason="tool_use",
        usage=ir.Usage(10, 5, None, 2),
    )


def test_response_events_are_a_valid_stream() -> None:
    events = list(response_events(MESSAGE, model="client-model"))
    assert events[0] == ir.MessageStart("msg_2", "client-model", ir.Usage(10, 5, None, 2))
    assert isinstance(events[-1], ir.MessageStop)
    starts = [e.index for e in events if isinstance(e, ir.BlockStart)]
    stops = [e.index for e in events if isinstance(e, ir.BlockStop)]
    assert starts == stops == [0, 1, 2, 3, 4]


def test_stop_sequence_survives() -> None:
    body = {**MESSAGE, "stop_reason": "stop_sequence", "stop_sequence": "END"}
    response = ir.fold(list(response_events(body)))
    assert (response.stop_reason, response.stop_sequence) == ("stop_sequence", "END")


# ---------------------------------------------------------------- round trip property

texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-1000, 1000) | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=8,
)
ids = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=10)
blocks = st.one_of(
    st.builds(lambda t: {"type": "text", "text": t}, texts),
    st.builds(
        lambda i, n, a: {"type": "tool_use", "id": "toolu_" + i, "name": n, "input": a},
        ids,
        st.sampled_from(["Read", "Bash", "get_weather"]),
        st.dictionaries(texts, json_values, max_size=4),
    ),
    st.builds(lambda t, s: {"type": "thinking", "thinking": t, "signature": s}, texts, ids),
    st.builds(lambda d: {"type": "redacted_thinking", "data": d}, ids),
    st.builds(
        lambda i: {
            "type": "server_tool_use",
            "id": "srvtoolu_" + i,
            "name": "web_search",
            "input": {"query": i},
        },
        ids,
    ),
)
usages = st.fixed_dictionaries(
    {"input_tokens": st.integers(0, 10_000), "output_tokens": st.integers(0, 5_000)},
    optional={
        "cache_read_input_tokens": st.integers(0, 500),
        "cache_creation_input_tokens": st.integers(0, 500),
    },
)
messages = st.builds(
    lambda content, reason, usage: {
        "id": "msg_prop",
        "type": "message",
        "role": "assistant",
        "model": "claude-up",
        "content": content,
        "stop_reason": reason,
        "stop_sequence": None,
        "usage": usage,
    },
    st.lists(blocks, max_size=6),
    st.sampled_from(["end_turn", "max_tokens", "tool_use", "refusal", "pause_turn"]),
    usages,
)


def pieces(draw: st.DrawFn, text: str) -> list[str]:
    cuts = sorted(draw(st.sets(st.integers(0, len(text)), max_size=4)))
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds) if b > a]


def as_stream(draw: st.DrawFn, message: dict[str, Any]) -> list[bytes]:
    """The SSE rendering an Anthropic upstream would send for ``message``."""
    usage = message["usage"]
    first = {k: v for k, v in usage.items() if k != "output_tokens"}
    # (a real stream's first output count is small; 0 final means 0 all along)
    out = [message_start({**first, "output_tokens": min(usage["output_tokens"], 1)}, message["id"])]
    for i, block in enumerate(message["content"]):
        out += block_frames(draw, i, block)
    return out + message_end(message["stop_reason"], {"output_tokens": usage["output_tokens"]})


def block_frames(draw: st.DrawFn, i: int, block: dict[str, Any]) -> list[bytes]:
    kind = block["type"]
    if kind == "text":
        return [
            start(i, {"type": "text", "text": ""}),
            *(delta(i, {"type": "text_delta", "text": p}) for p in pieces(draw, block["text"])),
            stop(i),
        ]
    if kind in ("tool_use", "server_tool_use"):
        raw = json.dumps(block["input"]) if block["input"] else ""
        return [
            start(i, {**block, "input": {}}),
            *(delta(i, {"type": "input_json_delta", "partial_json": p}) for p in pieces(draw, raw)),
            stop(i),
        ]
    if kind == "thinking":
        return [
            start(i, {"type": "thinking", "thinking": "", "signature": ""}),
            *(
                delta(i, {"type": "thinking_delta", "thinking": p})
                for p in pieces(draw, block["thinking"])
            ),
            delta(i, {"type": "signature_delta", "signature": block["signature"]}),
            stop(i),
        ]
    return [start(i, block), stop(i)]


@settings(max_examples=200, deadline=None)
@given(st.data(), messages)
def test_streamed_and_json_answers_fold_alike(data: st.DataObject, message: dict[str, Any]) -> None:
    frames = as_stream(data.draw, message)
    raw = b"".join(frames)
    cuts = pieces(data.draw, raw.decode("latin-1"))
    decoder = EventDecoder("ant")
    streamed = decode([c.encode("latin-1") for c in cuts], decoder)
    assert decoder.saw_stop
    assert ir.fold(streamed) == ir.fold(list(response_events(message)))
    indices = [e.index for e in streamed if isinstance(e, ir.BlockStart)]
    assert indices == list(range(len(indices)))


@pytest.mark.parametrize(
    ("part", "named"),
    [
        (ir.ImagePart("image/png", "aGk="), "an image"),
        (ir.ToolResultPart("toolu_1", [ir.TextPart("x")]), "a tool result"),
    ],
)
def test_a_part_no_assistant_answer_holds_is_refused_by_name(part: ir.Part, named: str) -> None:
    """(The message once named ``part.kind``, which these parts lack: an AttributeError.)"""
    response = ir.ChatResponse("msg_1", "m", [part], "end_turn", ir.Usage(1, 1))
    with pytest.raises(ValueError, match=f"^{named} cannot appear in an assistant response"):
        encode_response(response)


# ---------------------------------------------------------------- structured output


TITLE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"title": {"type": "string"}},
    "required": ["title"],
    "additionalProperties": False,
}


def _client(**body: Any) -> ir.ChatRequest:
    return decode_request(
        {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}], **body}
    )


@pytest.mark.parametrize(
    "body",
    [
        {
            "output_config": {
                "effort": "high",
                "format": {"type": "json_schema", "schema": TITLE_SCHEMA},
            }
        },
        {"output_format": {"type": "json_schema", "schema": TITLE_SCHEMA}},  # (the older field)
    ],
)
def test_an_output_format_is_decoded_with_its_schema(body: dict[str, Any]) -> None:
    assert _client(**body).output_format == ir.OutputFormat(
        "json_schema", TITLE_SCHEMA, strict=True
    )


def test_an_output_format_is_strict_where_openai_can_enforce_its_schema() -> None:
    """(Anthropic's formats are always enforced; OpenAI's strict mode wants
    every property required.)"""
    optional = {**TITLE_SCHEMA, "required": []}
    fmt = _client(output_config={"format": {"type": "json_schema", "schema": optional}})
    assert fmt.output_format == ir.OutputFormat("json_schema", optional, strict=False)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"output_config": {"format": {"type": "xml"}}}, "output_config.format.type"),
        ({"output_config": {"format": {"type": "json_schema"}}}, "output_config.format.schema"),
        ({"output_format": "json"}, "output_format: expected object"),
    ],
)
def test_a_bad_output_format_is_a_400_naming_it(body: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        _client(**body)


def test_a_json_schema_goes_up_as_output_config_format_beside_the_effort() -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 1}}}
    body = encode_request(
        request(HI, effort="high", output_format=ir.OutputFormat("json_schema", schema, "n")), "m"
    )
    assert body["output_config"] == {
        "effort": "high",
        "format": {
            "type": "json_schema",
            "schema": {
                "type": "object",
                "properties": {"n": {"type": "integer", "description": "{minimum: 1}"}},
                "additionalProperties": False,
            },
        },
    }


# ---------------------------------------------------------------- documents

PDF_B64 = "JVBERi0xLjQK"  # "%PDF-1.4\n"


def _documents(*blocks: dict[str, Any]) -> list[ir.Part]:
    request = decode_request(
        {
            "model": "m",
            "max_tokens": 10,
            "messages": [
                {"role": "user", "content": [*blocks, {"type": "text", "text": "Sum up"}]}
            ],
        }
    )
    return request.messages[0].content[:-1]


def test_document_blocks_are_decoded_whatever_their_source() -> None:
    assert _documents(
        {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": PDF_B64},
            "title": "report.pdf",
        },
        {"type": "document", "source": {"type": "url", "url": "https://x.test/a.pdf"}},
        {
            "type": "document",
            "source": {"type": "text", "media_type": "text/plain", "data": "notes"},
        },
        {
            "type": "document",
            "source": {
                "type": "content",
                "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            },
            "title": "Two",
        },
    ) == [
        ir.DocumentPart("application/pdf", data=PDF_B64, filename="report.pdf"),
        ir.DocumentPart("application/pdf", url="https://x.test/a.pdf"),
        ir.DocumentPart("text/plain", text="notes"),
        ir.DocumentPart("text/plain", text="a\n\nb", filename="Two"),
    ]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            {"type": "file", "file_id": "file_1"},
            r"messages\.0\.content\.0\.source: a document given by file_id",
        ),
        (
            {"type": "content", "content": [{"type": "image"}]},
            r"messages\.0\.content\.0\.source\.content\.0",
        ),
        ({"type": "base64", "data": PDF_B64}, r"messages\.0\.content\.0\.source\.media_type"),
        ({"type": "zip"}, r"messages\.0\.content\.0\.source\.type"),
    ],
)
def test_a_document_that_cannot_be_carried_is_a_400_naming_the_block(
    source: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidRequest, match=message):
        _documents({"type": "document", "source": source})


def test_a_document_in_a_tool_result_is_kept() -> None:
    request = decode_request(
        {
            "model": "m",
            "max_tokens": 10,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "toolu_1",
                            "content": [
                                {
                                    "type": "document",
                                    "source": {"type": "url", "url": "https://x.test/a.pdf"},
                                }
                            ],
                        }
                    ],
                }
            ],
        }
    )
    (result,) = request.messages[0].content
    assert isinstance(result, ir.ToolResultPart)
    assert result.content == [ir.DocumentPart("application/pdf", url="https://x.test/a.pdf")]


def test_documents_go_up_as_document_blocks() -> None:
    csv = base64.b64encode(b"a,b\n1,2\n").decode()
    body = encode_request(
        request(
            user(
                ir.DocumentPart("application/pdf", data=PDF_B64, filename="r.pdf"),
                ir.DocumentPart("application/pdf", url="https://x.test/a.pdf"),
                ir.DocumentPart("text/plain", text="notes"),
                ir.DocumentPart("text/csv", data=csv, filename="t.csv"),
                ir.ToolResultPart("toolu_1", [ir.DocumentPart("text/plain", text="r")]),
            )
        ),
        "m",
    )
    result, pdf, url, text, table = body["messages"][0]["content"]
    assert pdf == {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": PDF_B64},
        "title": "r.pdf",
    }
    assert url == {"type": "document", "source": {"type": "url", "url": "https://x.test/a.pdf"}}
    assert text == {
        "type": "document",
        "source": {"type": "text", "media_type": "text/plain", "data": "notes"},
    }
    assert table["source"] == {"type": "text", "media_type": "text/plain", "data": "a,b\n1,2\n"}
    assert table["title"] == "t.csv"
    assert result["content"] == [
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "r"}}
    ]


def test_a_document_anthropic_cannot_read_is_a_400_naming_it() -> None:
    docx = ir.DocumentPart(
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        data="UEsDBA==",
        filename="plan.docx",
    )
    with pytest.raises(InvalidRequest, match=r"document 'plan.docx' \(application/vnd"):
        encode_request(request(user(docx)), "m")
