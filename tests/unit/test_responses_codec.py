"""The Responses protocol, pure: request decoding into the IR, and the property
that the ``response.*`` stream of any IR answer assembles into exactly the
non-streamed response object (same items, same usage, consecutive sequence
numbers, well-nested events)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vdm import ir
from vdm.errors import InvalidRequest
from vdm.protocols import responses_door as rp
from vdm.protocols import responses_upstream
from vdm.protocols.responses_door_stream import StreamEncoder
from vdm.protocols.sse import FrameCutter, SSEParser

# ---------------------------------------------------------------- decoding


def decode(**body: Any) -> tuple[ir.ChatRequest, rp.Options]:
    return rp.decode_request({"model": "m", **body})


def test_string_input_is_one_user_turn_and_instructions_are_system() -> None:
    request, options = decode(input="Hi", instructions="Sys", stream=True)
    assert request.messages == [ir.Message("user", [ir.TextPart("Hi")])]
    assert request.system == [ir.TextPart("Sys")] and request.stream is True
    assert options.model == "m" and options.echo["store"] is False


def test_an_assistant_answer_is_one_turn_and_parallel_results_one_user_turn() -> None:
    request, _ = decode(
        input=[
            {"role": "user", "content": "q"},
            {
                "type": "reasoning",
                "id": "rs_1",
                "summary": [
                    {"type": "summary_text", "text": "a"},
                    {"type": "summary_text", "text": "b"},
                ],
                "encrypted_content": rp.THINKING_PREFIX + "sig",
            },
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "t"}],
            },
            {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"},
            {"type": "function_call", "call_id": "c2", "name": "f", "arguments": '{"x": 1}'},
            {"type": "function_call_output", "call_id": "c1", "output": "r1"},
            {
                "type": "function_call_output",
                "call_id": "c2",
                "output": [{"type": "input_text", "text": "r2"}],
            },
            {"role": "developer", "content": "later system"},
        ]
    )
    user, assistant, results, system = request.messages
    assert user.role == "user"
    assert assistant == ir.Message(
        "assistant",
        [
            ir.ThinkingPart("a\n\nb", "sig"),
            ir.TextPart("t"),
            ir.ToolUsePart("c1", "f", {}),
            ir.ToolUsePart("c2", "f", {"x": 1}),
        ],
    )
    assert results == ir.Message(
        "user",
        [
            ir.ToolResultPart("c1", [ir.TextPart("r1")]),
            ir.ToolResultPart("c2", [ir.TextPart("r2")]),
        ],
    )
    assert system == ir.Message("system", [ir.TextPart("later system")])


def test_reasoning_items_without_our_prefix_carry_no_signature() -> None:
    request, _ = decode(
        input=[
            {"type": "reasoning", "summary": [], "encrypted_content": rp.REDACTED_PREFIX + "d"},
            {
                "type": "reasoning",
                "summary": [{"type": "summary_text", "text": "s"}],
                "encrypted_content": "gAAAAforeign",
            },
            {"type": "reasoning", "summary": [], "encrypted_content": "gAAAAforeign"},
            {"role": "user", "content": "q"},
        ]
    )
    assert request.messages[0].content == [ir.RedactedThinkingPart("d"), ir.ThinkingPart("s")]


def test_tools_other_than_functions_are_dropped_and_named() -> None:
    request, options = decode(
        input="x",
        tools=[
            {"type": "function", "name": "f", "parameters": {"type": "object"}, "strict": True},
            {"type": "web_search"},
            {"type": "namespace", "name": "ns", "tools": []},
            {"type": "custom", "name": "apply_patch"},
        ],
        tool_choice={"type": "web_search"},
    )
    assert request.tools == [ir.Tool("f", None, {"type": "object"})]
    assert options.dropped == (
        "tool web_search",
        "tool namespace 'ns'",
        "tool custom 'apply_patch'",
    )
    assert request.tool_choice == ir.ToolChoice("auto")


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        ("auto", None, ir.ToolChoice("auto")),
        ("none", None, ir.ToolChoice("none")),
        ("required", False, ir.ToolChoice("any", disable_parallel=True)),
        ({"type": "function", "name": "f"}, None, ir.ToolChoice("tool", "f")),
        ({"type": "allowed_tools", "mode": "required", "tools": []}, None, ir.ToolChoice("any")),
        (None, False, ir.ToolChoice("auto", disable_parallel=True)),
        (None, None, None),
    ],
)
def test_tool_choice(choice: Any, parallel: Any, expected: ir.ToolChoice | None) -> None:
    body: dict[str, Any] = {
        "input": "x",
        "parallel_tool_calls": parallel,
        "tools": [{"type": "function", "name": "f"}],
    }
    if choice is not None:
        body["tool_choice"] = choice
    assert decode(**body)[0].tool_choice == expected


@pytest.mark.parametrize(
    ("effort", "expected"),
    [
        ("none", ir.Thinking("disabled")),
        ("minimal", ir.Thinking("disabled")),
        ("low", ir.Thinking("enabled", 2048)),
        ("medium", ir.Thinking("enabled", 8192)),
        ("high", ir.Thinking("enabled", 24576)),
        ("xhigh", ir.Thinking("enabled", 32768)),
        (None, None),
    ],
)
def test_reasoning_effort_is_a_thinking_budget(
    effort: str | None, expected: ir.Thinking | None
) -> None:
    assert (
        decode(input="x", reasoning={"effort": effort, "summary": "auto"})[0].thinking == expected
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"input": "x", "previous_response_id": "r"}, "stateless"),
        ({"input": "x", "conversation": "c"}, "stateless"),
        ({"input": "x", "background": True}, "stateless"),
        ({"input": "x", "prompt": {"id": "p"}}, "prompt"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
            "input.0.content.0.file_id: a file uploaded",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]},
            "not file_id",
        ),
        ({"input": [{"type": "function_call", "name": "f"}]}, "input.0.call_id"),
        (
            {"input": [{"role": "user", "content": [{"type": ["input_text"]}]}]},
            r"input.0.content.0.type: content part \['input_text'\] is not supported; use input_text",
        ),
        ({"input": [{"role": "user", "content": None}]}, "input.0.content: expected string or"),
        ({"input": "x", "tools": [{"type": "function"}]}, "tools.0.name"),
        ({"input": "x", "tool_choice": 5}, "tool_choice"),
        ({"input": []}, "input: field required"),
        ({"input": "x", "instructions": 3}, "instructions"),
        (
            {"input": "x", "tool_choice": {"type": "function", "name": "f"}},
            "no function tool named",
        ),
        (
            {"input": "x", "text": {"format": {"type": "json_schema", "name": "n"}}},
            "text.format.schema:",
        ),
        ({"input": "x", "text": {"format": {"type": "xml"}}}, "text.format.type:"),
    ],
)
def test_bad_requests(body: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        decode(**body)


# ---------------------------------------------------------------- stream == fold

text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20)


@st.composite
def answers(draw: st.DrawFn) -> list[ir.Event]:
    """An IR event stream: any mix of text, tool calls, thinking, redacted thinking."""
    kinds = draw(st.lists(st.sampled_from(["text", "tool", "thinking", "redacted"]), max_size=5))
    usage = ir.Usage(draw(st.integers(0, 99)), 0, draw(st.none() | st.integers(0, 9)))
    events: list[ir.Event] = [ir.MessageStart("msg_1", "m", usage)]
    for i, kind in enumerate(kinds):
        pieces = draw(st.lists(text, max_size=3))
        if kind == "text":
            events += [ir.TextStart(i), *(ir.TextDelta(i, p) for p in pieces)]
        elif kind == "tool":
            arguments = json.dumps({"a": draw(text)})
            cut = draw(st.integers(0, len(arguments)))
            events += [
                ir.ToolUseStart(i, f"toolu_{i}", "f"),
                ir.ToolInputDelta(i, arguments[:cut]),
                ir.ToolInputDelta(i, arguments[cut:]),
            ]
        elif kind == "thinking":
            events += [ir.ThinkingStart(i), *(ir.ThinkingDelta(i, p) for p in pieces)]
            signature = draw(st.none() | st.from_regex(r"[A-Za-z0-9]{1,8}", fullmatch=True))
            if signature:
                events.append(ir.SignatureDelta(i, signature))
        else:
            events.append(ir.RedactedThinkingStart(i, "opaque"))
        events.append(ir.BlockStop(i))
    reason = draw(st.sampled_from(["end_turn", "tool_use", "max_tokens"]))
    events += [ir.MessageDelta(reason, ir.Usage(0, draw(st.integers(1, 99)))), ir.MessageStop()]
    return events


def parse(frames: bytes) -> list[dict[str, Any]]:
    out = []
    for event, data in SSEParser().feed(frames):
        value = json.loads(data)
        assert value["type"] == event
        out.append(value)
    return out


def without_ids(response: dict[str, Any]) -> dict[str, Any]:
    """A response without its ids; arguments as JSON values (the stream relays the
    upstream's text, the whole response encodes the parsed call compactly)."""
    response = {k: v for k, v in response.items() if k not in ("id", "created_at")}
    response["output"] = [
        {k: json.loads(v) if k == "arguments" else v for k, v in item.items() if k != "id"}
        for item in response["output"]
    ]
    return response


@settings(max_examples=150, deadline=None)
@given(answers())
def test_the_stream_assembles_into_the_non_streamed_response(events: list[ir.Event]) -> None:
    options = rp.Options("m", {"tools": []})
    encoder = StreamEncoder(options)
    stream = parse(b"".join(encoder.encode(e) for e in events))
    whole = json.loads(rp.encode_response(ir.fold(events), options))
    assert [e["sequence_number"] for e in stream] == list(range(len(stream)))
    assert stream[0]["type"] == "response.created"
    last = stream[-1]
    assert last["type"] == (
        "response.incomplete" if whole["status"] == "incomplete" else "response.completed"
    )
    assert without_ids(last["response"]) == without_ids(whole)
    # an oracle of the grammar: items open and close in order, deltas rebuild them
    opened: dict[int, dict[str, Any]] = {}
    built: dict[int, str] = {}
    for event in stream[1:-1]:
        kind = event["type"]
        if kind == "response.output_item.added":
            assert event["output_index"] == len(opened)
            opened[event["output_index"]] = event["item"]
            built[event["output_index"]] = ""
        elif kind.endswith(".delta"):
            assert event["item_id"] == opened[event["output_index"]]["id"]
            built[event["output_index"]] += event["delta"]
        elif kind == "response.output_item.done":
            item = event["item"]
            assert item["id"] == opened[event["output_index"]]["id"]
            so_far = built[event["output_index"]]
            if item["type"] == "message":
                assert item["content"][0]["text"] == so_far
            elif item["type"] == "function_call":
                assert item["arguments"] == so_far
            else:
                assert "".join(s["text"] for s in item["summary"]) == so_far
    assert len(opened) == len(whole["output"])


def test_a_failure_after_the_start_is_error_then_response_failed() -> None:
    from vdm.errors import UpstreamTimeout

    encoder = StreamEncoder(rp.Options("m", {}))
    head = encoder.encode(ir.MessageStart("x", "m", ir.Usage()))
    head += encoder.encode(ir.TextStart(0)) + encoder.encode(ir.TextDelta(0, "par"))
    events = parse(head + encoder.encode_error(UpstreamTimeout("slow", provider="p")))
    error, failed = events[-2:]
    assert error["type"] == "error" and error["message"] == "slow"
    assert failed["type"] == "response.failed"
    assert failed["response"]["status"] == "failed"
    assert failed["response"]["error"] == {"code": "server_error", "message": "slow"}
    assert failed["response"]["id"] == events[0]["response"]["id"]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))


