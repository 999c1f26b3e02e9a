"""The gateway's own endpoints through the real process: health and probes,
model and alias lists, PROXY_API_KEY, local count_tokens, the offline echo
provider, and routing precedence end to end."""

from __future__ import annotations

import base64
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest

from tests.support.fakes import (
    FakeUpstream,
    JSONReply,
    SSEReply,
    anthropic_message,
    completion,
    stream_of,
)
from tests.support.gateway import Gateway, run_gateway

ASK = [{"role": "user", "content": "Hi"}]
SECRETS = ("sk-test-openai", "sk-test-plain", "sk-ant-test")


def png(width: int, height: int) -> str:
    ihdr = b"IHDR" + struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + ihdr + struct.pack(">I", zlib.crc32(ihdr))
    return base64.b64encode(data).decode()


# ---------------------------------------------------------------- health and probes


def test_health(gateway: Gateway) -> None:
    response = httpx.get(gateway.url + "/health", timeout=10)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "healthy"
    assert isinstance(body["version"], str) and body["version"]
    assert body["default_provider"] == "openai"
    providers = body["providers"]
    assert set(providers) == {"openai", "plain", "ant", "echo"}
    assert providers["openai"]["api_format"] == "openai"
    assert providers["plain"]["api_format"] == "openai"
    assert providers["ant"]["api_format"] == "anthropic"
    assert providers["echo"]["api_format"] == "echo"
    for name in ("openai", "plain", "ant", "echo"):
        assert providers[name]["api_key_configured"] is True
    for secret in SECRETS:
        assert secret not in response.text


def test_probes(gateway: Gateway) -> None:
    live = httpx.get(gateway.url + "/live", timeout=10)
    assert (live.status_code, live.json()) == (200, {"status": "alive"})
    ready = httpx.get(gateway.url + "/ready", timeout=10)
    assert (ready.status_code, ready.json()) == (200, {"status": "ready"})
    root = httpx.head(gateway.url + "/", timeout=10)  # Claude Code's first request
    assert root.status_code == 200
    assert httpx.get(gateway.url + "/", timeout=10).json()["name"] == "vdm"


# ---------------------------------------------------------------- models and aliases


def test_models_list_with_the_sdk(client: anthropic.Anthropic) -> None:
    page = client.models.list()
    ids = [m.id for m in page.data]
    assert len(ids) == len(set(ids))
    for model in page.data:
        assert model.type == "model"
        assert model.display_name
        assert model.created_at is not None
    # user aliases, the default provider's fallback aliases bare and prefixed,
    # other providers' aliases prefixed, and echo
    assert {
        "fast",
        "openai:fast",
        "sonnet",
        "openai:sonnet",
        "haiku",
        "opus",
        "ant:claude",
        "echo:echo",
    } <= set(ids)
    assert "claude" not in ids  # ant is not the default provider
    fast = next(m for m in page.data if m.id == "fast")
    assert "gpt-fast" in fast.display_name


def test_models_list_raw_shapes(gateway: Gateway) -> None:
    anthropic_shape = httpx.get(
        gateway.url + "/v1/models", timeout=10, headers={"anthropic-version": "2023-06-01"}
    ).json()
    assert anthropic_shape["has_more"] is False
    data = anthropic_shape["data"]
    assert anthropic_shape["first_id"] == data[0]["id"]
    assert anthropic_shape["last_id"] == data[-1]["id"]
    openai_shape = httpx.get(gateway.url + "/v1/models", timeout=10).json()
    assert openai_shape["object"] == "list"
    assert {m["id"] for m in openai_shape["data"]} == {m["id"] for m in data}


def test_aliases(gateway: Gateway) -> None:
    response = httpx.get(gateway.url + "/v1/aliases", timeout=10)
    assert response.status_code == 200
    body = response.json()
    assert body["default_provider"] == "openai"
    aliases = body["aliases"]
    assert aliases["openai"]["fast"] == "gpt-fast"
    assert aliases["openai"]["sonnet"] == "gpt-4o"  # package fallback
    assert aliases["openai"]["haiku"] == "gpt-4o-mini"
    assert aliases["ant"] == {"claude": "claude-x"}
    assert "plain" not in aliases  # no fallbacks for an unknown vendor


# ---------------------------------------------------------------- local count_tokens


def count_raw(gateway: Gateway, **fields: Any) -> httpx.Response:
    fields.setdefault("model", "openai:m")
    fields.setdefault("messages", ASK)
    return httpx.post(gateway.url + "/v1/messages/count_tokens", json=fields, timeout=10)


