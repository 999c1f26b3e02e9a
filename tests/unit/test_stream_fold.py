"""Property: any split of an OpenAI answer into chunks folds to the same
Anthropic message as the non-streaming answer, through a valid event order."""

from __future__ import annotations

import itertools
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from vdm import ir
from vdm.protocols.openai_upstream import ChunkDecoder, response_events

texts = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-1000, 1000) | texts,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=8,
)
arguments = st.one_of(
    st.dictionaries(texts, json_values, max_size=4).map(json.dumps),
    st.just(""),
    st.just('{"unterminated": '),  # malformed upstream JSON
)
tool_calls = st.lists(
    st.tuples(
        st.text("abcdefgh0123456789", min_size=1, max_size=8),
        st.sampled_from(["Read", "Write", "get_weather"]),
        arguments,
    ),
    max_size=3,
    unique_by=lambda c: c[0],
)
usage = st.fixed_dictionaries(
    {"prompt_tokens": st.integers(0, 10_000), "completion_tokens": st.integers(0, 5_000)},
    optional={
        "prompt_tokens_details": st.fixed_dictionaries({"cached_tokens": st.integers(0, 100)})
    },
)


@st.composite
def answers(draw: st.DrawFn) -> dict[str, Any]:
    calls = draw(tool_calls)
    finish = "tool_calls" if calls else draw(st.sampled_from(["stop", "length", "content_filter"]))
    message: dict[str, Any] = {"role": "assistant", "content": draw(texts)}
    if calls:
        message["tool_calls"] = [
            {"id": i, "type": "function", "function": {"name": n, "arguments": a}}
            for i, n, a in calls
        ]
    reasoning = draw(texts)
    if reasoning:
        message["reasoning_content"] = reasoning
    u = draw(usage)
    u = {**u, "total_tokens": u["prompt_tokens"] + u["completion_tokens"]}
    if "prompt_tokens_details" in u:
        cached = min(u["prompt_tokens_details"]["cached_tokens"], u["prompt_tokens"])
        u["prompt_tokens_details"] = {"cached_tokens": cached}
    return {"choices": [{"index": 0, "message": message, "finish_reason": finish}], "usage": u}


def split(draw: st.DrawFn, text: str) -> list[str]:
    cuts = sorted(draw(st.sets(st.integers(1, max(len(text) - 1, 1)), max_size=5)))
    cuts = [c for c in cuts if 0 < c < len(text)]
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in itertools.pairwise(bounds) if text[a:b]]


