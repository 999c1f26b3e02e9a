"""The OpenAI Chat Completions door, driven by the official ``openai`` SDK."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.support.fakes import FakeUpstream, JSONReply, SSEReply, completion, stream_of
from tests.support.gateway import Gateway

ASK = [{"role": "user", "content": "Hi"}]


@pytest.fixture
def oai(gateway: Gateway) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=gateway.url + "/v1", api_key="client-key", max_retries=0, timeout=20
    ) as client:
        yield client


# ---------------------------------------------------------------- passthrough


def test_passthrough_non_streaming(oai: openai.OpenAI, fake_openai: FakeUpstream) -> None:
    fake_openai.reply(JSONReply(completion("Hello from upstream")))
    raw = oai.chat.completions.with_raw_response.create(
        model="plain:gpt-x", messages=ASK, temperature=0.2, seed=7, logit_bias={"50256": -100}
    )
    answer = raw.parse()
    assert answer.choices[0].message.content == "Hello from upstream"
    assert answer.usage is not None and answer.usage.prompt_tokens == 25
    assert raw.headers["x-vdm-provider"] == "plain" and raw.headers["x-vdm-model"] == "gpt-x"
    sent = fake_openai.last
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == "Bearer sk-test-plain"  # client key replaced
    body = sent.json
    assert body["model"] == "gpt-x"
    # fields the gateway does not interpret go up untouched
    assert body["seed"] == 7 and body["logit_bias"] == {"50256": -100}
    assert body["temperature"] == 0.2


def named(stream: bytes, model: str) -> bytes:
    """The chunks of ``stream_of`` naming ``model`` instead of the upstream's model."""
    return stream.replace(b'"model": "upstream-model"', b'"model":' + json.dumps(model).encode())


