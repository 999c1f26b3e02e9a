"""The converted SSE stream, event by event, under concurrency and disconnects."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from typing import Any

import anthropic
import httpx

from tests.support.fakes import (
    FakeUpstream,
    Hang,
    Recorded,
    SSEReply,
    chunk,
    completion,
    sse,
    stream_of,
    tool_call,
)
from tests.support.gateway import Gateway

ASK = [{"role": "user", "content": "Hi"}]


def raw_events(gateway: Gateway, body: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) of every SSE frame the gateway sends."""
    with httpx.stream(
        "POST",
        gateway.url + "/v1/messages",
        json=body,
        timeout=20,
        headers={"anthropic-version": "2023-06-01"},
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        text = response.read().decode()
    events = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        data = json.loads(lines["data"])
        assert data["type"] == lines["event"]  # event name matches the payload type
        events.append((lines["event"], data))
    return events


def test_exact_event_sequence_for_text(gateway: Gateway, fake_openai: FakeUpstream) -> None:
    fake_openai.reply(
        SSEReply(
            sse(
                chunk({"role": "assistant", "content": ""}),
                chunk({"content": "Hel"}),
                chunk({"content": "lo"}),
                chunk({}, finish="stop"),
                chunk(
                    None, usage={"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13}
                ),
            )
        )
    )
    events = raw_events(
        gateway, {"model": "openai:m", "max_tokens": 20, "stream": True, "messages": ASK}
    )
    names = [name for name, _ in events]
    assert names == [
        "message_start",
        "ping",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = events[0][1]["message"]
    assert start["id"].startswith("msg_") and start["role"] == "assistant"
    assert start["content"] == [] and start["stop_reason"] is None
    assert "input_tokens" in start["usage"]
    assert events[2][1] == {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    assert [e[1]["delta"] for e in events[3:5]] == [
        {"type": "text_delta", "text": "Hel"},
        {"type": "text_delta", "text": "lo"},
    ]
    delta = events[6][1]
    assert delta["delta"]["stop_reason"] == "end_turn"
    assert delta["usage"]["output_tokens"] == 2
    assert delta["usage"]["input_tokens"] == 11


def test_text_then_several_tool_calls_get_their_own_indices(
    gateway: Gateway, fake_openai: FakeUpstream
) -> None:
    body = completion(
        "Let me look.",
        finish="tool_calls",
        tool_calls=[
            tool_call("call_a", "read", '{"path": "a.txt"}'),
            tool_call("call_b", "read", '{"path": "b.txt"}'),
            tool_call("call_c", "grep", '{"pattern": "x"}'),
        ],
    )
    fake_openai.reply(SSEReply(stream_of(body, pieces=4)))
    events = raw_events(
        gateway, {"model": "openai:m", "max_tokens": 20, "stream": True, "messages": ASK}
    )
    starts = [d for n, d in events if n == "content_block_start"]
    assert [(s["index"], s["content_block"]["type"]) for s in starts] == [
        (0, "text"),
        (1, "tool_use"),
        (2, "tool_use"),
        (3, "tool_use"),
    ]
    assert [s["content_block"].get("name") for s in starts[1:]] == ["read", "read", "grep"]
    assert all(s["content_block"]["input"] == {} for s in starts[1:])
    # one block open at a time, deltas only inside their block
    open_block = None
    inputs: dict[int, str] = {}
    for name, data in events:
        if name == "content_block_start":
            assert open_block is None
            open_block = data["index"]
        elif name == "content_block_delta":
            assert data["index"] == open_block
            if data["delta"]["type"] == "input_json_delta":
                inputs[data["index"]] = (
                    inputs.get(data["index"], "") + data["delta"]["partial_json"]
                )
        elif name == "content_block_stop":
            assert data["index"] == open_block
            open_block = None
    assert {i: json.loads(v) for i, v in inputs.items()} == {
        1: {"path": "a.txt"},
        2: {"path": "b.txt"},
        3: {"pattern": "x"},
    }
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"


def test_thinking_stream(gateway: Gateway, fake_openai: FakeUpstream) -> None:
    fake_openai.reply(SSEReply(stream_of(completion("4", reasoning="two plus two"))))
    events = raw_events(
        gateway, {"model": "openai:m", "max_tokens": 20, "stream": True, "messages": ASK}
    )
    starts = [d["content_block"] for n, d in events if n == "content_block_start"]
    assert starts[0] == {"type": "thinking", "thinking": "", "signature": ""}
    assert starts[1]["type"] == "text"
    thinking = "".join(
        d["delta"]["thinking"]
        for n, d in events
        if n == "content_block_delta" and d["delta"]["type"] == "thinking_delta"
    )
    assert thinking == "two plus two"


def test_fifty_concurrent_streams_do_not_cross(gateway: Gateway, fake_openai: FakeUpstream) -> None:
    def respond(request: Recorded) -> SSEReply:
        word = request.json["messages"][-1]["content"]
        # (a pause per chunk, so that the fifty streams interleave: the subject)
        return SSEReply(stream_of(completion(f"{word} " * 12), pieces=12), delay=0.002)

    fake_openai.responder = respond

    async def one(client: anthropic.AsyncAnthropic, i: int) -> tuple[int, str]:
        async with client.messages.stream(
            model="openai:m",
            max_tokens=100,
            messages=[{"role": "user", "content": f"token{i}"}],
        ) as stream:
            message = await stream.get_final_message()
        return i, message.content[0].text  # type: ignore[union-attr]

    async def run() -> list[tuple[int, str]]:
        async with anthropic.AsyncAnthropic(
            base_url=gateway.url, api_key="k", max_retries=0, timeout=30
        ) as client:
            return await asyncio.gather(*(one(client, i) for i in range(50)))

    results = asyncio.run(run())
    assert len(results) == 50
    for i, text in results:
        assert text == f"token{i} " * 12


def test_client_disconnect_cancels_the_upstream_request(
    gateway: Gateway, fake_openai: FakeUpstream
) -> None:
    hold = threading.Event()  # the stream stops after its first token until the end
    fake_openai.reply(SSEReply(stream_of(completion("x " * 200), pieces=200), holds={2: hold}))
    try:
        with httpx.stream(
            "POST",
            gateway.url + "/v1/messages",
            timeout=20,
            json={
                "model": "openai:m",
                "max_tokens": 20,
                "stream": True,
                "messages": ASK,
            },
        ) as response:
            for line in response.iter_lines():
                if "text_delta" in line:
                    break  # leave after the first token
        assert fake_openai.wait_for(lambda: fake_openai.cancelled == 1), (
            "the upstream stream kept running after the client left"
        )
    finally:
        hold.set()


def test_client_disconnect_cancels_a_waiting_non_streaming_request(
    gateway: Gateway, fake_openai: FakeUpstream
) -> None:
    fake_openai.reply(Hang())
    with contextlib.suppress(httpx.TimeoutException):
        httpx.post(
            gateway.url + "/v1/messages",
            timeout=0.5,
            json={"model": "openai:m", "max_tokens": 20, "messages": ASK},
        )
    assert fake_openai.wait_for(lambda: fake_openai.cancelled == 1), (
        "the upstream request kept waiting after the client left"
    )