@st.composite
def chunkings(
    draw: st.DrawFn, interleave: bool = False
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    body = draw(answers())
    message = body["choices"][0]["message"]

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    chunks = [chunk({"role": "assistant", "content": ""})]
    for piece in split(draw, message.get("reasoning_content", "")):
        chunks.append(chunk({"reasoning_content": piece}))
    for piece in split(draw, message["content"]):
        chunks.append(chunk({"content": piece}))
    chunks.extend(draw(tool_call_chunks(message.get("tool_calls", []), chunk, interleave)))
    chunks.append(chunk({}, body["choices"][0]["finish_reason"]))
    chunks.append({"choices": [], "usage": body["usage"]})
    return body, chunks


@st.composite
def tool_call_chunks(
    draw: st.DrawFn, calls: list[dict[str, Any]], chunk: Any, interleave: bool = False
) -> list[dict[str, Any]]:
    """The chunks of ``calls``: each call's first chunk (id and name) then its
    argument fragments; one call after the other, or (``interleave``) the
    fragments of all the calls that have started mixed in any order, as some
    upstreams stream parallel calls (each call still starts in index order)."""
    pending: list[list[dict[str, Any]]] = []
    for index, call in enumerate(calls):
        function = call["function"]
        head = {"index": index, "id": call["id"], "type": "function"}
        head["function"] = {"name": function["name"], "arguments": ""}
        pieces = [
            {"index": index, "function": {"arguments": piece}}
            for piece in split(draw, function["arguments"])
        ]
        pending.append([head, *pieces])
    out: list[dict[str, Any]] = []
    started = 0  # calls whose first chunk went
    while any(pending):
        if interleave:
            choices = [i for i in range(min(started + 1, len(pending))) if pending[i]]
            i = draw(st.sampled_from(choices))
        else:
            i = next(i for i, p in enumerate(pending) if p)
        started = max(started, i + 1)
        out.append(chunk({"tool_calls": [pending[i].pop(0)]}))
    return out


def assert_valid_order(events: list[ir.Event]) -> None:
    assert isinstance(events[0], ir.MessageStart)
    assert isinstance(events[-2], ir.MessageDelta) and isinstance(events[-1], ir.MessageStop)
    open_index: int | None = None
    next_index = 0
    for event in events[1:-2]:
        match event:
            case ir.TextStart(index=i) | ir.ToolUseStart(index=i) | ir.ThinkingStart(index=i):
                assert open_index is None and i == next_index
                open_index, next_index = i, i + 1
            case ir.TextDelta(index=i) | ir.ToolInputDelta(index=i) | ir.ThinkingDelta(index=i):
                assert i == open_index
            case ir.BlockStop(index=i):
                assert i == open_index
                open_index = None
            case ir.Ping():
                pass
            case _:
                raise AssertionError(f"unexpected event in a stream: {event!r}")
    assert open_index is None and next_index >= 1


def without_id(response: ir.ChatResponse) -> ir.ChatResponse:
    response.id = ""
    return response


@settings(max_examples=250, deadline=None)
@given(chunkings())
def test_stream_folds_to_the_non_streaming_message(case: tuple[dict, list[dict]]) -> None:
    assert_stream_folds_to_the_message(*case)


@settings(max_examples=250, deadline=None)
@given(chunkings(interleave=True))
def test_interleaved_parallel_tool_calls_fold_to_the_non_streaming_message(
    case: tuple[dict, list[dict]],
) -> None:
    """Fragments of parallel calls mixed by ``index``: each call comes whole."""
    assert_stream_folds_to_the_message(*case)


def assert_stream_folds_to_the_message(body: dict[str, Any], chunks: list[dict[str, Any]]) -> None:
    decoder = ChunkDecoder("client-model")
    streamed: list[ir.Event] = []
    for chunk in chunks:
        streamed.extend(decoder.feed(chunk))
    streamed.extend(decoder.finish())
    assert_valid_order(streamed)
    whole = list(response_events(body, "client-model"))
    assert_valid_order(whole)
    assert without_id(ir.fold(streamed)) == without_id(ir.fold(whole))

    folded = ir.fold(streamed)
    message = body["choices"][0]["message"]
    texts = [p.text for p in folded.content if isinstance(p, ir.TextPart)]
    assert "".join(texts) == message["content"]
    uses = [p for p in folded.content if isinstance(p, ir.ToolUsePart)]
    assert [u.name for u in uses] == [c["function"]["name"] for c in message.get("tool_calls", [])]
    for use, call in zip(uses, message.get("tool_calls", []), strict=True):
        raw = call["function"]["arguments"]
        assert use.input == (ir.parse_tool_input(raw))
        assert use.id == "toolu_" + call["id"]
    assert folded.usage.output_tokens == body["usage"]["completion_tokens"]


def test_interleaved_calls_each_come_whole_and_in_order() -> None:
    """call 0, call 1, call 0, call 1, ...: the first call waits for nothing,
    the second opens once the first's arguments are whole JSON."""

    def chunk(*calls: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        delta = {"tool_calls": list(calls)} if calls else {}
        return {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    def head(index: int, name: str) -> dict[str, Any]:
        return {"index": index, "id": f"c{index}", "function": {"name": name, "arguments": ""}}

    def args(index: int, text: str) -> dict[str, Any]:
        return {"index": index, "function": {"arguments": text}}

    decoder = ChunkDecoder("m")
    events: list[ir.Event] = []
    for c in (
        chunk(head(0, "Read")),
        chunk(head(1, "Grep")),
        chunk(args(0, '{"path": ')),
        chunk(args(1, '{"pattern": "x"')),
        chunk(args(0, '"/a"}'), args(1, "}")),  # two calls' fragments in one chunk
        chunk(finish="tool_calls"),
    ):
        events.extend(decoder.feed(c))
    events.extend(decoder.finish())
    assert_valid_order(events)
    uses = [p for p in ir.fold(events).content if isinstance(p, ir.ToolUsePart)]
    assert [(u.id, u.name, u.input) for u in uses] == [
        ("toolu_c0", "Read", {"path": "/a"}),
        ("toolu_c1", "Grep", {"pattern": "x"}),
    ]
    # the first call closes as soon as it is whole, before the stream ends
    first_stop = events.index(ir.BlockStop(0))
    assert first_stop < events.index(ir.ToolUseStart(1, "toolu_c1", "Grep", None))
