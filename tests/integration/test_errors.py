"""Every failure a client can meet, as the client sees it: the right status,
the Anthropic error shape, the SDK's matching exception — never a 500 for a
bad request, never a silent truncation."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest

from tests.support.fakes import (
    Drop,
    FakeUpstream,
    Hang,
    JSONReply,
    RawReply,
    SSEReply,
    chunk,
    completion,
    sse,
)
from tests.support.gateway import Gateway, free_port, run_gateway

ASK = [{"role": "user", "content": "Hi"}]


def post(
    url: str, body: bytes | str | dict[str, Any], path: str = "/v1/messages", method: str = "POST"
) -> httpx.Response:
    if isinstance(body, dict):
        body = json.dumps(body)
    content = body.encode() if isinstance(body, str) else body
    return httpx.request(
        method,
        url + path,
        content=content,
        timeout=20,
        headers={"content-type": "application/json", "anthropic-version": "2023-06-01"},
    )


def error_of(response: httpx.Response, status: int, kind: str) -> str:
    """Check the Anthropic error shape; return the message."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["type"] == "error"
    assert set(body["error"]) == {"type", "message"}
    assert body["error"]["type"] == kind
    message = body["error"]["message"]
    assert isinstance(message, str) and message
    assert "Traceback" not in message
    return message


# ---------------------------------------------------------------- bad requests


def request(**fields: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "openai:m", "max_tokens": 5, "messages": ASK}
    for key, value in fields.items():
        if value is _DROP:
            body.pop(key)
        else:
            body[key] = value
    return body


_DROP = object()

BAD: list[tuple[str, bytes | str | dict[str, Any], str]] = [
    ("malformed", b'{"model": "openai:m", "max_tokens": 5,', "JSON"),
    ("not-utf8", b'{"model": "\xff\xfe"}', "JSON"),
    ("empty", b"", "empty"),
    ("array", b"[1, 2, 3]", "object"),
    ("string", b'"hello"', "object"),
    ("null", b"null", "object"),
    ("no-model", request(model=_DROP), "model"),
    ("no-messages", request(messages=_DROP), "messages"),
    ("no-max-tokens", request(max_tokens=_DROP), "max_tokens"),
    ("model-number", request(model=42), "model"),
    ("model-empty", request(model=""), "model"),
    ("messages-object", request(messages={"role": "user"}), "messages"),
    ("messages-string", request(messages="Hi"), "messages"),
    ("max-tokens-string", request(max_tokens="5"), "max_tokens"),
    ("max-tokens-float", request(max_tokens=5.5), "max_tokens"),
    ("max-tokens-bool", request(max_tokens=True), "max_tokens"),
    ("max-tokens-negative", request(max_tokens=-1), "max_tokens"),
    ("stream-string", request(stream="true"), "stream"),
    ("message-not-object", request(messages=["Hi"]), "messages.0"),
    ("bad-role", request(messages=[{"role": "robot", "content": "x"}]), "role"),
    ("no-content", request(messages=[{"role": "user"}]), "content"),
    ("content-number", request(messages=[{"role": "user", "content": 7}]), "content"),
    (
        "block-not-object",
        request(messages=[{"role": "user", "content": ["Hi"]}]),
        "messages.0.content.0",
    ),
    (
        "text-not-string",
        request(messages=[{"role": "user", "content": [{"type": "text", "text": 5}]}]),
        "messages.0.content.0.text",
    ),
    ("text-missing", request(messages=[{"role": "user", "content": [{"type": "text"}]}]), "text"),
    (
        "block-without-type",
        request(messages=[{"role": "user", "content": [{"text": "x"}]}]),
        "type",
    ),
    (
        "image-no-source",
        request(messages=[{"role": "user", "content": [{"type": "image"}]}]),
        "source",
    ),
    (
        "image-bad-source",
        request(
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "image", "source": {"type": "ftp", "url": "x"}}],
                }
            ]
        ),
        "source.type",
    ),
    (
        "tool-use-input-list",
        request(
            messages=[
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "t", "name": "n", "input": [1]}],
                }
            ]
        ),
        "input",
    ),
    (
        "tool-result-is-error",
        request(
            messages=[
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "t",
                            "content": "x",
                            "is_error": "no",
                        }
                    ],
                }
            ]
        ),
        "is_error",
    ),
    ("system-number", request(system=5), "system"),
    ("system-block-no-text", request(system=[{"type": "text"}]), "system.0"),
    ("tools-object", request(tools={"name": "x"}), "tools"),
    ("tool-no-schema", request(tools=[{"name": "x"}]), "input_schema"),
    (
        "tool-choice-bad",
        request(tools=[{"name": "x", "input_schema": {}}], tool_choice={"type": "sometimes"}),
        "tool_choice",
    ),
    (
        "tool-choice-tool-no-name",
        request(tools=[{"name": "x", "input_schema": {}}], tool_choice={"type": "tool"}),
        "tool_choice",
    ),
    ("thinking-bad", request(thinking={"type": "maybe"}), "thinking"),
    (
        "thinking-budget-string",
        request(thinking={"type": "enabled", "budget_tokens": "9"}),
        "budget_tokens",
    ),
    ("temperature-string", request(temperature="hot"), "temperature"),
    ("stop-sequences-string", request(stop_sequences="STOP"), "stop_sequences"),
]