def test_passthrough_stream_is_relayed_byte_for_byte(
    gateway: Gateway, fake_openai: FakeUpstream
) -> None:
    upstream = stream_of(completion("one two three"), pieces=3)
    fake_openai.reply(SSEReply(upstream))
    response = httpx.post(
        gateway.url + "/v1/chat/completions",
        timeout=20,
        json={
            "model": "plain:gpt-x",
            "messages": ASK,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    )
    assert response.status_code == 200
    # byte for byte, but every chunk names the model the client asked for
    assert response.content == named(b"".join(upstream), "plain:gpt-x")
    assert fake_openai.last.json["model"] == "gpt-x"


def test_passthrough_stream_closed_before_done_ends_with_an_error_chunk(
    gateway: Gateway, fake_openai: FakeUpstream, oai: openai.OpenAI
) -> None:
    upstream = stream_of(completion("cut short"), pieces=3)[:3]  # no finish, no [DONE]
    fake_openai.reply(SSEReply(upstream))
    response = httpx.post(
        gateway.url + "/v1/chat/completions",
        timeout=20,
        json={"model": "plain:gpt-x", "messages": ASK, "stream": True},
    )
    relayed = named(b"".join(upstream), "plain:gpt-x")
    assert response.content.startswith(relayed)
    last = response.content[len(relayed) :].decode()
    assert last.startswith("data: ") and "[DONE]" not in last
    error = json.loads(last[6:])["error"]
    assert "'plain'" in error["message"] and "before it finished" in error["message"]
    fake_openai.reply(SSEReply(upstream))
    with pytest.raises(openai.APIError, match="before it finished"):
        list(oai.chat.completions.create(model="plain:gpt-x", messages=ASK, stream=True))


def test_passthrough_stream_with_the_sdk(oai: openai.OpenAI, fake_openai: FakeUpstream) -> None:
    fake_openai.reply(SSEReply(stream_of(completion("streamed text"), pieces=4)))
    chunks = list(
        oai.chat.completions.create(
            model="plain:gpt-x", messages=ASK, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "streamed text"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 20


# ---------------------------------------------------------------- conversion (echo)


def test_conversion_to_a_non_openai_provider(oai: openai.OpenAI) -> None:
    answer = oai.chat.completions.create(
        model="echo:e",
        messages=[
            {"role": "system", "content": "ignored by echo"},
            {"role": "user", "content": [{"type": "text", "text": "repeat after me"}]},
        ],
    )
    assert answer.object == "chat.completion"
    assert answer.id.startswith("chatcmpl-")
    assert answer.model == "echo:e"
    assert answer.choices[0].message.content == "repeat after me"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None and answer.usage.total_tokens == (
        answer.usage.prompt_tokens + answer.usage.completion_tokens
    )


def test_conversion_stream_chunks_and_done(gateway: Gateway, oai: openai.OpenAI) -> None:
    chunks = list(
        oai.chat.completions.create(
            model="echo:e",
            messages=[{"role": "user", "content": "a b c"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "a b c"
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and finishes.count("stop") == 1
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    raw = httpx.post(
        gateway.url + "/v1/chat/completions",
        timeout=20,
        json={"model": "echo:e", "messages": [{"role": "user", "content": "x"}], "stream": True},
    )
    frames = [f for f in raw.text.split("\n\n") if f]
    assert frames[-1] == "data: [DONE]"
    assert all(f.startswith("data: ") for f in frames)
    assert not any('"usage"' in f for f in frames)  # not asked for


def test_conversion_tool_call(oai: openai.OpenAI) -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather",
                "parameters": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
            },
        }
    ]
    answer = oai.chat.completions.create(
        model="echo:e",
        tools=tools,
        messages=[{"role": "user", "content": "use the get_weather tool"}],
    )
    choice = answer.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "echo"}
    follow = oai.chat.completions.create(
        model="echo:e",
        tools=tools,
        messages=[
            {"role": "user", "content": "use the get_weather tool"},
            {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
            {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
        ],
    )
    assert "sunny" in (follow.choices[0].message.content or "")


# ---------------------------------------------------------------- errors and models


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"n": 2}, "n="),
        ({"messages": []}, "messages"),
        ({"model": "echo:"}, "no model name"),
        ({"reasoning_effort": "extreme"}, "reasoning_effort"),
    ],
)
def test_bad_requests_raise_bad_request_in_openai_shape(
    oai: openai.OpenAI, kwargs: dict, needle: str
) -> None:
    args = {"model": "echo:e", "messages": ASK, **kwargs}
    with pytest.raises(openai.BadRequestError) as raised:
        oai.chat.completions.create(**args)
    body = raised.value.body
    assert isinstance(body, dict)
    assert body["type"] == "invalid_request_error"  # the SDK unwraps {"error": {...}}
    assert needle in body["message"]
    assert {"message", "type", "code", "param"} <= set(body)


def test_conversion_to_an_anthropic_native_provider(
    oai: openai.OpenAI, fake_anthropic: FakeUpstream
) -> None:
    from tests.support.fakes import anthropic_message, anthropic_stream

    fake_anthropic.reply(JSONReply(anthropic_message("Bonjour")))
    answer = oai.chat.completions.create(
        model="ant:claude-x",
        max_tokens=50,
        messages=[{"role": "system", "content": "Be French."}, *ASK],
    )
    assert answer.choices[0].message.content == "Bonjour"
    assert answer.choices[0].finish_reason == "stop"
    sent = fake_anthropic.last.json
    assert sent["model"] == "claude-x" and sent["system"] == "Be French."
    assert sent["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "Hi"}]}
    ] or sent["messages"] == [{"role": "user", "content": "Hi"}]
    fake_anthropic.reply(SSEReply(anthropic_stream(["Sa", "lut"])))
    chunks = list(oai.chat.completions.create(model="ant:claude-x", messages=ASK, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Salut"


@pytest.mark.parametrize(
    ("status", "exception"),
    [
        (401, openai.AuthenticationError),
        (403, openai.PermissionDeniedError),
        (404, openai.NotFoundError),
        (429, openai.RateLimitError),
        (500, openai.InternalServerError),
    ],
)
def test_upstream_errors_raise_matching_sdk_classes(
    oai: openai.OpenAI, fake_openai: FakeUpstream, status: int, exception: type[Exception]
) -> None:
    fake_openai.reply(JSONReply({"error": {"message": "nope", "type": "x"}}, status=status))
    with pytest.raises(exception) as raised:
        oai.chat.completions.create(model="plain:gpt-x", messages=ASK)
    assert raised.value.status_code == status  # type: ignore[attr-defined]


def test_models_in_openai_shape(oai: openai.OpenAI) -> None:
    models = oai.models.list()
    ids = {m.id for m in models.data}
    assert {"fast", "openai:fast", "echo:echo"} <= ids
    assert all(m.object == "model" for m in models.data)
