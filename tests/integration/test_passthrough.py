"""Anthropic client -> Anthropic-native provider (``ant``): the passthrough.

The body goes up byte for byte except the model, the answer (JSON or SSE)
comes back byte for byte, headers are forwarded or replaced as they must be,
and the client's key never reaches the upstream.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import anthropic
import httpx
import pytest
from aiohttp import web

import vdm
from tests.support.fakes import (
    FakeUpstream,
    JSONReply,
    RawReply,
    SSEReply,
    anthropic_message,
    anthropic_stream,
    reset_once_read,
)
from tests.support.gateway import Gateway

ASK = [{"role": "user", "content": "Hi"}]
CLIENT_KEY = "client-secret-key-123"
BETA = "interleaved-thinking-2025-05-14,context-management-2025-06-27"

# A body as a client might write it: odd spacing and key order, unicode
# escapes, thinking blocks with signatures, cache_control with ttl, and
# top-level fields the gateway has never heard of.
BODY = (
    b'{"max_tokens" : 1024,  "system":[{"type":"text","text":"Be brief.",'
    b'"cache_control":{"type":"ephemeral","ttl":"1h"}}],\n'
    b' "messages":[\n'
    b'  {"role":"user","content":[{"type":"text","text":"caf\\u00e9 \\ud83d\\ude00 \\"q\\"",'
    b'"cache_control":{"type":"ephemeral","ttl":"5m"}}]},\n'
    b'  {"role":"assistant","content":[{"type":"thinking","thinking":"Let me think.",'
    b'"signature":"EqQBCkYIBxgCKkA+sig/==\\n"},{"type":"redacted_thinking","data":"c2VjcmV0"},'
    b'{"type":"tool_use","id":"toolu_01","name":"Read","input":{"path":"/a","model":"m-up"}}]},\n'
    b'  {"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_01",'
    b'"content":"file text"}]}\n'
    b" ],\n"
    b' "model"  :  "ant:m-up",\n'
    b' "thinking": {"type": "enabled", "budget_tokens": 2048},\n'
    b' "context_management": {"edits": [{"type": "clear_tool_uses_20250919",'
    b' "trigger": {"type": "input_tokens", "value": 30000}}]},\n'
    b' "output_config": {"effort": "medium"},\n'
    b' "metadata": {"user_id": "u-1"}, "an_unknown_field": [1, 2.50, null, true]%s}'
)


def body(stream: bool = False, model: bytes = b"ant:m-up") -> bytes:
    out = BODY % (b', "stream": true' if stream else b"")
    return out.replace(b'"ant:m-up"', b'"' + model + b'"')


def expected_upstream_body(sent: bytes, old: str, new: str) -> tuple[bytes, bytes]:
    """The bytes before the top-level model key and after its value."""
    key = sent.index(b' "model"  :') + 1
    value_end = sent.index(json.dumps(old).encode(), key) + len(json.dumps(old))
    return sent[:key], sent[value_end:]


def assert_same_but_model(received: bytes, sent: bytes, old: str, new: str) -> None:
    before, after = expected_upstream_body(sent, old, new)
    assert received.startswith(before), "bytes before the model changed"
    assert received.endswith(after), "bytes after the model changed"
    middle = received[len(before) : len(received) - len(after)]
    assert json.loads(b"{" + middle + b"}") == {"model": new}
    assert json.loads(received) == {**json.loads(sent), "model": new}


def client_named(stream: bytes, model: str) -> bytes:
    """An upstream stream (of ``anthropic_stream``) as the client gets it: its first
    event names the model the client asked for, every other byte as it was sent."""
    upstream = b'"model": "claude-upstream"'
    assert stream.count(upstream) == 1
    return stream.replace(upstream, b'"model":' + json.dumps(model).encode())


def headers(**extra: str) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "anthropic-version": "2023-06-01",
        "anthropic-beta": BETA,
        "x-api-key": CLIENT_KEY,
        "authorization": f"Bearer {CLIENT_KEY}",
        **extra,
    }


def assert_client_key_not_forwarded(sent: dict[str, str]) -> None:
    assert sent["x-api-key"] == "sk-ant-test"
    assert "authorization" not in sent
    assert not any(CLIENT_KEY in value for value in sent.values())


# ---------------------------------------------------------------- non-streaming


def test_body_forwarded_byte_for_byte_except_the_model(
    gateway: Gateway, fake_anthropic: FakeUpstream
) -> None:
    answer = (
        b'{"id":"msg_1","type":"message","role":"assistant","model":"m-up",'
        b'"content":[{"type":"thinking","thinking":"hm","signature":"sig=="},'
        b'{"type":"text","text":"caf\\u00e9"}],  "stop_reason":"end_turn",'
        b'"stop_sequence":null,"usage":{"input_tokens":25,"output_tokens":20,'
        b'"cache_read_input_tokens":7,"cache_creation":{"ephemeral_1h_input_tokens":0}},'
        b'"container":null}'
    )
    fake_anthropic.reply(RawReply(answer, headers={"anthropic-ratelimit-requests-remaining": "41"}))
    sent = body()
    response = httpx.post(gateway.url + "/v1/messages", content=sent, headers=headers(), timeout=20)
    assert response.status_code == 200, response.text
    # the answer comes back as the upstream wrote it, naming the model the client asked for
    assert response.content == answer.replace(b'"model":"m-up"', b'"model":"ant:m-up"')
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["x-vdm-provider"] == "ant"
    assert response.headers["x-vdm-model"] == "m-up"
    assert response.headers["anthropic-ratelimit-requests-remaining"] == "41"

    upstream = fake_anthropic.last
    assert (upstream.method, upstream.path) == ("POST", "/v1/messages")
    assert_same_but_model(upstream.body, sent, "ant:m-up", "m-up")
    assert upstream.headers["anthropic-version"] == "2023-06-01"
    assert upstream.headers["anthropic-beta"] == BETA
    assert_client_key_not_forwarded(upstream.headers)


HOSTILE_HEADERS = {
    "cookie": "session=tenant-a",
    "api-key": "client-azure-key",
    "x-http-method-override": "DELETE",
    "openai-organization": "org-someone-else",
    "openai-project": "proj-someone-else",
    "x-forwarded-for": "10.9.8.7",
    "x-custom": "1",
    "x-vdm-provider": "ant",
}


def test_only_the_api_headers_go_upstream(gateway: Gateway, fake_anthropic: FakeUpstream) -> None:
    fake_anthropic.reply(JSONReply(anthropic_message()), JSONReply({"input_tokens": 3}))
    api = {
        "idempotency-key": "idem-1",
        "user-agent": "Anthropic/Python 0.1",
        "x-stainless-lang": "python",
    }
    sent_headers = headers(**HOSTILE_HEADERS, **api)
    response = httpx.post(gateway.url + "/v1/messages", content=body(), headers=sent_headers)
    assert response.status_code == 200, response.text
    count = httpx.post(
        gateway.url + "/v1/messages/count_tokens",
        json={"model": "ant:m-up", "messages": ASK},
        headers=sent_headers,
    )
    assert count.status_code == 200, count.text
    for upstream in fake_anthropic.requests:
        sent = upstream.headers
        for name in HOSTILE_HEADERS:
            assert name not in sent, name
        assert {k: sent[k] for k in api} == api
        assert sent["anthropic-beta"] == BETA
        assert_client_key_not_forwarded(sent)


def test_a_client_without_a_user_agent_is_named_as_the_gateway(
    gateway: Gateway, fake_anthropic: FakeUpstream
) -> None:
    """Not as the HTTP library the gateway uses: ``vdm/<version>``."""
    fake_anthropic.reply(JSONReply(anthropic_message()))
    with httpx.Client() as client:
        client.headers.pop("user-agent")
        response = client.post(gateway.url + "/v1/messages", content=body(), headers=headers())
    assert response.status_code == 200, response.text
    assert fake_anthropic.requests[-1].headers["user-agent"] == f"vdm/{vdm.__version__}"


def test_a_header_sent_on_several_lines_is_relayed_whole(
    gateway: Gateway, fake_anthropic: FakeUpstream
) -> None:
    answer = b'{"id":"msg_1","type":"message","role":"assistant","content":[]}'
    lines = [
        ("x-upstream-trace", "a"),
        ("X-Upstream-Trace", "b"),
        ("set-cookie", "__cf_bm=1; domain=.api.anthropic.com; HttpOnly"),
        ("set-cookie", "route=2; path=/"),
        ("request-id", "req_upstream"),
    ]
    fake_anthropic.reply(RawReply(answer, headers=lines))
    response = httpx.post(gateway.url + "/v1/messages", content=body(), headers=headers())
    assert response.status_code == 200, response.text
    # one line, both values in order (RFC 9110 5.3), not the last value only
    assert response.headers.get_list("x-upstream-trace") == ["a, b"]
    assert "set-cookie" not in response.headers
    # the gateway's own id replaces the upstream's
    assert response.headers.get_list("request-id") == [response.headers["x-request-id"]]


def test_answer_that_is_not_utf8_is_relayed_as_it_is(
    gateway: Gateway, fake_anthropic: FakeUpstream
) -> None:
    """The passthrough relays bytes; reading usage from them must not turn an
    answer with invalid UTF-8 into a gateway error."""
    text_answer = (
        b'{"type":"message","role":"assistant","content":[{"type":"text",'
        b'"text":"\xff"}],"stop_reason":"end_turn","usage":{"input_tokens":1}}'
    )
    for answer in (text_answer, text_answer.replace(b'"end_turn"', b'"\xff"')):
        fake_anthropic.reply(RawReply(answer))
        response = httpx.post(
            gateway.url + "/v1/messages", content=body(), headers=headers(), timeout=20
        )
        assert response.status_code == 200, response.text
        assert response.content == answer


def test_stream_that_is_not_utf8_is_relayed_as_it_is(
    gateway: Gateway, fake_anthropic: FakeUpstream
) -> None:
    frames = anthropic_stream(["ok"])
    frames[-2] = frames[-2].replace(b'"stop_sequence": null', b'"stop_sequence": "\xff"')
    fake_anthropic.reply(SSEReply(frames))
    with httpx.stream(
        "POST",
        gateway.url + "/v1/messages",
        content=body(stream=True),
        headers=headers(),
        timeout=20,
    ) as streamed:
        assert streamed.status_code == 200
        assert streamed.read() == client_named(b"".join(frames), "ant:m-up")


def test_alias_in_passthrough(gateway: Gateway, fake_anthropic: FakeUpstream) -> None:
    fake_anthropic.reply(JSONReply(anthropic_message("ok")))
    sent = body(model=b"ant:claude")
    response = httpx.post(gateway.url + "/v1/messages", content=sent, headers=headers(), timeout=20)
    assert response.status_code == 200
    assert response.headers["x-vdm-model"] == "claude-x"
    assert_same_but_model(fake_anthropic.last.body, sent, "ant:claude", "claude-x")


def test_default_anthropic_version_when_the_client_sends_none(
    gateway: Gateway, fake_anthropic: FakeUpstream
) -> None:
    fake_anthropic.reply(JSONReply(anthropic_message("ok")))
    response = httpx.post(
        gateway.url + "/v1/messages",
        timeout=20,
        json={"model": "ant:m", "max_tokens": 5, "messages": ASK},
    )
    assert response.status_code == 200
    sent = fake_anthropic.last.headers
    assert sent["anthropic-version"] == "2023-06-01"
    assert "anthropic-beta" not in sent
    assert sent["x-api-key"] == "sk-ant-test"


def test_sdk_non_streaming(client: anthropic.Anthropic, fake_anthropic: FakeUpstream) -> None:
    fake_anthropic.reply(
        JSONReply(
            anthropic_message(
                content=[
                    {"type": "thinking", "thinking": "Because.", "signature": "SIG-abc=="},
                    {"type": "text", "text": "Hi from Anthropic"},
                ]
            )
        )
    )
    history = [
        {"role": "user", "content": "Question?"},
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "Earlier.", "signature": "EARLIER-SIG=="},
                {"type": "text", "text": "Answer."},
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "text",
                    "text": "More?",
                    "cache_control": {"type": "ephemeral", "ttl": "1h"},
                }
            ],
        },
    ]
    raw = client.messages.with_raw_response.create(
        model="ant:claude",
        max_tokens=2000,
        messages=history,  # type: ignore[arg-type]
        thinking={"type": "enabled", "budget_tokens": 1024},
        extra_headers={"anthropic-beta": BETA},
        extra_body={
            "context_management": {"edits": [{"type": "clear_tool_uses_20250919"}]},
            "output_config": {"effort": "low"},
            "top_k": 5,
        },
    )
    assert raw.headers["x-vdm-provider"] == "ant"
    assert raw.headers["x-vdm-model"] == "claude-x"
    message = raw.parse()
    assert message.content[0].type == "thinking"
    assert message.content[0].signature == "SIG-abc=="  # type: ignore[union-attr]
    assert message.content[1].text == "Hi from Anthropic"  # type: ignore[union-attr]
    assert message.usage.cache_read_input_tokens == 3

    upstream = fake_anthropic.last
    sent = upstream.json
    assert sent["model"] == "claude-x"
    assert sent["messages"] == history
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    assert sent["context_management"] == {"edits": [{"type": "clear_tool_uses_20250919"}]}
    assert sent["output_config"] == {"effort": "low"}
    assert sent["top_k"] == 5
    assert upstream.headers["anthropic-beta"] == BETA
    assert upstream.headers["x-api-key"] == "sk-ant-test"
    assert "client-key" not in json.dumps(upstream.headers)


# ---------------------------------------------------------------- streaming


def thinking_stream() -> list[bytes]:
    """An Anthropic stream with a thinking block, its signature, CRLF line ends
    in one frame, and frames split across network writes."""
    frames = anthropic_stream(["Hel", "lo ", "caf\u00e9"])
    thinking = [
        b'event: content_block_start\r\ndata: {"type":"content_block_start","index":0,'
        b'"content_block":{"type":"thinking","thinking":"","signature":""}}\r\n\r\n',
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
        b'"delta":{"type":"thinking_delta","thinking":"Hmm."}}\n\n',
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
        b'"delta":{"type":"signature_delta","signature":"STREAM-SIG=="}}\n\n',
        b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n',
    ]
    text = [f.replace(b'"index": 0', b'"index": 1') for f in frames[1:]]
    whole = frames[0] + b"".join(thinking) + b"".join(text)
    # cut into uneven writes, some in the middle of a frame or a line end
    cuts = [0, 7, 180, 181, 400, 403, 777, len(whole) - 20, len(whole)]
    return [whole[a:b] for a, b in itertools.pairwise(cuts) if whole[a:b]]


def test_stream_relayed_byte_for_byte(gateway: Gateway, fake_anthropic: FakeUpstream) -> None:
    chunks = thinking_stream()
    fake_anthropic.reply(SSEReply(chunks, headers={"anthropic-ratelimit-tokens-remaining": "9"}))
    sent = body(stream=True)
    with httpx.stream(
        "POST", gateway.url + "/v1/messages", content=sent, headers=headers(), timeout=20
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-vdm-provider"] == "ant"
        assert response.headers["x-vdm-model"] == "m-up"
        assert response.headers["anthropic-ratelimit-tokens-remaining"] == "9"
        received = response.read()
    assert received == client_named(b"".join(chunks), "ant:m-up")
    upstream = fake_anthropic.last
    assert_same_but_model(upstream.body, sent, "ant:m-up", "m-up")
    assert upstream.headers["anthropic-beta"] == BETA
    assert_client_key_not_forwarded(upstream.headers)


def test_sdk_streaming(client: anthropic.Anthropic, fake_anthropic: FakeUpstream) -> None:
    fake_anthropic.reply(SSEReply(thinking_stream()))
    with client.messages.stream(
        model="ant:claude",
        max_tokens=2000,
        messages=ASK,
        thinking={"type": "enabled", "budget_tokens": 1024},
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Hello caf\u00e9"
    assert final.content[0].type == "thinking"
    assert final.content[0].thinking == "Hmm."  # type: ignore[union-attr]
    assert final.content[0].signature == "STREAM-SIG=="  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 20
    sent = fake_anthropic.last.json
    assert sent["model"] == "claude-x" and sent["stream"] is True


# ---------------------------------------------------------------- stream failures


@dataclass
class CutSSE:
    """Send these chunks, then drop the connection mid-body."""

    chunks: list[bytes]


@pytest.fixture
def cutting_fake(
    fake_anthropic: FakeUpstream, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FakeUpstream]:
    original = fake_anthropic._answer

    async def answer(request: web.Request, reply: Any) -> web.StreamResponse:
        if not isinstance(reply, CutSSE):
            return await original(request, reply)
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        for piece in reply.chunks:
            await response.write(piece)
        await reset_once_read(request)
        raise ConnectionResetError("cut by test")

    monkeypatch.setattr(fake_anthropic, "_answer", answer)
    yield fake_anthropic


def test_stream_cut_by_the_upstream_ends_with_an_error_event(
    client: anthropic.Anthropic, cutting_fake: FakeUpstream
) -> None:
    frames = anthropic_stream(["one ", "two ", "three"])
    cutting_fake.reply(CutSSE(frames[:4]))
    seen: list[str] = []
    with (
        pytest.raises(anthropic.APIStatusError) as raised,
        client.messages.stream(model="ant:m", max_tokens=50, messages=ASK) as stream,
    ):
        for event in stream:
            seen.append(event.type)
    assert "content_block_start" in seen  # the first bytes did go out
    assert "'ant'" in str(raised.value)


def test_stream_ending_early_without_message_stop_is_an_error(
    client: anthropic.Anthropic, fake_anthropic: FakeUpstream
) -> None:
    """A clean end of the upstream body before ``message_stop`` is a truncated
    answer, not a finished one: the client must see an error event."""
    frames = anthropic_stream(["one ", "two ", "three"])
    fake_anthropic.reply(SSEReply(frames[:5]))
    with (
        pytest.raises(anthropic.APIStatusError) as raised,
        client.messages.stream(model="ant:m", max_tokens=50, messages=ASK) as stream,
    ):
        for _ in stream:
            pass
    assert "'ant'" in str(raised.value)


def test_upstream_error_event_is_relayed(
    client: anthropic.Anthropic, fake_anthropic: FakeUpstream
) -> None:
    frames = anthropic_stream(["one "])
    error = (
        b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error",'
        b'"message":"Overloaded"}}\n\n'
    )
    fake_anthropic.reply(SSEReply([*frames[:3], error]))
    with (
        pytest.raises(anthropic.APIStatusError) as raised,
        client.messages.stream(model="ant:m", max_tokens=50, messages=ASK) as stream,
    ):
        for _ in stream:
            pass
    assert "Overloaded" in str(raised.value)


# ---------------------------------------------------------------- count_tokens


def test_count_tokens_forwarded_with_the_model_rewritten(
    gateway: Gateway, client: anthropic.Anthropic, fake_anthropic: FakeUpstream
) -> None:
    sent = (
        b'{"messages": [{"role": "user", "content": "caf\\u00e9"}],  '
        b'"model": "ant:claude-x", "system": [{"type": "text", "text": "s", '
        b'"cache_control": {"type": "ephemeral", "ttl": "1h"}}], '
        b'"thinking": {"type": "enabled", "budget_tokens": 1024}}'
    )
    fake_anthropic.reply(RawReply(b'{"input_tokens": 321}'))
    response = httpx.post(
        gateway.url + "/v1/messages/count_tokens", content=sent, headers=headers(), timeout=20
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"input_tokens": 321}
    assert response.headers["x-vdm-provider"] == "ant"
    assert response.headers["x-vdm-model"] == "claude-x"
    upstream = fake_anthropic.last
    assert upstream.path == "/v1/messages/count_tokens"
    before, after = sent.split(b'"ant:claude-x"')
    assert upstream.body.startswith(before.rsplit(b'"model"', 1)[0])
    assert upstream.body.endswith(after)
    assert upstream.json == {**json.loads(sent), "model": "claude-x"}
    assert upstream.headers["anthropic-beta"] == BETA
    assert_client_key_not_forwarded(upstream.headers)

    fake_anthropic.reply(JSONReply({"input_tokens": 77}))
    assert client.messages.count_tokens(model="ant:claude", messages=ASK).input_tokens == 77
    assert fake_anthropic.last.json["model"] == "claude-x"


def test_count_tokens_upstream_error(
    client: anthropic.Anthropic, fake_anthropic: FakeUpstream
) -> None:
    fake_anthropic.reply(
        JSONReply(
            {"type": "error", "error": {"type": "authentication_error", "message": "bad key"}},
            status=401,
        )
    )
    with pytest.raises(anthropic.AuthenticationError) as raised:
        client.messages.count_tokens(model="ant:m", messages=ASK)
    assert "bad key" in raised.value.message


# ---------------------------------------------------------------- upstream errors


@pytest.mark.parametrize(
    ("status", "kind", "exception"),
    [
        (400, "invalid_request_error", anthropic.BadRequestError),
        (401, "authentication_error", anthropic.AuthenticationError),
        (403, "permission_error", anthropic.PermissionDeniedError),
        (404, "not_found_error", anthropic.NotFoundError),
        (413, "request_too_large", anthropic.RequestTooLargeError),
        (429, "rate_limit_error", anthropic.RateLimitError),
        (500, "api_error", anthropic.InternalServerError),
        (529, "overloaded_error", anthropic.OverloadedError),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_upstream_error_statuses(
    client: anthropic.Anthropic,
    fake_anthropic: FakeUpstream,
    status: int,
    kind: str,
    exception: type[Exception],
    stream: bool,
) -> None:
    fake_anthropic.reply(
        JSONReply(
            {"type": "error", "error": {"type": kind, "message": f"upstream {status} says no"}},
            status=status,
            headers={"retry-after": "3"} if status == 429 else {},
        )
    )
    with pytest.raises(exception) as raised:
        if stream:
            with client.messages.stream(model="ant:m", max_tokens=5, messages=ASK) as s:
                s.get_final_message()
        else:
            client.messages.create(model="ant:m", max_tokens=5, messages=ASK)
    error = raised.value
    assert isinstance(error, anthropic.APIStatusError)
    assert error.status_code == status
    assert error.body["type"] == "error"  # type: ignore[index]
    assert error.body["error"]["type"] == kind  # type: ignore[index]
    assert f"upstream {status} says no" in error.message
    assert "'ant'" in error.message
    if status == 429:
        assert error.response.headers["retry-after"] == "3"
