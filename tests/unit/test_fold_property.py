"""Property: an OpenAI answer decodes to the same Anthropic message whether it
arrives as one chat.completion or as chunks split anywhere, and the streamed
events always form a valid Anthropic event sequence.

Wider than test_stream_fold.py: null content, a missing finish reason, the
first argument fragment riding on the chunk that names the call, the finish
reason on the last content chunk, and an oracle written from the mapping
rules (not from the decoder) for the folded message.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# (regex imported here, not lazily by st.from_regex deep inside a draw, where the
# import's compile can trip CPython 3.11.7's gh-106905 recursion-depth check)
from hypothesis.strategies._internal import regex as _regex  # noqa: F401

from vdm import ir
from vdm.protocols.openai_upstream import ChunkDecoder, response_events

MODEL = "client-model"

text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=False, allow_infinity=False, width=32)
    | text
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=6,
)
json_objects = st.dictionaries(text, json_values, max_size=4)


@st.composite
def arguments(draw: st.DrawFn) -> str:
    """A JSON object as an upstream might write it (compact, spaced, or escaped)."""
    value = draw(json_objects)
    style = draw(st.sampled_from(["compact", "spaced", "ascii"]))
    if style == "compact":
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    if style == "spaced":
        return json.dumps(value, indent=draw(st.integers(0, 2)), ensure_ascii=False)
    return json.dumps(value)


@st.composite
def answers(draw: st.DrawFn) -> dict[str, Any]:
    """A chat.completion: text (maybe empty or null), reasoning, 0-3 tool calls."""
    calls = draw(
        st.lists(
            st.tuples(
                st.from_regex(r"call_[A-Za-z0-9]{1,10}", fullmatch=True),
                st.sampled_from(["Read", "Bash", "get_weather", "x.y-z"]),
                arguments(),
            ),
            max_size=3,
            unique_by=lambda c: c[0],
        )
    )
    message: dict[str, Any] = {"role": "assistant", "content": draw(st.none() | text)}
    reasoning = draw(text)
    if reasoning:
        message["reasoning_content"] = reasoning
    if calls:
        message["tool_calls"] = [
            {"id": id_, "type": "function", "function": {"name": name, "arguments": args}}
            for id_, name, args in calls
        ]
    finish = draw(st.sampled_from(["stop", "length", "tool_calls", "content_filter", None]))
    prompt = draw(st.integers(0, 100_000))
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": draw(st.integers(0, 10_000)),
    }
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    if draw(st.booleans()):
        usage["prompt_tokens_details"] = {"cached_tokens": draw(st.integers(0, prompt))}
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "upstream",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": usage,
    }


def pieces(draw: st.DrawFn, value: str) -> list[str]:
    """``value`` cut at hypothesis-chosen points (no empty pieces)."""
    if len(value) < 2:
        return [value] if value else []
    cuts = draw(st.sets(st.integers(1, len(value) - 1), max_size=8))
    bounds = [0, *sorted(cuts), len(value)]
    return [value[a:b] for a, b in itertools.pairwise(bounds)]


def chunk(delta: dict[str, Any] | None, finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "upstream",
        "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish}],
    }


@st.composite
def streamed(draw: st.DrawFn) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    body = draw(answers())
    choice = body["choices"][0]
    message = choice["message"]
    chunks = [chunk({"role": "assistant", "content": ""})]
    chunks += [
        chunk({"reasoning_content": p}) for p in pieces(draw, message.get("reasoning_content", ""))
    ]
    chunks += [chunk({"content": p}) for p in pieces(draw, message["content"] or "")]
    for index, call in enumerate(message.get("tool_calls", [])):
        parts = pieces(draw, call["function"]["arguments"])
        # the first fragment may ride on the chunk that names the call
        first = parts.pop(0) if parts and draw(st.booleans()) else ""
        chunks.append(
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": index,
                            "id": call["id"],
                            "type": "function",
                            "function": {"name": call["function"]["name"], "arguments": first},
                        }
                    ]
                }
            )
        )
        chunks += [
            chunk({"tool_calls": [{"index": index, "function": {"arguments": p}}]}) for p in parts
        ]
    if draw(st.booleans()) and len(chunks) > 1:
        chunks[-1]["choices"][0]["finish_reason"] = choice["finish_reason"]
    else:
        chunks.append(chunk({}, choice["finish_reason"]))
    # usage in a final chunk without choices (stream_options.include_usage)
    chunks.append(
        {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "upstream",
            "choices": [],
            "usage": body["usage"],
        }
    )
    return body, chunks


def stream_events(chunks: list[dict[str, Any]]) -> list[ir.Event]:
    decoder = ChunkDecoder(MODEL)
    events: list[ir.Event] = []
    for c in chunks:
        # each chunk as it comes off the wire: JSON text decoded afresh
        events.extend(decoder.feed(json.loads(json.dumps(c))))
    events.extend(decoder.finish())
    return events


def assert_valid_anthropic_order(events: list[ir.Event]) -> None:
    assert isinstance(events[0], ir.MessageStart), events[0]
    assert isinstance(events[-2], ir.MessageDelta), events[-2]
    assert isinstance(events[-1], ir.MessageStop), events[-1]
    open_block: int | None = None
    seen = 0
    for event in events[1:-2]:
        match event:
            case (
                ir.TextStart(index=i)
                | ir.ThinkingStart(index=i)
                | ir.ToolUseStart(index=i)
                | ir.RedactedThinkingStart(index=i)
            ):
                assert open_block is None, f"block {i} starts while {open_block} is open"
                assert i == seen, f"block {i} starts out of order (expected {seen})"
                open_block, seen = i, seen + 1
            case (
                ir.TextDelta(index=i)
                | ir.ThinkingDelta(index=i)
                | ir.ToolInputDelta(index=i)
                | ir.SignatureDelta(index=i)
            ):
                assert i == open_block, f"delta for block {i} while {open_block} is open"
            case ir.BlockStop(index=i):
                assert i == open_block, f"stop of block {i} while {open_block} is open"
                open_block = None
            case ir.Ping():
                pass
            case _:
                raise AssertionError(f"{event!r} in the middle of a stream")
    assert open_block is None, "a block is never closed"
    assert seen >= 1, "an answer has at least one block"


def assert_block_kinds_match_deltas(events: list[ir.Event]) -> None:
    kinds: dict[int, type] = {}
    allowed = {
        ir.TextStart: ir.TextDelta,
        ir.ThinkingStart: ir.ThinkingDelta,
        ir.ToolUseStart: ir.ToolInputDelta,
    }
    for event in events:
        if type(event) in allowed:
            kinds[event.index] = allowed[type(event)]  # type: ignore[union-attr]
        elif isinstance(event, ir.TextDelta | ir.ThinkingDelta | ir.ToolInputDelta):
            assert type(event) is kinds[event.index], event


def without_id(response: ir.ChatResponse) -> ir.ChatResponse:
    assert response.id.startswith("msg_")
    response.id = "msg_X"
    return response


def expected_message(body: dict[str, Any]) -> ir.ChatResponse:
    """What the answer means, independently of the decoder."""
    choice = body["choices"][0]
    message = choice["message"]
    content: list[ir.Part] = []
    if message.get("reasoning_content"):
        content.append(ir.ThinkingPart(message["reasoning_content"], None))
    if message["content"]:
        content.append(ir.TextPart(message["content"]))
    for call in message.get("tool_calls", []):
        content.append(
            ir.ToolUsePart(
                "toolu_" + call["id"],
                call["function"]["name"],
                json.loads(call["function"]["arguments"]),
            )
        )
    if not content:
        content.append(ir.TextPart(""))
    finish = choice["finish_reason"]
    calls = bool(message.get("tool_calls"))
    reason = {
        "stop": "tool_use" if calls else "end_turn",
        "length": "max_tokens",
        "tool_calls": "tool_use",
        "content_filter": "refusal",
        None: "tool_use" if calls else "end_turn",
    }[finish]
    usage = body["usage"]
    cached = usage.get("prompt_tokens_details", {}).get("cached_tokens", 0)
    return ir.ChatResponse(
        id="msg_X",
        model=MODEL,
        content=content,
        stop_reason=reason,  # type: ignore[arg-type]
        usage=ir.Usage(
            input_tokens=usage["prompt_tokens"] - cached,
            output_tokens=usage["completion_tokens"],
            cache_read_input_tokens=cached or None,
        ),
    )


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streamed())
def test_streamed_and_whole_answers_fold_to_the_same_message(
    case: tuple[dict[str, Any], list[dict[str, Any]]],
) -> None:
    body, chunks = case
    whole = list(response_events(json.loads(json.dumps(body)), MODEL))
    parts = stream_events(chunks)

    for events in (whole, parts):
        assert_valid_anthropic_order(events)
        assert_block_kinds_match_deltas(events)

    folded_whole = without_id(ir.fold(whole))
    folded_stream = without_id(ir.fold(parts))
    assert folded_stream == folded_whole
    assert folded_whole == expected_message(body)


def test_the_property_sees_the_interesting_cases() -> None:
    """Sanity check of the generator: it reaches tool calls, reasoning, empty
    answers and cached usage (a property over trivial inputs proves nothing)."""
    seen: set[str] = set()

    @settings(max_examples=150, deadline=None, database=None)
    @given(streamed())
    def probe(case: tuple[dict[str, Any], list[dict[str, Any]]]) -> None:
        body, chunks = case
        message = body["choices"][0]["message"]
        if len(message.get("tool_calls", [])) >= 2:
            seen.add("tools")
        if message.get("reasoning_content"):
            seen.add("reasoning")
        if (
            not message["content"]
            and not message.get("tool_calls")
            and not message.get("reasoning_content")
        ):
            seen.add("empty")
        if "prompt_tokens_details" in body["usage"]:
            seen.add("cached")
        if len(chunks) > 8:
            seen.add("many-chunks")

    probe()
    assert seen == {"tools", "reasoning", "empty", "cached", "many-chunks"}
