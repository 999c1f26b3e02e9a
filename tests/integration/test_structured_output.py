"""Structured output keeps its guarantee across formats: each SDK's
``parse()`` yields the object through every route, streamed or not, against
fake upstreams that honour the constraint they are given (and answer prose
when given none, as a model would).

Providers of this gateway: ``openai`` / ``plain`` (OpenAI format; ``plain``
converts the Responses API), ``ant`` (Anthropic-native), and ``oaitool`` /
``anttool`` / ``antprompt``, the same upstreams with
``{NAME}_STRUCTURED_OUTPUT`` ``tool`` or ``prompt``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pydantic
import pytest

from tests.conftest import upstream_env
from tests.support.fakes import FakeUpstream
from tests.support.gateway import Gateway, run_gateway
from tests.support.structured import anthropic_honouring, openai_honouring


class Weather(pydantic.BaseModel):
    city: str
    temperature: float


ANSWER = {"city": "Oslo", "temperature": 21.5}
ASK = "Weather in Oslo, as JSON please"


@pytest.fixture(scope="module")
def gw(
    fake_openai: FakeUpstream,
    fake_anthropic: FakeUpstream,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway]:
    env = {
        **upstream_env(fake_openai, fake_anthropic),
        "OAITOOL_API_KEY": "sk-oaitool",
        "OAITOOL_BASE_URL": fake_openai.url + "/v1",
        "OAITOOL_STRUCTURED_OUTPUT": "tool",
    }
    for name, mode in (("ANTTOOL", "tool"), ("ANTPROMPT", "prompt")):
        env |= {
            f"{name}_API_KEY": "sk-ant",
            f"{name}_BASE_URL": fake_anthropic.url,
            f"{name}_API_FORMAT": "anthropic",
            f"{name}_STRUCTURED_OUTPUT": mode,
        }
    with run_gateway(env, tmp_path_factory.mktemp("structured")) as gateway:
        yield gateway


@pytest.fixture
def oai(gw: Gateway) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gw.url + "/v1", api_key="k", max_retries=0, timeout=20) as c:
        yield c


@pytest.fixture
def ant(gw: Gateway) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=gw.url, api_key="k", max_retries=0, timeout=20) as c:
        yield c


@pytest.fixture(autouse=True)
def _honouring(fake_openai: FakeUpstream, fake_anthropic: FakeUpstream) -> None:
    fake_openai.responder = openai_honouring(ANSWER)
    fake_anthropic.responder = anthropic_honouring(ANSWER)


def _sent_constraint(fake_anthropic: FakeUpstream, mode: str) -> None:
    """What an Anthropic-native upstream was asked for."""
    body = fake_anthropic.last.json
    if mode == "native":
        schema = body["output_config"]["format"]["schema"]
        assert body["output_config"]["format"]["type"] == "json_schema"
        assert set(schema["properties"]) == {"city", "temperature"}
        assert schema["additionalProperties"] is False
        assert "tools" not in body
    else:
        (tool,) = body["tools"]
        assert body["tool_choice"] == {
            "type": "tool",
            "name": tool["name"],
            "disable_parallel_tool_use": True,
        }
        assert set(tool["input_schema"]["properties"]) == {"city", "temperature"}
        assert "output_config" not in body


# ---------------------------------------------------------------- openai chat.completions.parse


@pytest.mark.parametrize("provider", ["ant", "anttool", "openai", "oaitool"])
def test_chat_completions_parse(
    oai: openai.OpenAI, fake_anthropic: FakeUpstream, provider: str
) -> None:
    completion = oai.chat.completions.parse(
        model=f"{provider}:m",
        messages=[{"role": "user", "content": ASK}],
        response_format=Weather,
    )
    choice = completion.choices[0]
    assert choice.message.parsed == Weather(**ANSWER)
    assert choice.message.tool_calls in (None, [])
    assert choice.finish_reason == "stop"
    if provider.startswith("ant"):
        _sent_constraint(fake_anthropic, "tool" if provider == "anttool" else "native")


@pytest.mark.parametrize("provider", ["ant", "anttool", "oaitool"])
def test_chat_completions_stream_with_a_response_format(
    oai: openai.OpenAI, fake_openai: FakeUpstream, fake_anthropic: FakeUpstream, provider: str
) -> None:
    with oai.chat.completions.stream(
        model=f"{provider}:m",
        messages=[{"role": "user", "content": ASK}],
        response_format=Weather,
    ) as stream:
        events = list(stream)
        final = stream.get_final_completion()
    assert final.choices[0].message.parsed == Weather(**ANSWER)
    assert final.choices[0].finish_reason == "stop"
    assert not any(e.type.startswith("tool_calls") for e in events)
    if provider == "oaitool":
        body = fake_openai.last.json
        assert "response_format" not in body
        assert body["tool_choice"] == {
            "type": "function",
            "function": {"name": body["tools"][0]["function"]["name"]},
        }
        assert body["parallel_tool_calls"] is False


def test_json_object_to_anthropic_is_a_tool_taking_any_object(
    oai: openai.OpenAI, fake_anthropic: FakeUpstream
) -> None:
    """(Anthropic's output_config.format cannot say "any JSON object".)"""
    completion = oai.chat.completions.create(
        model="ant:m",
        messages=[{"role": "user", "content": ASK}],
        response_format={"type": "json_object"},
    )
    assert json.loads(completion.choices[0].message.content or "") == ANSWER
    assert completion.choices[0].finish_reason == "stop"
    body = fake_anthropic.last.json
    assert body["tools"][0]["input_schema"] == {"type": "object"}
    assert body["tool_choice"]["type"] == "tool"


def test_prompt_mode_asks_in_words(oai: openai.OpenAI, fake_anthropic: FakeUpstream) -> None:
    oai.chat.completions.create(
        model="antprompt:m",
        messages=[{"role": "user", "content": ASK}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "W", "schema": Weather.model_json_schema()},
        },
    )
    body = fake_anthropic.last.json
    assert "output_config" not in body and "tools" not in body
    assert "matches this JSON Schema" in body["system"]


