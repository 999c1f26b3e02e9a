"""AnthropicProvider.events against a fake Anthropic upstream: the IR path
that lets clients of other protocols use Anthropic-native providers."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.support.fakes import (
    FakeUpstream,
    JSONReply,
    SSEReply,
    anthropic_message,
    anthropic_stream,
)
from vdm import ir
from vdm.config import ProviderSettings, ServerSettings
from vdm.errors import UpstreamProtocolError, UpstreamStatusError
from vdm.providers.anthropic import AnthropicProvider
from vdm.providers.base import ClientContext
from vdm.providers.http import make_session

KEY = "sk-ant-provider-key"


def run_events(
    fake: FakeUpstream,
    request: ir.ChatRequest,
    *,
    headers: dict[str, str] | None = None,
    **settings: Any,
) -> list[ir.Event]:
    async def go() -> list[ir.Event]:
        provider = AnthropicProvider(
            ProviderSettings("ant", "anthropic", fake.url, (KEY,), **settings),
            make_session(ServerSettings(request_timeout=10.0)),  # inside the loop that uses it
            max_tokens_limit=1000,
        )
        try:
            return [
                e
                async for e in provider.events(
                    request, "claude-upstream", ClientContext(headers=headers)
                )
            ]
        finally:
            await provider.close()

    return asyncio.run(go())


def chat(*, stream: bool) -> ir.ChatRequest:
    return ir.ChatRequest(
        model="client-model",
        messages=[ir.Message("user", [ir.TextPart("hello")])],
        system=[ir.TextPart("be kind")],
        max_tokens=5000,
        stream=stream,
    )


def test_non_streaming_call(fake_anthropic: FakeUpstream) -> None:
    fake_anthropic.reply(JSONReply(anthropic_message("Hi there")))
    events = run_events(fake_anthropic, chat(stream=False))
    upstream = fake_anthropic.last
    assert (upstream.method, upstream.path) == ("POST", "/v1/messages")
    assert upstream.headers["x-api-key"] == KEY
    assert upstream.headers["anthropic-version"] == "2023-06-01"
    assert upstream.headers["content-type"] == "application/json"
    assert "anthropic-beta" not in upstream.headers
    assert upstream.json == {
        "model": "claude-upstream",
        "max_tokens": 1000,
        "system": "be kind",
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hello"}]}],
    }
    assert ir.fold(events) == ir.ChatResponse(
        id="msg_upstream123",
        model="client-model",
        content=[ir.TextPart("Hi there")],
        stop_reason="end_turn",
        usage=ir.Usage(25, 20, 3),
    )
    assert isinstance(events[0], ir.MessageStart)
    assert isinstance(events[-1], ir.MessageStop)


def test_streaming_call(fake_anthropic: FakeUpstream) -> None:
    fake_anthropic.reply(SSEReply(anthropic_stream(["Hel", "lo ", "world"])))
    events = run_events(
        fake_anthropic,
        chat(stream=True),
        api_version="2024-01-01",
        headers={"anthropic-beta": "tools-2024", "authorization": "Bearer x"},
    )
    upstream = fake_anthropic.last
    assert upstream.path == "/v1/messages"
    assert upstream.headers["anthropic-version"] == "2024-01-01"
    assert upstream.headers["anthropic-beta"] == "tools-2024"
    assert upstream.headers["x-api-key"] == KEY
    assert "authorization" not in upstream.headers
    assert upstream.json["stream"] is True
    assert events == [
        ir.MessageStart("msg_upstream123", "client-model", ir.Usage(25, 1)),
        ir.TextStart(0),
        ir.Ping(),
        ir.TextDelta(0, "Hel"),
        ir.TextDelta(0, "lo "),
        ir.TextDelta(0, "world"),
        ir.BlockStop(0),
        ir.MessageDelta("end_turn", ir.Usage(0, 20)),
        ir.MessageStop(),
    ]
    assert ir.fold(events).content == [ir.TextPart("Hello world")]


def test_stream_requested_but_json_answered(fake_anthropic: FakeUpstream) -> None:
    fake_anthropic.reply(JSONReply(anthropic_message("plain")))
    events = run_events(fake_anthropic, chat(stream=True))
    assert ir.fold(events).content == [ir.TextPart("plain")]


def test_upstream_429_is_a_status_error(fake_anthropic: FakeUpstream) -> None:
    fake_anthropic.reply(
        JSONReply(
            {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}},
            status=429,
            headers={"retry-after": "7"},
        )
    )
    with pytest.raises(UpstreamStatusError) as info:
        run_events(fake_anthropic, chat(stream=True))
    assert info.value.upstream_status == 429
    assert info.value.provider == "ant"
    assert info.value.headers == {"retry-after": "7"}
    assert "slow down" in info.value.message


def test_cut_stream_is_a_protocol_error(fake_anthropic: FakeUpstream) -> None:
    fake_anthropic.reply(SSEReply(anthropic_stream(["partial"])[:-2]))
    with pytest.raises(UpstreamProtocolError, match="'ant' ended the stream"):
        run_events(fake_anthropic, chat(stream=True))


def test_error_event_mid_stream_is_a_protocol_error(fake_anthropic: FakeUpstream) -> None:
    error = (
        b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error",'
        b'"message":"Overloaded"}}\n\n'
    )
    frames = [*anthropic_stream(["partial"])[:4], error]
    fake_anthropic.reply(SSEReply(frames))
    with pytest.raises(UpstreamProtocolError, match="Overloaded"):
        run_events(fake_anthropic, chat(stream=True))


def test_non_message_json_is_a_protocol_error(fake_anthropic: FakeUpstream) -> None:
    fake_anthropic.reply(JSONReply({"unexpected": True}))
    with pytest.raises(UpstreamProtocolError, match="not a message"):
        run_events(fake_anthropic, chat(stream=False))
