"""Azure OpenAI providers: deployment URLs, ``api-version``, the ``api-key``
header, the model -> deployment mapping, the v1 API form, and their
configuration errors.  Real gateway processes against a fake upstream, driven
by the official ``openai`` (passthrough) and ``anthropic`` (conversion) SDKs."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from tests.support.fakes import (
    FakeUpstream,
    JSONReply,
    Recorded,
    SSEReply,
    completion,
    stream_of,
)
from tests.support.gateway import Gateway, run_gateway
from vdm.config import ConfigError, load_settings

ASK = [{"role": "user", "content": "Hi"}]
KEY = "az-secret-key"


@pytest.fixture(scope="module")
def fake_azure() -> Iterator[FakeUpstream]:
    fake = FakeUpstream("azure").start()
    yield fake
    fake.stop()


@pytest.fixture(autouse=True)
def _reset(fake_azure: FakeUpstream) -> Iterator[None]:
    fake_azure.reset()
    yield
    fake_azure.reset()


def azure_env(fake: FakeUpstream, **extra: str) -> dict[str, str]:
    return {
        "AZ_API_KEY": KEY,
        "AZ_BASE_URL": fake.url,
        "AZ_API_FORMAT": "azure",
        "AZ_DEPLOYMENTS": "gpt-4o=my-gpt4o, o3-mini=reasoner",
        "VDM_DEFAULT_PROVIDER": "az",
        **extra,
    }


@pytest.fixture(scope="module")
def azure_gateway(
    fake_azure: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    with run_gateway(azure_env(fake_azure), tmp_path_factory.mktemp("azure")) as gw:
        yield gw


@pytest.fixture(scope="module")
def v1_gateway(
    fake_azure: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    env = azure_env(fake_azure, AZ_BASE_URL=fake_azure.url + "/openai/v1")
    with run_gateway(env, tmp_path_factory.mktemp("azure-v1")) as gw:
        yield gw


def oai(gateway: Gateway) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=gateway.url + "/v1", api_key="client-key", max_retries=0, timeout=20
    )


def ant(gateway: Gateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=gateway.url, api_key="client-key", max_retries=0, timeout=20
    )


def assert_azure_call(sent: Recorded, deployment: str, version: str = "2024-10-21") -> None:
    assert sent.method == "POST"
    assert sent.path == f"/openai/deployments/{deployment}/chat/completions"
    assert sent.query == f"api-version={version}"
    assert sent.headers["api-key"] == KEY
    assert "authorization" not in sent.headers


# ---------------------------------------------------------------- OpenAI client: passthrough


def test_openai_sdk_non_streaming_uses_the_mapped_deployment(
    azure_gateway: Gateway, fake_azure: FakeUpstream
) -> None:
    fake_azure.reply(JSONReply(completion("Hello from Azure")))
    with oai(azure_gateway) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=ASK, temperature=0.3, max_tokens=50
        )
    answer = raw.parse()
    assert answer.choices[0].message.content == "Hello from Azure"
    assert raw.headers["x-vdm-provider"] == "az" and raw.headers["x-vdm-model"] == "gpt-4o"
    sent = fake_azure.last
    assert_azure_call(sent, "my-gpt4o")
    # the body is the client's: only the model is (re)written, nothing dropped or added
    assert sent.json == {"model": "gpt-4o", "messages": ASK, "temperature": 0.3, "max_tokens": 50}


def test_openai_sdk_streaming_is_relayed(azure_gateway: Gateway, fake_azure: FakeUpstream) -> None:
    fake_azure.reply(SSEReply(stream_of(completion("streamed from Azure"))))
    with oai(azure_gateway) as client:
        chunks = list(
            client.chat.completions.create(
                model="az:o3-mini",
                messages=ASK,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "streamed from Azure"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 20
    sent = fake_azure.last
    assert_azure_call(sent, "reasoner")
    assert sent.json["stream"] is True and sent.json["model"] == "o3-mini"


def test_an_unmapped_model_is_its_own_deployment(
    azure_gateway: Gateway, fake_azure: FakeUpstream
) -> None:
    fake_azure.reply(JSONReply(completion()))
    with oai(azure_gateway) as client:
        client.chat.completions.create(model="az:gpt-35-turbo", messages=ASK)
    assert_azure_call(fake_azure.last, "gpt-35-turbo")


@pytest.mark.parametrize("model", ["az:../admin", "az:a/b", "az:a b", "az:.."])
def test_a_model_that_cannot_name_a_deployment_is_a_400(
    azure_gateway: Gateway, fake_azure: FakeUpstream, model: str
) -> None:
    with oai(azure_gateway) as client, pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model=model, messages=ASK)
    # (a space is refused by the gateway's model-name rule before Azure's)
    assert ("model name" if " " in model else "deployment") in raised.value.message
    with ant(azure_gateway) as client, pytest.raises(anthropic.BadRequestError):
        client.messages.create(model=model, max_tokens=10, messages=ASK)  # type: ignore[arg-type]
    assert fake_azure.requests == []


def test_upstream_errors_keep_their_status(
    azure_gateway: Gateway, fake_azure: FakeUpstream
) -> None:
    fake_azure.reply(
        JSONReply(
            {
                "error": {
                    "code": "DeploymentNotFound",
                    "message": "The API deployment does not exist",
                }
            },
            status=404,
        )
    )
    with oai(azure_gateway) as client, pytest.raises(openai.NotFoundError) as raised:
        client.chat.completions.create(model="gpt-4o", messages=ASK)
    assert "does not exist" in raised.value.message
    assert KEY not in raised.value.message


# ---------------------------------------------------------------- Anthropic client: conversion


def test_anthropic_sdk_non_streaming_is_converted(
    azure_gateway: Gateway, fake_azure: FakeUpstream
) -> None:
    fake_azure.reply(JSONReply(completion("converted answer")))
    with ant(azure_gateway) as client:
        message = client.messages.create(
            model="gpt-4o", max_tokens=64, system="Be brief.", messages=ASK
        )  # type: ignore[arg-type]
    assert message.content[0].type == "text" and message.content[0].text == "converted answer"
    assert message.model == "gpt-4o" and message.stop_reason == "end_turn"
    assert message.usage.input_tokens == 25 and message.usage.output_tokens == 20
    sent = fake_azure.last
    assert_azure_call(sent, "my-gpt4o")
    body = sent.json
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    assert body["max_tokens"] == 64  # the generic field unless MAX_TOKENS_FIELD says otherwise
    assert body["model"] == "gpt-4o"


def test_anthropic_sdk_streaming_is_converted(
    azure_gateway: Gateway, fake_azure: FakeUpstream
) -> None:
    fake_azure.reply(SSEReply(stream_of(completion("streamed and converted"))))
    with (
        ant(azure_gateway) as client,
        client.messages.stream(
            model="az:o3-mini",
            max_tokens=64,
            messages=ASK,  # type: ignore[arg-type]
        ) as stream,
    ):
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "streamed and converted"
    assert final.usage.output_tokens == 20
    sent = fake_azure.last
    assert_azure_call(sent, "reasoner")
    assert sent.json["stream"] is True
    assert sent.json["stream_options"] == {"include_usage": True}


# ---------------------------------------------------------------- the v1 API form


def test_v1_form_names_the_deployment_in_the_body(
    v1_gateway: Gateway, fake_azure: FakeUpstream
) -> None:
    fake_azure.reply(JSONReply(completion("v1 passthrough")), JSONReply(completion("v1 converted")))
    with oai(v1_gateway) as client:
        answer = client.chat.completions.create(model="gpt-4o", messages=ASK)
    assert answer.choices[0].message.content == "v1 passthrough"
    with ant(v1_gateway) as client:
        message = client.messages.create(model="gpt-4o", max_tokens=10, messages=ASK)  # type: ignore[arg-type]
    assert message.content[0].text == "v1 converted"  # type: ignore[union-attr]
    for sent in fake_azure.requests:
        assert sent.path == "/openai/v1/chat/completions"
        assert sent.query == ""  # the v1 API takes no api-version
        assert sent.headers["api-key"] == KEY and "authorization" not in sent.headers
        assert sent.json["model"] == "my-gpt4o"
    assert len(fake_azure.requests) == 2


# ---------------------------------------------------------------- TOML, !PASSTHRU, health


def test_toml_configuration_and_passthrough_keys(fake_azure: FakeUpstream, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "vdm.toml").write_text(
        'default-provider = "corp"\n'
        "[providers.corp]\n"
        'api-key = "!PASSTHRU"\n'
        f'base-url = "{fake_azure.url}/openai"\n'
        'api-format = "azure"\n'
        'api-version = "2025-01-01-preview"\n'
        'max-tokens-field = "max_completion_tokens"\n'
        "[providers.corp.deployments]\n"
        '"gpt-4.1-mini" = "mini-prod"\n'
    )
    fake_azure.reply(JSONReply(completion()), JSONReply(completion()))
    with run_gateway({}, tmp_path, cwd=work) as gw:
        health = httpx.get(gw.url + "/health", timeout=10).json()["providers"]["corp"]
        with openai.OpenAI(
            base_url=gw.url + "/v1", api_key="the-clients-own-key", max_retries=0
        ) as client:
            client.chat.completions.create(model="gpt-4.1-mini", messages=ASK)
        with anthropic.Anthropic(
            base_url=gw.url, api_key="the-clients-own-key", max_retries=0
        ) as aclient:
            aclient.messages.create(model="gpt-4.1-mini", max_tokens=33, messages=ASK)  # type: ignore[arg-type]
        log = gw.log()
    assert health["api_format"] == "azure"
    assert health["api_version"] == "2025-01-01-preview"
    assert health["deployments"] == {"gpt-4.1-mini": "mini-prod"}
    for sent in fake_azure.requests:  # "/openai" on the base URL is not doubled
        assert sent.path == "/openai/deployments/mini-prod/chat/completions"
        assert sent.query == "api-version=2025-01-01-preview"
        assert sent.headers["api-key"] == "the-clients-own-key"
    assert fake_azure.requests[1].json["max_completion_tokens"] == 33
    assert "max_tokens" not in fake_azure.requests[1].json
    # the start-up summary shows the format and the mapping
    assert any(line.split()[:2] == ["corp", "azure"] for line in log.splitlines())
    assert "gpt-4.1-mini → mini-prod" in log and "2025-01-01-preview" in log
    assert "the-clients-own-key" not in log


# ---------------------------------------------------------------- configuration


def settings_problems(tmp_path: Path, **env: str) -> str:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    with pytest.raises(ConfigError) as raised:
        load_settings({"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".c"), **env}, cwd=tmp_path)
    return str(raised.value)


def test_azure_without_a_base_url_is_a_config_error(tmp_path: Path) -> None:
    message = settings_problems(tmp_path, AZURE_API_KEY="k")  # [providers.azure] is built in
    assert "AZURE_BASE_URL" in message and "openai.azure.com" in message
    message = settings_problems(tmp_path, CORP_API_KEY="k", CORP_API_FORMAT="azure")
    assert "CORP_BASE_URL" in message


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("gpt-4o", "expected model=deployment"),
        ("=dep", "expected model=deployment"),
        ("gpt-4o=", "deployment for 'gpt-4o'"),
        ("gpt-4o=my dep", "deployment for 'gpt-4o'"),
        ("gpt-4o=a/b", "deployment for 'gpt-4o'"),
        ("gpt-4o=a,gpt-4o=b", "mapped twice"),
    ],
)
def test_bad_deployment_syntax_is_a_config_error(tmp_path: Path, value: str, expected: str) -> None:
    message = settings_problems(
        tmp_path,
        AZURE_API_KEY="k",
        AZURE_BASE_URL="https://r.openai.azure.com",
        AZURE_DEPLOYMENTS=value,
    )
    assert "AZURE_DEPLOYMENTS" in message and expected in message


def test_problems_are_reported_together_and_name_their_source(tmp_path: Path) -> None:
    (tmp_path / "vdm.toml").write_text(
        '[providers.corp]\napi-key = "k"\nbase-url = "https://r.openai.azure.com"\n'
        '[providers.corp.deployments]\n"gpt-4o" = 7\n'
        '[providers.plain]\napi-key = "k"\nbase-url = "http://127.0.0.1:9/v1"\n'
        '[providers.plain.deployments]\n"gpt-4o" = "dep"\n'
    )
    message = settings_problems(tmp_path, AZURE_API_KEY="k", AZURE_DEPLOYMENTS="nope")
    assert "providers.corp.deployments.gpt-4o" in message and "vdm.toml" in message
    assert "deployments apply only to Azure providers" in message and "PLAIN_API_FORMAT" in message
    assert "AZURE_BASE_URL" in message  # and the env problem too, all at once


def test_a_good_mapping_is_read_from_env_over_toml(tmp_path: Path) -> None:
    (tmp_path / "vdm.toml").write_text(
        '[providers.azure]\napi-key = "k"\nbase-url = "https://r.openai.azure.com"\n'
        '[providers.azure.deployments]\n"gpt-4o" = "from-toml"\n"o1" = "o1-dep"\n'
    )
    home = tmp_path / "home"
    home.mkdir()
    settings = load_settings(
        {"HOME": str(home), "AZURE_DEPLOYMENTS": "gpt-4o=from-env"}, cwd=tmp_path
    )
    azure = settings.providers["azure"]
    assert azure.api_format == "azure" and azure.api_version == "2024-10-21"
    assert dict(azure.deployments) == {"gpt-4o": "from-env", "o1": "o1-dep"}


def test_gateway_refuses_to_start_on_bad_azure_config(tmp_path: Path) -> None:
    with (
        pytest.raises(RuntimeError) as raised,
        run_gateway({"AZ_API_KEY": "k", "AZ_API_FORMAT": "azure", "AZ_DEPLOYMENTS": "x"}, tmp_path),
    ):
        pass
    assert "AZ_BASE_URL" in str(raised.value) and "AZ_DEPLOYMENTS" in str(raised.value)


def test_sse_bytes_are_relayed_untouched(azure_gateway: Gateway, fake_azure: FakeUpstream) -> None:
    chunks = stream_of(completion("x y z"))
    fake_azure.reply(SSEReply(chunks))
    with httpx.stream(
        "POST",
        azure_gateway.url + "/v1/chat/completions",
        timeout=10,
        json={
            "model": "gpt-4o",
            "messages": ASK,
            "stream": True,
            "stream_options": {"include_usage": True},  # (else its chunk is kept from us)
        },
    ) as response:
        data = b"".join(response.iter_bytes())
    # as the upstream sent them, but for the model: the one the client asked for
    assert data == b"".join(chunks).replace(b'"model": "upstream-model"', b'"model":"gpt-4o"')
    assert json.loads(fake_azure.last.body)["stream"] is True