def test_usage_tap_reads_the_final_event_of_a_native_stream() -> None:
    tap = responses_upstream.UsageTap()
    final = {
        "type": "response.completed",
        "response": {
            "status": "completed",
            "usage": {
                "input_tokens": 10,
                "output_tokens": 4,
                "input_tokens_details": {"cached_tokens": 6},
                "output_tokens_details": {"reasoning_tokens": 3},
            },
        },
    }
    data = b'event: response.output_text.delta\ndata: {"delta":"\\"usage\\""}\n\n'
    data += b"event: response.completed\ndata: " + json.dumps(final).encode() + b"\n\n"
    cutter = FrameCutter()
    tap.feed(cutter.cut(data[:30]))
    tap.feed(cutter.cut(data[30:]))
    assert tap.usage == ir.Usage(4, 4, 6, reasoning_tokens=3) and tap.stop_reason == "completed"


@pytest.mark.parametrize(
    ("details", "expected"),
    [({"reasoning_tokens": 5}, 5), ({"reasoning_tokens": True}, None), ({}, None), (None, None)],
)
def test_reasoning_tokens_are_read_only_when_reported_as_counts(
    details: dict[str, object] | None, expected: int | None
) -> None:
    usage = {"input_tokens": 1, "output_tokens": 9, "output_tokens_details": details}
    assert responses_upstream.usage_from_responses(usage).reasoning_tokens == expected
    rendered = rp.usage_dict(ir.Usage(1, 9, reasoning_tokens=expected))
    assert rendered["output_tokens_details"] == {"reasoning_tokens": expected or 0}


