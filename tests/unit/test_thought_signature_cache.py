"""Gemini thought signatures: the bounded TTL cache, the OpenAI codec's
``extra_content`` <-> ``provider_details`` mapping, and the middleware's
record-and-restore."""

from __future__ import annotations

import asyncio
from typing import Any

from vdm import ir
from vdm.middleware import Call
from vdm.middleware.gemini import GeminiThoughtSignatures, SignatureCache, has_signature
from vdm.protocols import openai_upstream as wire

EXTRA = {"google": {"thought_signature": "c2lnbmF0dXJl"}}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# ---------------------------------------------------------------- cache


def test_entries_expire_after_ttl() -> None:
    clock = Clock()
    cache = SignatureCache(ttl=10, max_size=100, clock=clock)
    cache.put("a", {"x": 1})
    clock.now += 9.9
    assert cache.get("a") == {"x": 1}
    clock.now += 0.1
    assert cache.get("a") is None
    assert len(cache) == 0  # dropped when read


def test_reading_does_not_extend_the_ttl() -> None:
    clock = Clock()
    cache = SignatureCache(ttl=10, max_size=100, clock=clock)
    cache.put("a", {"x": 1})
    for _ in range(3):
        clock.now += 4
        cache.get("a")
    assert cache.get("a") is None


def test_expired_entries_are_swept_when_storing() -> None:
    clock = Clock()
    cache = SignatureCache(ttl=10, max_size=100, clock=clock)
    for key in "abc":
        cache.put(key, {})
    clock.now += 11
    cache.put("d", {})
    assert len(cache) == 1


def test_least_recently_used_goes_past_the_bound() -> None:
    cache = SignatureCache(ttl=3600, max_size=3, clock=Clock())
    for key in "abc":
        cache.put(key, {"k": key})
    assert cache.get("a") == {"k": "a"}  # a is now the most recent
    cache.put("d", {"k": "d"})
    assert len(cache) == 3
    assert cache.get("b") is None
    assert [cache.get(k) for k in "acd"] == [{"k": "a"}, {"k": "c"}, {"k": "d"}]
    cache.put("c", {"k": "c2"})  # re-storing refreshes, does not grow
    assert len(cache) == 3 and cache.get("c") == {"k": "c2"}


def test_has_signature() -> None:
    assert has_signature({"extra_content": EXTRA})
    assert not has_signature(None)
    assert not has_signature({"extra_content": {"google": {}}})
    assert not has_signature({"extra_content": {"other": {"thought_signature": "x"}}})
    assert not has_signature({"extra_content": "x"})


# ---------------------------------------------------------------- codec


def _call(id_: str, extra: Any = None, arguments: str = '{"city": "Paris"}') -> dict[str, Any]:
    call: dict[str, Any] = {
        "id": id_,
        "type": "function",
        "function": {"name": "get_weather", "arguments": arguments},
    }
    if extra is not None:
        call["extra_content"] = extra
    return call