@pytest.mark.parametrize(
    ("body", "needle"), [(b, n) for _, b, n in BAD], ids=[name for name, _, _ in BAD]
)
def test_bad_request_is_400_invalid_request_error(
    gateway: Gateway, fake_openai: FakeUpstream, body: Any, needle: str
) -> None:
    message = error_of(post(gateway.url, body), 400, "invalid_request_error")
    assert needle in message
    assert fake_openai.requests == []  # refused before any upstream call


@pytest.mark.parametrize("model", ["openai:m", "ant:m", "echo:m"])
def test_bad_requests_are_refused_for_every_provider_kind(
    gateway: Gateway, fake_openai: FakeUpstream, fake_anthropic: FakeUpstream, model: str
) -> None:
    for body in (
        request(model=model, max_tokens="5"),
        request(model=model, messages={}),
        request(model=model, max_tokens=_DROP),
    ):
        error_of(post(gateway.url, body), 400, "invalid_request_error")
    assert fake_openai.requests == [] and fake_anthropic.requests == []


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"messages": ASK}, "model"),
        ({"model": "openai:m"}, "messages"),
        ({"model": "openai:m", "messages": "x"}, "messages"),
        ({"model": "openai:m", "messages": [{"role": "user", "content": 5}]}, "content"),
        ({"model": "openai:", "messages": ASK}, "no model name"),
    ],
)
def test_bad_count_tokens_request(gateway: Gateway, body: dict[str, Any], needle: str) -> None:
    response = post(gateway.url, body, path="/v1/messages/count_tokens")
    assert needle in error_of(response, 400, "invalid_request_error")


def test_sdk_sees_bad_request_error(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as raised:
        client.messages.create(
            model="openai:m",
            max_tokens=5,
            messages=[{"role": "user", "content": [{"type": "text"}]}],
        )  # type: ignore[list-item]
    assert raised.value.status_code == 400
    assert raised.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]


def test_a_prefix_that_names_no_provider_stays_in_the_model(
    client: anthropic.Anthropic, fake_openai: FakeUpstream
) -> None:
    """Model ids with colons of their own reach the default provider whole; a
    mistyped prefix too, and the upstream's error names it."""
    fake_openai.reply(JSONReply(completion("tuned")))
    tuned = "ft:gpt-4o-mini-2024-07-18:acme::9abc"
    answer = client.messages.create(model=tuned, max_tokens=5, messages=ASK)
    assert answer.content[0].text == "tuned"  # type: ignore[union-attr]
    assert fake_openai.last.json["model"] == tuned
    missing = {"error": {"message": "The model `opnai:gpt-4o` does not exist", "type": "x"}}
    fake_openai.reply(JSONReply(missing, status=404))
    with pytest.raises(anthropic.NotFoundError) as raised:
        client.messages.create(model="opnai:gpt-4o", max_tokens=5, messages=ASK)
    assert "opnai:gpt-4o" in raised.value.message
    assert fake_openai.last.json["model"] == "opnai:gpt-4o"