def count(client: anthropic.Anthropic, **fields: Any) -> int:
    fields.setdefault("model", "openai:m")
    fields.setdefault("messages", ASK)
    return client.messages.count_tokens(**fields).input_tokens


def test_local_count_tokens(
    gateway: Gateway, client: anthropic.Anthropic, fake_openai: FakeUpstream
) -> None:
    response = count_raw(gateway)
    assert response.status_code == 200
    assert response.headers["x-vdm-provider"] == "openai"
    body = response.json()
    assert set(body) == {"input_tokens"}
    base = body["input_tokens"]
    assert isinstance(base, int) and base > 0
    assert count(client) == base

    assert count(client, system="You are terse. " * 40) >= base + 100
    tools = [
        {
            "name": "get_weather",
            "description": "Current weather in a city. " * 8,
            "input_schema": {
                "type": "object",
                "properties": {"city": {"type": "string", "description": "City name"}},
                "required": ["city"],
            },
        }
    ]
    with_tool = count(client, tools=tools)
    assert with_tool > base + 50
    assert count(client, tools=tools * 2) > with_tool
    longer = count(
        client,
        messages=[
            *ASK,
            {"role": "assistant", "content": "Hello! " * 50},
            {"role": "user", "content": "More"},
        ],
    )
    assert longer > base + 80
    image = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Hi"},
                {
                    "type": "image",
                    "source": {"type": "base64", "media_type": "image/png", "data": png(1000, 750)},
                },
            ],
        }
    ]
    assert count(client, messages=image) == base + 1000  # 1000 * 750 / 750
    by_url = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Hi"},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
            ],
        }
    ]
    assert count(client, messages=by_url) == base + 1600
    assert fake_openai.requests == []  # counted locally, no upstream call


def test_count_tokens_for_echo_and_aliases(
    client: anthropic.Anthropic, fake_openai: FakeUpstream
) -> None:
    assert count(client, model="echo:x") == count(client, model="openai:x")
    assert count(client, model="fast") == count(client, model="openai:x")
    assert fake_openai.requests == []


# ---------------------------------------------------------------- routing end to end


@pytest.mark.parametrize(
    ("model", "provider", "upstream_model"),
    [
        ("fast", "openai", "gpt-fast"),  # user alias of the default
        ("my-FAST_model", "openai", "gpt-fast"),  # case, -/_ and substring
        ("claude", "ant", "claude-x"),  # user alias of another provider
        ("claude-sonnet-zz", "ant", "claude-x"),  # user alias beats the fallback
        ("sonnet", "openai", "gpt-4o"),  # default provider's fallback alias
        ("haiku", "openai", "gpt-4o-mini"),
        ("openai:opus", "openai", "gpt-4.1"),
        ("plain:sonnet", "plain", "sonnet"),  # plain has no fallback aliases
        ("plain:fast", "plain", "fast"),  # openai's user alias stays in openai
        ("plain:gpt-x", "plain", "gpt-x"),
        ("ant:some-model", "ant", "some-model"),
        ("ant:sonnet", "ant", "sonnet"),  # ant has no fallback aliases
        ("gpt-unknown-1", "openai", "gpt-unknown-1"),  # bare unknown: default, as is
    ],
)
def test_routing_precedence(
    client: anthropic.Anthropic,
    fake_openai: FakeUpstream,
    fake_anthropic: FakeUpstream,
    model: str,
    provider: str,
    upstream_model: str,
) -> None:
    fake_openai.reply(JSONReply(completion("ok")))
    fake_anthropic.reply(JSONReply(anthropic_message("ok")))
    raw = client.messages.with_raw_response.create(model=model, max_tokens=5, messages=ASK)
    assert raw.headers["x-vdm-provider"] == provider
    assert raw.headers["x-vdm-model"] == upstream_model
    fake = fake_anthropic if provider == "ant" else fake_openai
    other = fake_openai if provider == "ant" else fake_anthropic
    assert len(fake.requests) == 1 and other.requests == []
    assert fake.last.json["model"] == upstream_model
    if provider != "ant":
        key = "sk-test-plain" if provider == "plain" else "sk-test-openai"
        assert fake.last.headers["authorization"] == f"Bearer {key}"
    message = raw.parse()
    assert message.model == model  # passthrough or conversion: the model the client asked for


