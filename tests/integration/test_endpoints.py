"""Models, aliases, health, probes, count_tokens, routing precedence,
PROXY_API_KEY and the offline echo provider — through the real process."""

from __future__ import annotations

import base64
import struct
import zlib
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest

from tests.support.fakes import FakeUpstream, JSONReply, completion
from tests.support.gateway import Gateway, run_gateway

ASK = [{"role": "user", "content": "Hi"}]


def png(width: int, height: int) -> str:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    data = (b"\x89PNG\r\n\x1a\n" + struct.pack(">I", len(ihdr)) + chunk
            + struct.pack(">I", zlib.crc32(chunk)))
    return base64.b64encode(data).decode()


# ---------------------------------------------------------------- models, aliases, health


def test_models_list_in_anthropic_shape(client: anthropic.Anthropic) -> None:
    page = client.models.list()
    ids = [m.id for m in page.data]
    assert all(m.type == "model" for m in page.data)
    assert {"fast", "openai:fast", "ant:claude", "sonnet", "openai:sonnet", "echo:echo"} <= set(ids)
    raw = httpx.get(str(client.base_url.join("/v1/models")),
                    headers={"anthropic-version": "2023-06-01"}).json()
    assert raw["has_more"] is False
    assert raw["first_id"] == ids[0] and raw["last_id"] == ids[-1]


def test_aliases_by_provider(gateway: Gateway) -> None:
    body = httpx.get(gateway.url + "/v1/aliases").json()
    assert body["default_provider"] == "openai"
    assert body["aliases"]["openai"]["fast"] == "gpt-fast"
    assert body["aliases"]["openai"]["sonnet"] == "gpt-4o"
    assert body["aliases"]["ant"] == {"claude": "claude-x"}