def _completion(*calls: dict[str, Any]) -> dict[str, Any]:
    return {
        "choices": [
            {
                "message": {"role": "assistant", "content": None, "tool_calls": list(calls)},
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4},
    }


def _starts(events: list[ir.Event]) -> list[ir.ToolUseStart]:
    return [e for e in events if isinstance(e, ir.ToolUseStart)]


def test_non_streaming_answer_keeps_extra_content() -> None:
    events = list(wire.response_events(_completion(_call("fc_1", EXTRA), _call("fc_2")), "m"))
    starts = _starts(events)
    assert [s.provider_details for s in starts] == [{"extra_content": EXTRA}, None]
    response = ir.fold(events)
    parts = [p for p in response.content if isinstance(p, ir.ToolUsePart)]
    assert parts[0].id == "toolu_fc_1"
    assert parts[0].provider_details == {"extra_content": EXTRA}
    assert parts[1].provider_details is None


def test_streamed_answer_keeps_extra_content_of_the_first_fragment() -> None:
    decoder = wire.ChunkDecoder("m")
    first = {
        "index": 0,
        "id": "fc_1",
        "type": "function",
        "extra_content": EXTRA,
        "function": {"name": "get_weather", "arguments": '{"city"'},
    }
    rest = {"index": 0, "function": {"arguments": ': "Paris"}'}}
    events: list[ir.Event] = []
    for delta in ({"tool_calls": [first]}, {"tool_calls": [rest]}):
        events += decoder.feed({"choices": [{"delta": delta, "finish_reason": None}]})
    events += decoder.feed({"choices": [{"delta": {}, "finish_reason": "tool_calls"}]})
    events += decoder.finish()
    assert [s.provider_details for s in _starts(events)] == [{"extra_content": EXTRA}]
    part = ir.fold(events).content[0]
    assert isinstance(part, ir.ToolUsePart)
    assert part.input == {"city": "Paris"}
    assert part.provider_details == {"extra_content": EXTRA}


def test_empty_or_odd_extra_content_is_not_kept() -> None:
    for extra in ({}, "sig", ["x"]):
        events = list(wire.response_events(_completion(_call("fc_1", extra)), "m"))
        assert _starts(events)[0].provider_details is None


def _history(details: dict[str, Any] | None) -> ir.ChatRequest:
    return ir.ChatRequest(
        "m",
        [
            ir.Message("user", [ir.TextPart("weather?")]),
            ir.Message(
                "assistant",
                [
                    ir.TextPart("Let me look."),
                    ir.ToolUsePart("toolu_fc_1", "get_weather", {"city": "Paris"}, details),
                    ir.ToolUsePart("toolu_fc_2", "get_weather", {"city": "Rome"}),
                ],
            ),
            ir.Message(
                "user",
                [
                    ir.ToolResultPart("toolu_fc_1", [ir.TextPart("sunny")]),
                    ir.ToolResultPart("toolu_fc_2", [ir.TextPart("rain")]),
                ],
            ),
        ],
    )


def test_request_sends_provider_details_back_as_extra_content() -> None:
    body = wire.encode_request(_history({"extra_content": EXTRA}), "m", wire.RequestOptions())
    calls = body["messages"][1]["tool_calls"]
    assert calls[0] == {
        "id": "fc_1",
        "type": "function",
        "extra_content": EXTRA,
        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
    }
    assert "extra_content" not in calls[1]
    plain = wire.encode_request(_history(None), "m", wire.RequestOptions())
    assert "extra_content" not in str(plain)


# ---------------------------------------------------------------- middleware


def _openai_call(api_format: str = "openai") -> Call:
    call = Call("req_1", "anthropic", {})
    call.api_format = api_format
    return call


def _feed(middleware: GeminiThoughtSignatures, call: Call, events: list[ir.Event]) -> None:
    for event in events:
        assert middleware.on_event(call, event) is event  # observes, never rewrites


def test_middleware_restores_signatures_on_the_next_request() -> None:
    middleware = GeminiThoughtSignatures(ttl=60, max_size=10, clock=Clock())
    events = list(wire.response_events(_completion(_call("fc_1", EXTRA), _call("fc_2")), "m"))
    _feed(middleware, _openai_call(), events)
    assert len(middleware.cache) == 1  # only calls that carry a signature

    request = asyncio.run(middleware.on_request(_openai_call(), _history(None)))
    parts = request.messages[1].content
    assert parts[1].provider_details == {"extra_content": EXTRA}  # type: ignore[union-attr]
    assert parts[2].provider_details is None  # type: ignore[union-attr]
    body = wire.encode_request(request, "m", wire.RequestOptions())
    assert body["messages"][1]["tool_calls"][0]["extra_content"] == EXTRA


def test_middleware_keys_by_upstream_id_whatever_the_prefix() -> None:
    middleware = GeminiThoughtSignatures(clock=Clock())
    _feed(
        middleware,
        _openai_call(),
        [ir.ToolUseStart(0, "toolu_fc_1", "get_weather", {"extra_content": EXTRA})],
    )
    request = ir.ChatRequest(
        "m", [ir.Message("assistant", [ir.ToolUsePart("fc_1", "get_weather", {})])]
    )  # an id without the toolu_ prefix
    asyncio.run(middleware.on_request(_openai_call(), request))
    assert request.messages[0].content[0].provider_details == {  # type: ignore[union-attr]
        "extra_content": EXTRA
    }


def test_middleware_keeps_details_the_client_sent_and_ignores_other_formats() -> None:
    middleware = GeminiThoughtSignatures(clock=Clock())
    start = ir.ToolUseStart(0, "toolu_fc_1", "get_weather", {"extra_content": EXTRA})
    _feed(middleware, _openai_call("anthropic"), [start])
    assert len(middleware.cache) == 0
    _feed(middleware, _openai_call(), [start])

    own = {"extra_content": {"google": {"thought_signature": "client's"}}}
    request = asyncio.run(middleware.on_request(_openai_call(), _history(own)))
    assert request.messages[1].content[1].provider_details == own  # type: ignore[union-attr]
    other = asyncio.run(middleware.on_request(_openai_call("anthropic"), _history(None)))
    assert other.messages[1].content[1].provider_details is None  # type: ignore[union-attr]


def test_middleware_forgets_after_ttl() -> None:
    clock = Clock()
    middleware = GeminiThoughtSignatures(ttl=5, max_size=10, clock=clock)
    _feed(
        middleware,
        _openai_call(),
        [ir.ToolUseStart(0, "toolu_fc_1", "get_weather", {"extra_content": EXTRA})],
    )
    clock.now += 6
    request = asyncio.run(middleware.on_request(_openai_call(), _history(None)))
    assert request.messages[1].content[1].provider_details is None  # type: ignore[union-attr]
