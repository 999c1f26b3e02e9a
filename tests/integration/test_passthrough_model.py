"""Passthrough answers name the model the client asked for, not the upstream's.

Converted answers always did; a passthrough relays the upstream's bytes, and an
upstream names its own model (a dated snapshot, the name an alias routed to).
Claude Code drops its thinking blocks when the answer names another model than
the one it asked for, and SDK users compare ``model`` with what they sent.  The
rest of the answer stays byte for byte as the upstream wrote it.

The session gateway routes ``claude-…`` (alias ``claude``) to ``ant:claude-x``
and ``fast`` to ``openai:gpt-fast``; the fakes answer with other names.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.support.fakes import (
    FakeUpstream,
    RawReply,
    SSEReply,
    anthropic_message,
    anthropic_stream_of,
    sse,
)
from tests.support.gateway import Gateway

ASK = [{"role": "user", "content": "Hi"}]
CLAUDE = "claude-sonnet-4-5"  # what the client asks for: the alias 'claude' -> ant:claude-x
CLAUDE_UP = "claude-x-20990101"  # what the Anthropic-native upstream says it is
FAST = "fast"  # the alias -> openai:gpt-fast
FAST_UP = "gpt-fast-2024-08-06"
SIGNATURE = "EqQBCkYIBxgCKkA+sig/=="


@pytest.fixture
def oai(gateway: Gateway) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=gateway.url + "/v1", api_key="client-key", max_retries=0, timeout=20
    ) as client:
        yield client


def named(model: str) -> bytes:
    return b'"model":' + json.dumps(model).encode()


def thinking_and_tool(model: str = CLAUDE_UP, tool_input: Any = None) -> dict[str, Any]:
    return anthropic_message(
        model=model,
        content=[
            {"type": "thinking", "thinking": "The user greets.", "signature": SIGNATURE},
            {
                "type": "tool_use",
                "id": "toolu_1",
                "name": "Read",
                "input": tool_input if tool_input is not None else {"path": "/a"},
            },
        ],
        stop_reason="tool_use",
    )


# ---------------------------------------------------------------- Anthropic door


def test_anthropic_json_answer_names_the_requested_model(
    client: anthropic.Anthropic, fake_anthropic: FakeUpstream
) -> None:
    upstream = json.dumps(thinking_and_tool()).encode()
    fake_anthropic.reply(RawReply(upstream))
    raw = client.messages.with_raw_response.create(model=CLAUDE, max_tokens=100, messages=ASK)
    message = raw.parse()
    assert message.model == CLAUDE
    assert message.content[0].signature == SIGNATURE  # type: ignore[union-attr]
    assert fake_anthropic.last.json["model"] == "claude-x"
    assert raw.headers["x-vdm-model"] == "claude-x"  # who served it, as before
    # one splice: every other byte as the upstream wrote it
    assert raw.http_response.content == upstream.replace(
        b'"model": "' + CLAUDE_UP.encode() + b'"', named(CLAUDE)
    )


def test_anthropic_json_answer_with_the_model_name_inside_a_tool_input(
    client: anthropic.Anthropic, fake_anthropic: FakeUpstream
) -> None:
    """A nested ``"model"`` key with the upstream's very name (here in a tool's
    input) is no place for the splice: only the top-level model changes."""
    tool_input = {"model": CLAUDE_UP, "nested": {"model": CLAUDE_UP}}
    fake_anthropic.reply(RawReply(json.dumps(thinking_and_tool(tool_input=tool_input)).encode()))
    message = client.messages.create(model=CLAUDE, max_tokens=100, messages=ASK)
    assert message.model == CLAUDE
    assert message.content[1].input == tool_input  # type: ignore[union-attr]


def test_anthropic_json_answer_of_another_shape_is_renamed_too(
    gateway: Gateway, fake_anthropic: FakeUpstream
) -> None:
    """An upstream whose answer the usage reader does not know (``usage`` null
    here) is relayed as it wrote it, but for the model."""
    upstream = {**thinking_and_tool(), "usage": None}
    fake_anthropic.reply(RawReply(json.dumps(upstream).encode()))
    response = httpx.post(
        gateway.url + "/v1/messages",
        json={"model": CLAUDE, "max_tokens": 100, "messages": ASK},
        headers={"anthropic-version": "2023-06-01"},
        timeout=20,
    )
    assert response.status_code == 200
    assert response.json() == {**upstream, "model": CLAUDE}


def test_anthropic_stream_names_the_requested_model_in_its_first_event(
    client: anthropic.Anthropic, fake_anthropic: FakeUpstream
) -> None:
    frames = anthropic_stream_of(thinking_and_tool())
    # the first event arrives in two reads: the renaming waits for it whole
    head = frames[0]
    frames[:1] = [head[:30], head[30:]]
    fake_anthropic.reply(SSEReply(frames))
    with client.messages.stream(model=CLAUDE, max_tokens=100, messages=ASK) as stream:
        events = list(stream)
        final = stream.get_final_message()
    assert events[0].type == "message_start" and events[0].message.model == CLAUDE
    assert final.model == CLAUDE
    thinking = final.content[0]
    assert thinking.type == "thinking" and thinking.signature == SIGNATURE
    assert final.content[1].type == "tool_use"


def test_anthropic_stream_bytes_change_only_in_the_first_event(
    gateway: Gateway, fake_anthropic: FakeUpstream
) -> None:
    frames = anthropic_stream_of(thinking_and_tool(tool_input={"model": CLAUDE_UP}))
    fake_anthropic.reply(SSEReply(frames))
    with httpx.stream(
        "POST",
        gateway.url + "/v1/messages",
        json={"model": CLAUDE, "max_tokens": 100, "messages": ASK, "stream": True},
        headers={"anthropic-version": "2023-06-01"},
        timeout=20,
    ) as response:
        assert response.status_code == 200
        received = response.read()
    upstream_token = b'"model": "' + CLAUDE_UP.encode() + b'"'
    assert frames[0].count(upstream_token) == 1
    expected = [frames[0].replace(upstream_token, named(CLAUDE)), *frames[1:]]
    assert received == b"".join(expected)


# ---------------------------------------------------------------- OpenAI door


def completion_body(model: str = FAST_UP) -> dict[str, Any]:
    return {
        "id": "chatcmpl-up",
        "object": "chat.completion",
        "created": 1,
        "model": model,
        "system_fingerprint": "fp_1",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": 'say "model":"x"'},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }


def chunks(*, azure_first: bool = False) -> list[dict[str, Any]]:
    def chunk(delta: dict[str, Any] | None, finish: str | None = None) -> dict[str, Any]:
        return {
            "id": "chatcmpl-up",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": FAST_UP,
            "system_fingerprint": "fp_1",
            "choices": []
            if delta is None
            else [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    out = []
    if azure_first:  # Azure OpenAI's content-filter chunk comes first and names no model
        out.append(
            {
                "id": "",
                "object": "",
                "created": 0,
                "model": "",
                "choices": [],
                "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}],
            }
        )
    out += [
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "Hel"}),
        chunk({"content": 'lo "model": "' + FAST_UP + '"'}),
        chunk({}, "stop"),
        {
            **chunk(None),
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
        },
    ]
    return out


def test_openai_json_answer_names_the_requested_model(
    oai: openai.OpenAI, fake_openai: FakeUpstream
) -> None:
    upstream = json.dumps(completion_body()).encode()
    fake_openai.reply(RawReply(upstream))
    raw = oai.chat.completions.with_raw_response.create(model=FAST, messages=ASK)  # type: ignore[arg-type]
    answer = raw.parse()
    assert answer.model == FAST
    assert answer.choices[0].message.content == 'say "model":"x"'
    assert fake_openai.last.json["model"] == "gpt-fast"
    assert raw.http_response.content == upstream.replace(
        b'"model": "' + FAST_UP.encode() + b'"', named(FAST)
    )


@pytest.mark.parametrize("azure_first", [False, True], ids=["openai", "azure-first-chunk"])
def test_openai_stream_names_the_requested_model_in_every_chunk(
    oai: openai.OpenAI, fake_openai: FakeUpstream, azure_first: bool
) -> None:
    objects = chunks(azure_first=azure_first)
    fake_openai.reply(SSEReply(sse(*objects)))
    stream = oai.chat.completions.create(
        model=FAST,
        messages=ASK,  # type: ignore[arg-type]
        stream=True,
        stream_options={"include_usage": True},
    )
    received = list(stream)
    assert len(received) == len(objects)
    assert [c.model for c in received] == [FAST] * len(objects)
    text = "".join(c.choices[0].delta.content or "" for c in received if c.choices)
    assert text == 'Hello "model": "' + FAST_UP + '"'  # a model name in the text is text
    assert received[-1].usage is not None and received[-1].usage.total_tokens == 5


def test_openai_stream_bytes_change_only_in_the_model_fields(
    gateway: Gateway, fake_openai: FakeUpstream
) -> None:
    frames = sse(*chunks(azure_first=True))
    fake_openai.reply(SSEReply(frames))
    with httpx.stream(
        "POST",
        gateway.url + "/v1/chat/completions",
        json={
            "model": FAST,
            "messages": ASK,
            "stream": True,
            "stream_options": {"include_usage": True},  # (else its chunk is kept from us)
        },
        timeout=20,
    ) as response:
        assert response.status_code == 200
        received = response.read()
    expected = (
        b"".join(frames)
        .replace(b'"model": "' + FAST_UP.encode() + b'"', named(FAST))
        .replace(b'"model": ""', named(FAST))
    )
    assert received == expected


# ---------------------------------------------------------------- Responses door


def response_object(status: str, output: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": "resp_up",
        "object": "response",
        "created_at": 1,
        "status": status,
        "model": FAST_UP,
        "output": output,
        "tools": [],
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "usage": {
            "input_tokens": 9,
            "output_tokens": 2,
            "total_tokens": 11,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0},
        },
    }


MESSAGE = {
    "type": "message",
    "id": "msg_up",
    "status": "completed",
    "role": "assistant",
    "content": [{"type": "output_text", "text": "Hello", "annotations": []}],
}


def test_responses_json_answer_names_the_requested_model(
    oai: openai.OpenAI, fake_openai: FakeUpstream
) -> None:
    fake_openai.reply(RawReply(json.dumps(response_object("completed", [MESSAGE])).encode()))
    answer = oai.responses.create(model=FAST, input="Hi")
    assert answer.model == FAST
    assert answer.output_text == "Hello"
    assert fake_openai.last.path == "/v1/responses"  # the native relay, not a conversion
    assert fake_openai.last.json["model"] == "gpt-fast"


def test_responses_stream_names_the_requested_model_in_every_event(
    oai: openai.OpenAI, fake_openai: FakeUpstream
) -> None:
    events = [
        ("response.created", {"response": response_object("in_progress", [])}),
        ("response.in_progress", {"response": response_object("in_progress", [])}),
        (
            "response.output_text.delta",
            {"item_id": "msg_up", "output_index": 0, "content_index": 0, "delta": "Hello"},
        ),
        ("response.completed", {"response": response_object("completed", [MESSAGE])}),
    ]
    frames = [
        f"event: {kind}\ndata: {json.dumps({'type': kind, 'sequence_number': n, **data})}\n\n".encode()
        for n, (kind, data) in enumerate(events)
    ]
    fake_openai.reply(SSEReply(frames))
    received = list(oai.responses.create(model=FAST, input="Hi", stream=True))
    assert [e.type for e in received] == [kind for kind, _ in events]
    models = [e.response.model for e in received if hasattr(e, "response")]
    assert models == [FAST, FAST, FAST]
    assert fake_openai.last.path == "/v1/responses"
