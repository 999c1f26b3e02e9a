"""Bad input and upstream failures: Anthropic-shaped errors, right statuses,
the SDK's matching exception classes — never a 500, never a traceback."""

from __future__ import annotations

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
    sse,
)
from tests.support.gateway import Gateway, free_port, run_gateway

ASK = [{"role": "user", "content": "Hi"}]


def post_raw(gateway: Gateway, body: bytes | str, path: str = "/v1/messages") -> httpx.Response:
    content = body.encode() if isinstance(body, str) else body
    return httpx.post(gateway.url + path, content=content, timeout=20,
                      headers={"content-type": "application/json"})


def error_of(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    assert body["type"] == "error"
    assert set(body["error"]) == {"type", "message"}
    assert body["error"]["message"]
    return body["error"]


@pytest.mark.parametrize(("body", "needle"), [
    ("{not json", "not valid JSON"),
    ("", "empty"),
    ("[1, 2]", "JSON object"),
    ('{"messages": [], "max_tokens": 5}', "model"),
    ('{"model": "openai:m", "max_tokens": 5}', "messages"),
    ('{"model": "openai:m", "messages": []}', "max_tokens"),
    ('{"model": 7, "messages": [], "max_tokens": 5}', "model"),
    ('{"model": "openai:m", "messages": {}, "max_tokens": 5}', "messages"),
    ('{"model": "openai:m", "messages": [], "max_tokens": "5"}', "max_tokens"),
    ('{"model": "openai:m", "messages": [], "max_tokens": 0}', "max_tokens"),
    ('{"model": "openai:m", "messages": [], "max_tokens": 5, "stream": "yes"}', "stream"),
    ('{"model": "openai:m", "messages": [1], "max_tokens": 5}', "messages.0"),
    ('{"model": "openai:m", "messages": [{"role": "bot", "content": "x"}], "max_tokens": 5}',
     "role"),
    ('{"model": "openai:m", "messages": [{"role": "user", "content": 5}], "max_tokens": 5}',
     "content"),
    ('{"model": "openai:m", "messages": [{"role": "user", "content": [{"type": "image", '
     '"source": {"type": "base64"}}]}], "max_tokens": 5}', "messages.0.content.0"),
    ('{"model": "openai:m", "messages": [], "max_tokens": 5, "tools": [{"name": 3}]}', "tools"),
    ('{"model": "nope:m", "messages": [], "max_tokens": 5}', "known providers"),
])
def test_bad_requests_are_400_invalid_request_error(gateway: Gateway, body: str,
                                                    needle: str) -> None:
    response = post_raw(gateway, body)
    assert response.status_code == 400, response.text
    error = error_of(response)
    assert error["type"] == "invalid_request_error"
    assert needle in error["message"]


def test_unknown_provider_names_the_known_ones(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError) as raised:
        client.messages.create(model="nope:m", max_tokens=5, messages=ASK)
    message = str(raised.value)
    for name in ("openai", "plain", "ant", "echo"):
        assert name in message


@pytest.mark.parametrize(("status", "exception", "kind"), [
    (400, anthropic.BadRequestError, "invalid_request_error"),
    (401, anthropic.AuthenticationError, "authentication_error"),
    (403, anthropic.PermissionDeniedError, "permission_error"),
    (404, anthropic.NotFoundError, "not_found_error"),
    (429, anthropic.RateLimitError, "rate_limit_error"),
    (500, anthropic.InternalServerError, "api_error"),
    (503, anthropic.InternalServerError, "api_error"),
    (529, anthropic.InternalServerError, "overloaded_error"),
])
@pytest.mark.parametrize("model", ["openai:m", "ant:m"])
def test_upstream_statuses_map_to_sdk_exceptions(
    client: anthropic.Anthropic, fake_openai: FakeUpstream, fake_anthropic: FakeUpstream,
    status: int, exception: type[Exception], kind: str, model: str,
) -> None:
    fake = fake_openai if model.startswith("openai") else fake_anthropic
    fake.reply(JSONReply({"error": {"message": f"upstream says {status}", "type": "x"}},
                         status=status, headers={"retry-after": "7"} if status == 429 else {}))
    with pytest.raises(exception) as raised:
        client.messages.create(model=model, max_tokens=5, messages=ASK)
    error = raised.value
    assert isinstance(error, anthropic.APIStatusError)
    assert error.status_code == status
    assert error.body["error"]["type"] == kind  # type: ignore[index]
    assert f"upstream says {status}" in error.message
    if status == 429:
        assert error.response.headers["retry-after"] == "7"


def test_upstream_answering_non_json_is_502(client: anthropic.Anthropic,
                                            fake_openai: FakeUpstream) -> None:
    fake_openai.reply(RawReply(b"<html>gateway</html>", content_type="text/html"))
    with pytest.raises(anthropic.APIStatusError) as raised:
        client.messages.create(model="openai:m", max_tokens=5, messages=ASK)
    assert raised.value.status_code == 502
    assert "openai" in raised.value.message


def test_upstream_dropping_the_connection_is_502(client: anthropic.Anthropic,
                                                 fake_openai: FakeUpstream) -> None:
    fake_openai.reply(Drop())
    with pytest.raises(anthropic.APIStatusError) as raised:
        client.messages.create(model="openai:m", max_tokens=5, messages=ASK)
    assert raised.value.status_code == 502
    assert "'openai'" in raised.value.message


def test_stream_cut_before_the_end_is_an_error_event(client: anthropic.Anthropic,
                                                     fake_openai: FakeUpstream) -> None:
    fake_openai.reply(SSEReply(sse(chunk({"content": "half an ans"}), done=False)))
    with pytest.raises(anthropic.APIStatusError) as raised, client.messages.stream(
        model="openai:m", max_tokens=5, messages=ASK
    ) as stream:
        for _ in stream:
            pass
    assert "ended the stream" in str(raised.value)


def test_unknown_path_and_wrong_method(gateway: Gateway) -> None:
    response = httpx.get(gateway.url + "/v1/nothing-here")
    assert response.status_code == 404
    assert error_of(response)["type"] == "not_found_error"
    response = httpx.get(gateway.url + "/v1/messages")
    assert response.status_code == 405
    assert error_of(response)["type"] == "invalid_request_error"


@pytest.fixture(scope="module")
def small_gateway(tmp_path_factory: pytest.TempPathFactory) -> Any:
    dead = free_port()  # nothing listens here
    env = {"DEAD_API_KEY": "k", "DEAD_BASE_URL": f"http://127.0.0.1:{dead}/v1",
           "MAX_BODY_SIZE": "2048", "REQUEST_TIMEOUT": "1"}
    with run_gateway(env, tmp_path_factory.mktemp("small")) as gw:
        yield gw


def test_body_over_the_limit_is_413(small_gateway: Gateway) -> None:
    body = '{"model": "echo:e", "max_tokens": 5, "messages": [{"role": "user", "content": "%s"}]}'
    response = post_raw(small_gateway, body % ("x" * 4096))
    assert response.status_code == 413
    assert error_of(response)["type"] == "request_too_large"
    assert post_raw(small_gateway, body % "small").status_code == 200


def test_body_over_the_limit_without_content_length_is_413(small_gateway: Gateway) -> None:
    def chunks() -> Any:
        yield b'{"model": "echo:e", "max_tokens": 5, "messages": [{"role": "user", "content": "'
        for _ in range(8):
            yield b"x" * 1024
        yield b'"}]}'

    response = httpx.post(small_gateway.url + "/v1/messages", content=chunks(), timeout=20)
    assert response.status_code == 413


def test_connection_refused_names_the_provider(small_gateway: Gateway) -> None:
    with anthropic.Anthropic(base_url=small_gateway.url, api_key="k", max_retries=0) as client, \
            pytest.raises(anthropic.APIStatusError) as raised:
        client.messages.create(model="dead:m", max_tokens=5, messages=ASK)
    assert raised.value.status_code == 502
    assert raised.value.body["error"]["type"] == "api_error"  # type: ignore[index]
    assert "'dead'" in raised.value.message and "unreachable" in raised.value.message


def test_upstream_timeout_names_the_provider(fake_openai: FakeUpstream, tmp_path: Path) -> None:
    fake_openai.reply(Hang())
    env = {"SLOW_API_KEY": "k", "SLOW_BASE_URL": fake_openai.url + "/v1", "REQUEST_TIMEOUT": "1",
           "MAX_RETRIES": "0"}
    with run_gateway(env, tmp_path) as gateway, anthropic.Anthropic(
        base_url=gateway.url, api_key="k", max_retries=0
    ) as client, pytest.raises(anthropic.APIStatusError) as raised:
        client.messages.create(model="slow:m", max_tokens=5, messages=ASK)
    assert raised.value.status_code == 504
    assert "'slow'" in raised.value.message and "TIMEOUT" in raised.value.message