def test_routing_headers_on_streams(client: anthropic.Anthropic, fake_openai: FakeUpstream) -> None:
    fake_openai.reply(SSEReply(stream_of(completion("streamed"))))
    with client.messages.with_streaming_response.create(
        model="fast", max_tokens=5, messages=ASK, stream=True
    ) as response:
        assert response.headers["x-vdm-provider"] == "openai"
        assert response.headers["x-vdm-model"] == "gpt-fast"
        text = "".join(response.iter_text())
    assert "event: message_stop" in text
    assert fake_openai.last.json["model"] == "gpt-fast"


# ---------------------------------------------------------------- PROXY_API_KEY


@pytest.fixture(scope="module")
def guarded(
    fake_openai: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    env = {
        "PROXY_API_KEY": "gateway-secret",
        "OPENAI_API_KEY": "sk-upstream-only",
        "OPENAI_BASE_URL": fake_openai.url + "/v1",
    }
    with run_gateway(env, tmp_path_factory.mktemp("guarded")) as gw:
        yield gw


BODY = {"model": "echo:e", "max_tokens": 5, "messages": ASK}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"x-api-key": "wrong"},
        {"authorization": "Bearer wrong"},
        {"authorization": "gateway-secret"},
        {"x-api-key": "gateway-secret-and-more"},
        {"x-api-key": "gateway-secre"},
        {"authorization": "Basic gateway-secret"},
    ],
    ids=["none", "wrong-x-api-key", "wrong-bearer", "no-scheme", "longer", "shorter", "basic"],
)
@pytest.mark.parametrize("path", ["/v1/messages", "/v1/messages/count_tokens"])
def test_proxy_key_refuses(guarded: Gateway, headers: dict[str, str], path: str) -> None:
    response = httpx.post(guarded.url + path, json=BODY, headers=headers, timeout=10)
    assert response.status_code == 401
    body = response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "authentication_error"
    assert "gateway-secret" not in response.text


def test_proxy_key_with_the_sdk(guarded: Gateway, fake_openai: FakeUpstream) -> None:
    with anthropic.Anthropic(base_url=guarded.url, api_key="wrong", max_retries=0) as client:
        with pytest.raises(anthropic.AuthenticationError) as raised:
            client.messages.create(model="echo:e", max_tokens=5, messages=ASK)
        assert raised.value.status_code == 401
        with pytest.raises(anthropic.AuthenticationError):
            client.models.list()
    with anthropic.Anthropic(
        base_url=guarded.url, api_key="gateway-secret", max_retries=0
    ) as client:
        assert client.messages.create(model="echo:e", max_tokens=5, messages=ASK).content
        assert client.models.list().data
        # the upstream gets the provider's key, never the gateway's
        fake_openai.reply(JSONReply(completion("ok")))
        client.messages.create(model="openai:m", max_tokens=5, messages=ASK)
        assert fake_openai.last.headers["authorization"] == "Bearer sk-upstream-only"
        assert "gateway-secret" not in str(fake_openai.last.headers)


@pytest.mark.parametrize(
    "headers",
    [
        {"x-api-key": "gateway-secret"},
        {"authorization": "Bearer gateway-secret"},
        {"authorization": "bearer gateway-secret"},
    ],
)
def test_proxy_key_accepted_both_ways(guarded: Gateway, headers: dict[str, str]) -> None:
    response = httpx.post(guarded.url + "/v1/messages", json=BODY, headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    assert response.json()["content"][0]["text"] == "Hi"
    health = httpx.get(guarded.url + "/health", headers=headers, timeout=10)
    assert health.status_code == 200
    assert "gateway-secret" not in health.text and "sk-upstream-only" not in health.text


def test_proxy_key_open_and_closed_paths(guarded: Gateway) -> None:
    assert httpx.get(guarded.url + "/live", timeout=10).status_code == 200
    assert httpx.get(guarded.url + "/ready", timeout=10).status_code == 200
    for path in ("/health", "/v1/models", "/v1/aliases"):
        response = httpx.get(guarded.url + path, timeout=10)
        assert response.status_code == 401, path
        assert response.json()["error"]["type"] == "authentication_error"


# ---------------------------------------------------------------- echo, zero config


@pytest.fixture(scope="module")
def bare(tmp_path_factory: pytest.TempPathFactory) -> Iterator[anthropic.Anthropic]:
    with (
        run_gateway({}, tmp_path_factory.mktemp("bare")) as gateway,
        anthropic.Anthropic(
            base_url=gateway.url, api_key="anything", max_retries=0, timeout=20
        ) as client,
    ):
        yield client


def test_echo_is_the_default_without_keys(bare: anthropic.Anthropic) -> None:
    raw = bare.messages.with_raw_response.create(
        model="claude-sonnet-x", max_tokens=100, messages=ASK
    )
    assert raw.headers["x-vdm-provider"] == "echo"
    health = httpx.get(str(bare.base_url).rstrip("/") + "/health", timeout=10).json()
    assert list(health["providers"]) == ["echo"]
    assert health["default_provider"] == "echo"


def test_echo_replies_with_the_last_user_text(bare: anthropic.Anthropic) -> None:
    message = bare.messages.create(
        model="anything",
        max_tokens=100,
        messages=[
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "an answer"},
            {"role": "user", "content": [{"type": "text", "text": "hello offline world"}]},
        ],
    )
    assert message.content[0].type == "text"
    assert message.content[0].text == "hello offline world"  # type: ignore[union-attr]
    assert message.stop_reason == "end_turn"
    assert message.model == "anything"
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0