# ---------------------------------------------------------------- openai responses.parse


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("provider", ["plain", "ant", "anttool"])
def test_responses_parse(
    oai: openai.OpenAI,
    fake_openai: FakeUpstream,
    fake_anthropic: FakeUpstream,
    provider: str,
    stream: bool,
) -> None:
    kwargs: dict[str, Any] = {"model": f"{provider}:m", "input": ASK, "text_format": Weather}
    if stream:
        with oai.responses.stream(**kwargs) as events:
            response = events.get_final_response()
    else:
        response = oai.responses.parse(**kwargs)
    assert response.output_parsed == Weather(**ANSWER)
    assert [item.type for item in response.output] == ["message"]
    assert response.status == "completed"
    if provider == "plain":
        fmt = fake_openai.last.json["response_format"]
        assert fmt["type"] == "json_schema"
        assert fmt["json_schema"]["name"] == "Weather" and fmt["json_schema"]["strict"] is True
    else:
        _sent_constraint(fake_anthropic, "tool" if provider == "anttool" else "native")


# ---------------------------------------------------------------- anthropic messages.parse


@pytest.mark.parametrize("provider", ["openai", "oaitool", "ant", "anttool"])
def test_messages_parse(
    ant: anthropic.Anthropic, fake_openai: FakeUpstream, fake_anthropic: FakeUpstream, provider: str
) -> None:
    message = ant.messages.parse(
        model=f"{provider}:m",
        max_tokens=200,
        messages=[{"role": "user", "content": ASK}],
        output_format=Weather,
    )
    assert message.parsed_output == Weather(**ANSWER)
    assert [block.type for block in message.content] == ["text"]
    assert message.stop_reason == "end_turn"
    if provider == "openai":
        spec = fake_openai.last.json["response_format"]["json_schema"]
        # Anthropic says nothing of strictness; this schema meets OpenAI's strict rules
        assert spec["strict"] is True and spec["name"] == "output"
        assert set(spec["schema"]["properties"]) == {"city", "temperature"}
    if provider == "anttool":  # (converted, not passed through: the provider takes a tool)
        _sent_constraint(fake_anthropic, "tool")
    if provider == "anttool":  # (converted, not passed through: the provider takes a tool)
        _sent_constraint(fake_anthropic, "tool")


@pytest.mark.parametrize("provider", ["openai", "oaitool"])
def test_messages_stream_with_an_output_format(ant: anthropic.Anthropic, provider: str) -> None:
    with ant.messages.stream(
        model=f"{provider}:m",
        max_tokens=200,
        messages=[{"role": "user", "content": ASK}],
        output_format=Weather,
    ) as stream:
        message = stream.get_final_message()
    assert message.parsed_output == Weather(**ANSWER)
    assert [block.type for block in message.content] == ["text"]
    assert message.stop_reason == "end_turn"


def test_claude_codes_title_request_keeps_its_schema_to_an_openai_upstream(
    gw: Gateway, fake_openai: FakeUpstream
) -> None:
    """The side request Claude Code sends for a session title (captured)."""
    from tests.integration.test_claude_code_shape import fixture, post

    captured = fixture("messages_title_request.json")
    captured["body"]["model"] = "openai:m"
    fake_openai.responder = openai_honouring({"title": "Weather in Oslo"})
    response = post(gw, captured, json.dumps(captured["body"]).encode())
    assert response.status_code == 200, response.text
    text = "".join(
        event["delta"]["text"]
        for line in response.text.splitlines()
        if line.startswith("data: ")
        and (event := json.loads(line[6:]))["type"] == "content_block_delta"
    )
    assert json.loads(text) == {"title": "Weather in Oslo"}
    assert fake_openai.last.json["response_format"] == {
        "type": "json_schema",
        "json_schema": {
            "name": "output",
            "schema": captured["body"]["output_config"]["format"]["schema"],
            "strict": True,
        },
    }