# ---------------------------------------------------------------- upstream statuses


@pytest.mark.parametrize(
    ("status", "exception", "kind"),
    [
        (400, anthropic.BadRequestError, "invalid_request_error"),
        (401, anthropic.AuthenticationError, "authentication_error"),
        (403, anthropic.PermissionDeniedError, "permission_error"),
        (404, anthropic.NotFoundError, "not_found_error"),
        (422, anthropic.UnprocessableEntityError, "invalid_request_error"),
        (429, anthropic.RateLimitError, "rate_limit_error"),
        (500, anthropic.InternalServerError, "api_error"),
        (503, anthropic.InternalServerError, "api_error"),
        (529, anthropic.OverloadedError, "overloaded_error"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_upstream_status_maps_to_the_sdk_exception(
    client: anthropic.Anthropic,
    fake_openai: FakeUpstream,
    status: int,
    exception: type[anthropic.APIStatusError],
    kind: str,
    stream: bool,
) -> None:
    fake_openai.reply(
        JSONReply(
            {"error": {"message": f"upstream refuses with {status}", "type": "x", "code": None}},
            status=status,
            headers={"retry-after": "17"} if status == 429 else {},
        )
    )
    with pytest.raises(exception) as raised:
        if stream:
            with client.messages.stream(model="openai:m", max_tokens=5, messages=ASK) as s:
                s.get_final_message()
        else:
            client.messages.create(model="openai:m", max_tokens=5, messages=ASK)
    error = raised.value
    assert error.status_code == status
    assert error.body["type"] == "error"  # type: ignore[index]
    assert error.body["error"]["type"] == kind  # type: ignore[index]
    assert f"upstream refuses with {status}" in error.message
    assert "'openai'" in error.message
    if status == 429:
        assert error.response.headers["retry-after"] == "17"


def test_upstream_status_raw_shape(gateway: Gateway, fake_openai: FakeUpstream) -> None:
    fake_openai.reply(
        JSONReply({"error": {"message": "slow down"}}, status=429, headers={"retry-after": "30"})
    )
    response = post(gateway.url, request())
    assert "slow down" in error_of(response, 429, "rate_limit_error")
    assert response.headers["retry-after"] == "30"
    assert response.headers["request-id"]
    fake_openai.reply(RawReply(b"upstream exploded", status=500, content_type="text/plain"))
    assert "upstream exploded" in error_of(post(gateway.url, request()), 500, "api_error")
    fake_openai.reply(JSONReply({"error": {"message": "busy"}}, status=529))
    assert "busy" in error_of(post(gateway.url, request()), 529, "overloaded_error")


def test_upstream_answering_200_with_non_json_is_502(
    gateway: Gateway, client: anthropic.Anthropic, fake_openai: FakeUpstream
) -> None:
    fake_openai.reply(RawReply(b"<html>captive portal</html>", content_type="text/html"))
    message = error_of(post(gateway.url, request()), 502, "api_error")
    assert "'openai'" in message
    fake_openai.reply(RawReply(b"not json at all"))
    with pytest.raises(anthropic.APIStatusError) as raised:
        client.messages.create(model="openai:m", max_tokens=5, messages=ASK)
    assert raised.value.status_code == 502
    assert "'openai'" in raised.value.message


def test_upstream_bodies_that_are_not_utf8(gateway: Gateway, fake_openai: FakeUpstream) -> None:
    # a 200 whose JSON holds invalid UTF-8 is a bad answer (502), not a gateway crash (500)
    fake_openai.reply(RawReply(b'{"choices": [{"message": {"content": "\xff\xfe"}}]}'))
    assert "'openai'" in error_of(post(gateway.url, request()), 502, "api_error")
    # an error status keeps its mapping even when its body is not UTF-8
    fake_openai.reply(RawReply(b'{"error": {"message": "bad \xff"}}', status=400))
    message = error_of(post(gateway.url, request()), 400, "invalid_request_error")
    assert "'openai'" in message


def test_stream_chunk_that_is_not_utf8_is_502(gateway: Gateway, fake_openai: FakeUpstream) -> None:
    fake_openai.reply(
        SSEReply([b'data: {"choices":[{"delta":{"content":"\xff"}}]}\n\n', b"data: [DONE]\n\n"])
    )
    message = error_of(post(gateway.url, request(stream=True)), 502, "api_error")
    assert "'openai'" in message


def test_upstream_dropping_the_connection_is_502(
    gateway: Gateway, fake_openai: FakeUpstream
) -> None:
    fake_openai.reply(Drop())
    assert "'openai'" in error_of(post(gateway.url, request()), 502, "api_error")


# ---------------------------------------------------------------- broken streams


def test_stream_cut_before_finishing_is_an_error_event(
    client: anthropic.Anthropic, fake_openai: FakeUpstream
) -> None:
    fake_openai.reply(
        SSEReply(
            sse(
                chunk({"role": "assistant", "content": ""}),
                chunk({"content": "half an ans"}),
                done=False,
            )
        )
    )
    texts: list[str] = []
    with (
        pytest.raises(anthropic.APIStatusError) as raised,
        client.messages.stream(model="openai:m", max_tokens=50, messages=ASK) as stream,
    ):
        texts.extend(stream.text_stream)
    assert texts == ["half an ans"]  # what arrived was relayed, then the error
    assert raised.value.body["type"] == "error"  # type: ignore[index]
    assert raised.value.body["error"]["type"] == "api_error"  # type: ignore[index]
    assert "'openai'" in raised.value.message


def test_stream_cut_raw_ends_with_an_error_frame(
    gateway: Gateway, fake_openai: FakeUpstream
) -> None:
    fake_openai.reply(SSEReply(sse(chunk({"content": "partial"}), done=False)))
    with httpx.stream(
        "POST", gateway.url + "/v1/messages", timeout=20, json=request(stream=True)
    ) as response:
        assert response.status_code == 200
        text = response.read().decode()
    frames = [f for f in text.split("\n\n") if f.strip()]
    assert "event: message_stop" not in text
    last = dict(line.split(": ", 1) for line in frames[-1].splitlines())
    assert last["event"] == "error"
    data = json.loads(last["data"])
    assert data["type"] == "error" and data["error"]["type"] == "api_error"
    assert "'openai'" in data["error"]["message"]


def test_mid_stream_error_chunk_becomes_an_error_event(
    client: anthropic.Anthropic, fake_openai: FakeUpstream
) -> None:
    fake_openai.reply(
        SSEReply(sse(chunk({"content": "a"}), {"error": {"message": "model crashed"}}))
    )
    with (
        pytest.raises(anthropic.APIStatusError) as raised,
        client.messages.stream(model="openai:m", max_tokens=50, messages=ASK) as stream,
    ):
        for _ in stream:
            pass
    assert "model crashed" in raised.value.message


def test_gateway_keeps_serving_after_failures(
    client: anthropic.Anthropic, fake_openai: FakeUpstream
) -> None:
    fake_openai.reply(Drop(), RawReply(b"junk"), JSONReply(completion("fine")))
    for _ in range(2):
        with pytest.raises(anthropic.APIStatusError):
            client.messages.create(model="openai:m", max_tokens=5, messages=ASK)
    message = client.messages.create(model="openai:m", max_tokens=5, messages=ASK)
    assert message.content[0].text == "fine"  # type: ignore[union-attr]


# ---------------------------------------------------------------- paths and methods


@pytest.mark.parametrize("path", ["/v1/nothing", "/v2/messages", "/v1/messages/extra"])
def test_unknown_path_is_404(gateway: Gateway, path: str) -> None:
    assert path in error_of(httpx.get(gateway.url + path), 404, "not_found_error")
    error_of(post(gateway.url, request(), path=path), 404, "not_found_error")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/messages"),
        ("PUT", "/v1/messages"),
        ("DELETE", "/v1/messages"),
        ("GET", "/v1/messages/count_tokens"),
        ("POST", "/v1/models"),
        ("POST", "/health"),
    ],
)
def test_wrong_method_is_405(gateway: Gateway, method: str, path: str) -> None:
    # anthropic-version: /v1/models answers OpenAI-shaped to clients without it
    response = httpx.request(
        method, gateway.url + path, timeout=20, headers={"anthropic-version": "2023-06-01"}
    )
    assert method in error_of(response, 405, "invalid_request_error")


def test_sdk_not_found_for_unknown_path(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError):
        client.get("/v1/nope", cast_to=object)


# ---------------------------------------------------------------- own gateways


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    """MAX_BODY_SIZE=2048, and provider 'dead' on a port where nothing listens."""
    port = free_port()
    env = {
        "DEAD_API_KEY": "k-dead",
        "DEAD_BASE_URL": f"http://127.0.0.1:{port}/v1",
        "MAX_BODY_SIZE": "2048",
        "VDM_DEFAULT_PROVIDER": "dead",
    }
    with run_gateway(env, tmp_path_factory.mktemp("limited")) as gw:
        yield gw


def test_connection_refused_is_502_naming_the_provider(limited: Gateway) -> None:
    gateway = limited
    message = error_of(post(gateway.url, request(model="dead:m")), 502, "api_error")
    assert "'dead'" in message
    assert "k-dead" not in message
    with (
        anthropic.Anthropic(base_url=gateway.url, api_key="x", max_retries=0) as client,
        pytest.raises(anthropic.APIStatusError) as raised,
    ):
        client.messages.create(model="whatever", max_tokens=5, messages=ASK)
    assert raised.value.status_code == 502
    assert "'dead'" in raised.value.message
    with (
        anthropic.Anthropic(base_url=gateway.url, api_key="x", max_retries=0) as client,
        pytest.raises(anthropic.APIStatusError) as raised,
        client.messages.stream(model="dead:m", max_tokens=5, messages=ASK) as stream,
    ):
        stream.get_final_message()
    assert raised.value.status_code == 502


def test_body_over_max_body_size_is_413(limited: Gateway) -> None:
    gateway = limited
    big = request(model="echo:m", messages=[{"role": "user", "content": "x" * 4000}])
    message = error_of(post(gateway.url, big), 413, "request_too_large")
    assert "2048" in message
    with anthropic.Anthropic(base_url=gateway.url, api_key="x", max_retries=0) as client:
        with pytest.raises(anthropic.RequestTooLargeError):
            client.messages.create(model="echo:m", max_tokens=5, messages=big["messages"])
        # a body under the limit is served
        small = client.messages.create(model="echo:m", max_tokens=5, messages=ASK)
        assert small.content[0].text == "Hi"  # type: ignore[union-attr]

    def chunked() -> Iterator[bytes]:  # no content-length: the limit still holds
        yield b'{"model": "echo:m", "max_tokens": 5, "messages": [{"role": "user", "content": "'
        for _ in range(5):
            yield b"y" * 1000
        yield b'"}]}'

    response = httpx.post(gateway.url + "/v1/messages", content=chunked(), timeout=20)
    error_of(response, 413, "request_too_large")


def test_upstream_timeout_is_504_naming_the_provider(
    fake_openai: FakeUpstream, tmp_path: Path
) -> None:
    env = {
        "SLOW_API_KEY": "k",
        "SLOW_BASE_URL": fake_openai.url + "/v1",
        "REQUEST_TIMEOUT": "1",
        "MAX_RETRIES": "0",
    }
    with run_gateway(env, tmp_path) as gateway:
        fake_openai.reply(Hang(10))
        message = error_of(post(gateway.url, request(model="slow:m")), 504, "api_error")
        assert "'slow'" in message
        fake_openai.reply(Hang(10))
        with (
            anthropic.Anthropic(base_url=gateway.url, api_key="k", max_retries=0) as client,
            pytest.raises(anthropic.APIStatusError) as raised,
        ):
            client.messages.create(model="slow:m", max_tokens=5, messages=ASK)
        assert raised.value.status_code == 504
        assert isinstance(raised.value, anthropic.GatewayTimeoutError)
        assert "'slow'" in raised.value.message