def test_echo_streams_word_by_word(bare: anthropic.Anthropic) -> None:
    with bare.messages.stream(
        model="sonnet", max_tokens=100, messages=[{"role": "user", "content": "one two three four"}]
    ) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert pieces == ["one ", "two ", "three ", "four"]
    assert final.content[0].text == "one two three four"  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn"


def test_echo_uses_a_tool_when_asked(bare: anthropic.Anthropic) -> None:
    tools = [
        {
            "name": "get_weather",
            "description": "Weather",
            "input_schema": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                "required": ["city", "days"],
            },
        }
    ]
    message = bare.messages.create(
        model="m",
        max_tokens=100,
        tools=tools,
        messages=[{"role": "user", "content": "Please use the get_weather tool for Paris"}],
    )
    assert message.stop_reason == "tool_use"
    use = message.content[0]
    assert use.type == "tool_use"
    assert use.name == "get_weather"  # type: ignore[union-attr]
    assert use.id.startswith("toolu_")  # type: ignore[union-attr]
    assert use.input == {"city": "echo", "days": 0}  # type: ignore[union-attr]
    with bare.messages.stream(
        model="m",
        max_tokens=100,
        tools=tools,
        messages=[{"role": "user", "content": "use the get_weather tool"}],
    ) as stream:
        final = stream.get_final_message()
    assert final.content[0].type == "tool_use" and final.stop_reason == "tool_use"
    # without tools, the same words are just echoed
    plain = bare.messages.create(
        model="m",
        max_tokens=100,
        messages=[{"role": "user", "content": "use the get_weather tool"}],
    )
    assert plain.content[0].text == "use the get_weather tool"  # type: ignore[union-attr]


# ---------------------------------------------------------------- count_tokens forwarding, default-provider layers


def test_count_tokens_is_forwarded_to_anthropic_native(
    client: anthropic.Anthropic, fake_anthropic: FakeUpstream
) -> None:
    fake_anthropic.reply(JSONReply({"input_tokens": 4242}))
    answer = client.messages.count_tokens(model="ant:claude", messages=ASK)  # type: ignore[arg-type]
    assert answer.input_tokens == 4242
    sent = fake_anthropic.last
    assert sent.path == "/v1/messages/count_tokens"
    assert sent.json["model"] == "claude-x"
    assert sent.headers["x-api-key"] == "sk-ant-test"


def test_default_provider_precedence_env_over_local_toml(
    fake_openai: FakeUpstream, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "vdm.toml").write_text('default-provider = "second"\n')
    home_config = tmp_path / "home" / ".config" / "vdm"
    home_config.mkdir(parents=True)
    (home_config / "vdm.toml").write_text('default-provider = "first"\n')
    env = {
        "FIRST_API_KEY": "k1",
        "FIRST_BASE_URL": fake_openai.url + "/v1",
        "SECOND_API_KEY": "k2",
        "SECOND_BASE_URL": fake_openai.url + "/v1",
    }
    for extra, expected in (({}, "second"), ({"VDM_DEFAULT_PROVIDER": "first"}, "first")):
        with run_gateway({**env, **extra}, tmp_path, cwd=work) as gateway:
            assert httpx.get(gateway.url + "/v1/aliases").json()["default_provider"] == expected
    (work / "vdm.toml").unlink()
    with run_gateway(env, tmp_path, cwd=work) as gateway:  # the user file applies
        assert httpx.get(gateway.url + "/v1/aliases").json()["default_provider"] == "first"
