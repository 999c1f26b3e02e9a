"""Parallel tool calls whose argument fragments an OpenAI-compatible upstream
streams interleaved (call 0, call 1, call 0, ... by ``index``), converted for an
Anthropic client and for the Responses door: every call comes whole, each in
its own block or output item, in index order."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from tests.support.fakes import USAGE, FakeUpstream, SSEReply, chunk, sse
from tests.support.gateway import Gateway

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}
CALLS = [
    ("call_a", "get_weather", {"city": "Oslo", "units": "metric"}),
    ("call_b", "get_weather", {"city": "Rome"}),
    ("call_c", "get_time", {"zone": "Europe/Rome"}),
]


def interleaved(text: str | None = None) -> list[bytes]:
    """``CALLS`` as an upstream that streams parallel calls at once sends them:
    every call's id and name first, then argument fragments round-robin, two
    of them sometimes in one chunk."""
    out = [chunk({"role": "assistant", "content": text or ""})]
    heads = [
        {"index": i, "id": id_, "type": "function", "function": {"name": name, "arguments": ""}}
        for i, (id_, name, _) in enumerate(CALLS)
    ]
    out += [chunk({"tool_calls": [head]}) for head in heads]
    pieces = []
    for _, _, arguments in CALLS:
        text_ = json.dumps(arguments)
        pieces.append([text_[j : j + 5] for j in range(0, len(text_), 5)])
    for step in range(max(len(p) for p in pieces)):
        fragments = [
            {"index": i, "function": {"arguments": p[step]}}
            for i, p in enumerate(pieces)
            if step < len(p)
        ]
        if step % 3 == 2:  # two calls' fragments in one chunk
            out.append(chunk({"tool_calls": fragments[:2]}))
            out += [chunk({"tool_calls": [f]}) for f in fragments[2:]]
        else:
            out += [chunk({"tool_calls": [f]}) for f in fragments]
    out.append(chunk({}, finish="tool_calls"))
    out.append(chunk(None, usage=USAGE))
    return sse(*out)


def test_the_fixture_really_interleaves() -> None:
    indices = [
        call["index"]
        for frame in interleaved()
        if frame.startswith(b"data: {")
        for choice in json.loads(frame[6:])["choices"]
        for call in choice["delta"].get("tool_calls", [])
        if call["function"].get("arguments")
    ]
    assert indices[:4] == [0, 1, 2, 0]


def test_anthropic_client_gets_every_interleaved_call_whole(
    client: anthropic.Anthropic, fake_openai: FakeUpstream
) -> None:
    fake_openai.reply(SSEReply(interleaved("Let me check.")))
    with client.messages.stream(
        model="openai:gpt-x", max_tokens=100, messages=[{"role": "user", "content": "?"}]
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    assert final.content[0].type == "text" and final.content[0].text == "Let me check."
    uses = [b for b in final.content[1:] if b.type == "tool_use"]
    assert [(u.id, u.name, u.input) for u in uses] == [
        ("toolu_" + id_, name, arguments) for id_, name, arguments in CALLS
    ]
    # one block at a time, each tool's input arriving inside its own block
    open_block = None
    for event in events:
        if event.type == "content_block_start":
            assert open_block is None
            open_block = event.index
        elif event.type == "content_block_delta":
            assert event.index == open_block
        elif event.type == "content_block_stop":
            assert event.index == open_block
            open_block = None


@pytest.fixture
def oai(gateway: Gateway) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=gateway.url + "/v1", api_key="client-key", max_retries=0, timeout=20
    ) as client:
        yield client


def test_responses_client_gets_every_interleaved_call_whole(
    oai: openai.OpenAI, fake_openai: FakeUpstream
) -> None:
    fake_openai.reply(SSEReply(interleaved()))
    events: list[Any] = list(
        oai.responses.create(model="plain:gpt-x", input="?", tools=[WEATHER], stream=True)  # type: ignore[list-item]
    )
    assert fake_openai.last.path == "/v1/chat/completions"  # converted
    done = [e.arguments for e in events if e.type == "response.function_call_arguments.done"]
    assert [json.loads(a) for a in done] == [arguments for _, _, arguments in CALLS]
    final = events[-1]
    assert final.type == "response.completed"
    calls = [i for i in final.response.output if i.type == "function_call"]
    assert [(c.call_id, c.name, json.loads(c.arguments)) for c in calls] == [
        ("toolu_" + id_, name, arguments) for id_, name, arguments in CALLS
    ]