def test_health_reports_providers_without_secrets(gateway: Gateway) -> None:
    response = httpx.get(gateway.url + "/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "healthy" and body["version"]
    assert body["providers"]["ant"]["api_format"] == "anthropic"
    assert body["providers"]["openai"]["api_format"] == "openai"
    assert body["providers"]["openai"]["api_key_configured"] is True
    for secret in ("sk-test-openai", "sk-test-plain", "sk-ant-test"):
        assert secret not in response.text


def test_probes(gateway: Gateway) -> None:
    assert httpx.get(gateway.url + "/live").json() == {"status": "alive"}
    assert httpx.get(gateway.url + "/ready").json() == {"status": "ready"}


# ---------------------------------------------------------------- count_tokens


def count(client: anthropic.Anthropic, **kwargs: Any) -> int:
    kwargs.setdefault("model", "openai:m")
    kwargs.setdefault("messages", ASK)
    return client.messages.count_tokens(**kwargs).input_tokens


def test_local_count_tokens_counts_everything(client: anthropic.Anthropic,
                                              fake_openai: FakeUpstream) -> None:
    base = count(client)
    assert base > 0
    assert count(client, system="You are a careful assistant. " * 20) > base + 100
    tools = [{"name": "get_weather", "description": "Weather for a city. " * 10,
              "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]
    assert count(client, tools=tools) > base + 40
    image = {"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                     "data": png(750, 750)}}]}
    assert count(client, messages=[image]) - count(client, messages=[
        {"role": "user", "content": []}]) == 750
    assert fake_openai.requests == []  # no network for a local count


def test_count_tokens_is_forwarded_to_anthropic_native(
    client: anthropic.Anthropic, fake_anthropic: FakeUpstream
) -> None:
    fake_anthropic.reply(JSONReply({"input_tokens": 4242}))
    assert count(client, model="ant:claude") == 4242
    sent = fake_anthropic.last
    assert sent.path == "/v1/messages/count_tokens"
    assert sent.json["model"] == "claude-x"
    assert sent.headers["x-api-key"] == "sk-ant-test"


# ---------------------------------------------------------------- routing precedence


@pytest.mark.parametrize(("model", "provider", "upstream_model"), [
    ("openai:gpt-x", "openai", "gpt-x"),
    ("plain:gpt-x", "plain", "gpt-x"),
    ("fast", "openai", "gpt-fast"),                 # user alias
    ("My-FAST-model", "openai", "gpt-fast"),         # case, -/_ and substring
    ("claude", "ant", "claude-x"),                   # another provider's user alias
    ("claude-sonnet-x", "ant", "claude-x"),        # user aliases beat fallbacks
    ("sonnet", "openai", "gpt-4o"),                  # default provider's fallback alias
    ("openai:haiku", "openai", "gpt-4o-mini"),
    ("gpt-unknown", "openai", "gpt-unknown"),        # default provider, as is
    ("ant:opus-test", "ant", "opus-test"),
])
def test_routing_precedence(client: anthropic.Anthropic, fake_openai: FakeUpstream,
                            fake_anthropic: FakeUpstream, model: str, provider: str,
                            upstream_model: str) -> None:
    from tests.support.fakes import anthropic_message

    fake_openai.reply(JSONReply(completion("ok")))
    fake_anthropic.reply(JSONReply(anthropic_message("ok")))
    raw = client.messages.with_raw_response.create(model=model, max_tokens=5, messages=ASK)
    assert raw.headers["x-vdm-provider"] == provider
    assert raw.headers["x-vdm-model"] == upstream_model
    fake = fake_anthropic if provider == "ant" else fake_openai
    assert fake.last.json["model"] == upstream_model


def test_default_provider_precedence_env_over_local_toml(
    fake_openai: FakeUpstream, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "vdm.toml").write_text('default-provider = "second"\n')
    home_config = tmp_path / "home" / ".config" / "vdm"
    home_config.mkdir(parents=True)
    (home_config / "vdm.toml").write_text('default-provider = "first"\n')
    env = {"FIRST_API_KEY": "k1", "FIRST_BASE_URL": fake_openai.url + "/v1",
           "SECOND_API_KEY": "k2", "SECOND_BASE_URL": fake_openai.url + "/v1"}
    for extra, expected in (({}, "second"), ({"VDM_DEFAULT_PROVIDER": "first"}, "first")):
        with run_gateway({**env, **extra}, tmp_path, cwd=work) as gateway:
            assert httpx.get(gateway.url + "/v1/aliases").json()["default_provider"] == expected
    (work / "vdm.toml").unlink()
    with run_gateway(env, tmp_path, cwd=work) as gateway:  # the user file applies
        assert httpx.get(gateway.url + "/v1/aliases").json()["default_provider"] == "first"


# ---------------------------------------------------------------- PROXY_API_KEY


def test_proxy_api_key(fake_openai: FakeUpstream, tmp_path: Path) -> None:
    env = {"PROXY_API_KEY": "gateway-secret"}
    with run_gateway(env, tmp_path) as gateway:
        for key in (None, "wrong"):
            headers = {"x-api-key": key} if key else {}
            response = httpx.post(gateway.url + "/v1/messages", headers=headers, json={
                "model": "echo:e", "max_tokens": 5, "messages": ASK})
            assert response.status_code == 401
            assert response.json()["error"]["type"] == "authentication_error"
        with anthropic.Anthropic(base_url=gateway.url, api_key="wrong", max_retries=0) as c, \
                pytest.raises(anthropic.AuthenticationError):
            c.messages.create(model="echo:e", max_tokens=5, messages=ASK)
        with anthropic.Anthropic(base_url=gateway.url, api_key="gateway-secret",
                                 max_retries=0) as c:
            assert c.messages.create(model="echo:e", max_tokens=5, messages=ASK).content
        bearer = httpx.post(gateway.url + "/v1/messages", json={
            "model": "echo:e", "max_tokens": 5, "messages": ASK},
            headers={"authorization": "Bearer gateway-secret"})
        assert bearer.status_code == 200
        assert httpx.get(gateway.url + "/live").status_code == 200
        assert httpx.get(gateway.url + "/ready").status_code == 200
        assert httpx.get(gateway.url + "/health").status_code == 401
        health = httpx.get(gateway.url + "/health", headers={"x-api-key": "gateway-secret"})
        assert health.status_code == 200 and "gateway-secret" not in health.text


# ---------------------------------------------------------------- echo


def test_echo_with_no_keys_at_all(tmp_path: Path) -> None:
    with run_gateway({}, tmp_path) as gateway, anthropic.Anthropic(
        base_url=gateway.url, api_key="anything", max_retries=0
    ) as client:
        message = client.messages.create(model="claude-sonnet-x", max_tokens=50, messages=[
            {"role": "user", "content": "hello offline world"}])
        assert message.content[0].text == "hello offline world"  # type: ignore[union-attr]
        assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
        with client.messages.stream(model="sonnet", max_tokens=50, messages=[
                {"role": "user", "content": "one two three four"}]) as stream:
            pieces = list(stream.text_stream)
        assert pieces == ["one ", "two ", "three ", "four"]
        tools = [{"name": "get_weather", "input_schema": {
            "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]
        message = client.messages.create(model="sonnet", max_tokens=50, tools=tools, messages=[
            {"role": "user", "content": "please use the get_weather tool"}])
        assert message.stop_reason == "tool_use"
        use = message.content[0]
        assert use.type == "tool_use" and use.name == "get_weather"
        assert use.input == {"city": "echo"}
        reply = client.messages.create(model="sonnet", max_tokens=50, tools=tools, messages=[
            {"role": "user", "content": "please use the get_weather tool"},
            {"role": "assistant", "content": [use.model_dump()]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                          "content": "sunny"}]}])
        assert "sunny" in reply.content[0].text  # type: ignore[union-attr]