# ---------------------------------------------------------------- text.format, input_file

OBJECT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"a": {"type": "string"}},
    "required": ["a"],
    "additionalProperties": False,
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ({"format": {"type": "text"}}, None),
        ({"format": {"type": "json_object"}}, ir.OutputFormat("json_object")),
        (
            {
                "format": {
                    "type": "json_schema",
                    "name": "A",
                    "schema": OBJECT_SCHEMA,
                    "strict": True,
                    "description": "d",
                }
            },
            ir.OutputFormat("json_schema", OBJECT_SCHEMA, "A", "d", True),
        ),
        ({"verbosity": "low"}, None),
    ],
)
def test_text_format_is_the_irs_output_format(
    text: dict[str, Any], expected: ir.OutputFormat | None
) -> None:
    request, _ = decode(input="x", text=text)
    assert request.output_format == expected
    assert request.system == []


def test_input_file_parts_are_documents() -> None:
    request, _ = decode(
        input=[
            {
                "role": "user",
                "content": [
                    {
                        "type": "input_file",
                        "file_data": "data:application/pdf;base64,JVBERi0xLjQK",
                        "filename": "r.pdf",
                    },
                    {"type": "input_file", "file_url": "https://x.test/a.pdf"},
                    {"type": "input_text", "text": "Sum up"},
                ],
            }
        ]
    )
    assert request.messages[0].content == [
        ir.DocumentPart("application/pdf", data="JVBERi0xLjQK", filename="r.pdf"),
        ir.DocumentPart("application/pdf", url="https://x.test/a.pdf"),
        ir.TextPart("Sum up"),
    ]


def test_an_input_file_url_that_is_not_http_is_a_400() -> None:
    with pytest.raises(InvalidRequest, match=r"input\.0\.content\.0\.file_url"):
        decode(
            input=[{"role": "user", "content": [{"type": "input_file", "file_url": "ftp://x/a"}]}]
        )
