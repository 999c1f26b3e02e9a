"""The client libraries people drive a gateway with keep working across
conversion in both directions: LangChain's ``ChatOpenAI`` against an
Anthropic-native upstream and ``ChatAnthropic`` against an OpenAI-compatible
one (tools, streaming, usage), the OpenAI Agents SDK's streamed runs (its
Responses and Chat Completions models) against an Anthropic-native upstream,
and pydantic-ai's typed output both ways.

Each library is skipped with the reason when it is not installed, except
under ``CI=true``, where its absence fails (the ``dev`` extra brings them).
Every upstream answer is scripted by the fakes: a first turn calls
``get_weather``, the turn after its result answers in text.
"""

from __future__ import annotations

import asyncio
import importlib
import os
from collections.abc import Iterator
from typing import Any

import pydantic
import pytest

from tests.support.fakes import (
    FakeUpstream,
    JSONReply,
    Recorded,
    Reply,
    SSEReply,
    anthropic_message,
    anthropic_stream_of,
    completion,
    stream_of,
    tool_call,
)
from tests.support.gateway import Gateway
from tests.support.structured import anthropic_honouring, openai_honouring

ANSWER = "It is sunny in Oslo, 21 degrees."
USAGE = {"prompt_tokens": 30, "completion_tokens": 12, "total_tokens": 42}


def need(module: str) -> Any:
    """Import ``module``, or skip (fail under CI=true) saying it is missing."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        message = f"{module} is not installed ({exc}); pip install -e '.[dev]' brings it"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def get_weather(city: str) -> str:
    """Current weather of a city."""
    return f"sunny in {city}, 21 degrees"


def _has_result_openai(body: dict[str, Any]) -> bool:
    return any(m.get("role") == "tool" for m in body["messages"])


def _has_result_anthropic(body: dict[str, Any]) -> bool:
    return any(
        isinstance(m["content"], list) and any(b.get("type") == "tool_result" for b in m["content"])
        for m in body["messages"]
    )


def openai_agent_turns(recorded: Recorded) -> Reply:
    """An OpenAI-compatible model: calls get_weather, then answers."""
    body = recorded.json
    if _has_result_openai(body) or not body.get("tools"):
        message = completion(ANSWER, usage=USAGE)
    else:
        call = tool_call("call_w1", body["tools"][0]["function"]["name"], '{"city": "Oslo"}')
        message = completion(None, tool_calls=[call], finish="tool_calls", usage=USAGE)
    return SSEReply(stream_of(message)) if body.get("stream") else JSONReply(message)


def anthropic_agent_turns(recorded: Recorded) -> Reply:
    """An Anthropic model: calls get_weather, then answers."""
    body = recorded.json
    if _has_result_anthropic(body) or not body.get("tools"):
        message = anthropic_message(ANSWER)
    else:
        block = {
            "type": "tool_use",
            "id": "toolu_w1",
            "name": body["tools"][0]["name"],
            "input": {"city": "Oslo"},
        }
        message = anthropic_message(content=[block], stop_reason="tool_use")
    return SSEReply(anthropic_stream_of(message)) if body.get("stream") else JSONReply(message)


@pytest.fixture(autouse=True)
def _turns(fake_openai: FakeUpstream, fake_anthropic: FakeUpstream) -> Iterator[None]:
    fake_openai.responder = openai_agent_turns
    fake_anthropic.responder = anthropic_agent_turns
    yield


# ---------------------------------------------------------------- LangChain


def test_langchain_chat_openai_to_an_anthropic_upstream(
    gateway: Gateway, fake_anthropic: FakeUpstream
) -> None:
    lc_openai = need("langchain_openai")
    messages = need("langchain_core.messages")
    tools = need("langchain_core.tools")
    weather = tools.tool(get_weather)
    model = lc_openai.ChatOpenAI(
        model="ant:claude-x",
        base_url=gateway.url + "/v1",
        api_key="k",
        max_retries=0,
        timeout=10,
        stream_usage=True,
    ).bind_tools([weather])
    history: list[Any] = [messages.HumanMessage("Weather in Oslo?")]
    first = model.invoke(history)
    assert [(c["name"], c["args"]) for c in first.tool_calls] == [("get_weather", {"city": "Oslo"})]
    assert first.usage_metadata["input_tokens"] == 28  # 25 + 3 cache reads
    history += [
        first,
        messages.ToolMessage(
            weather.invoke({"city": "Oslo"}), tool_call_id=first.tool_calls[0]["id"]
        ),
    ]
    chunks = list(model.stream(history))
    final = chunks[0]
    for chunk in chunks[1:]:
        final = final + chunk
    assert len(chunks) > 2 and final.content == ANSWER
    assert final.usage_metadata is not None
    assert final.usage_metadata["output_tokens"] == 20
    sent = fake_anthropic.last.json
    assert sent["messages"][-1]["content"][0]["type"] == "tool_result"
    assert sent["messages"][-1]["content"][0]["tool_use_id"] == first.tool_calls[0]["id"]


def test_langchain_chat_anthropic_to_an_openai_upstream(
    gateway: Gateway, fake_openai: FakeUpstream
) -> None:
    lc_anthropic = need("langchain_anthropic")
    messages = need("langchain_core.messages")
    tools = need("langchain_core.tools")
    weather = tools.tool(get_weather)
    model = lc_anthropic.ChatAnthropic(
        model="openai:gpt-x",
        base_url=gateway.url,
        api_key="k",
        max_retries=0,
        timeout=10,
        max_tokens=200,
    ).bind_tools([weather])
    history: list[Any] = [messages.HumanMessage("Weather in Oslo?")]
    chunks = list(model.stream(history))
    first = chunks[0]
    for chunk in chunks[1:]:
        first = first + chunk
    assert [(c["name"], c["args"]) for c in first.tool_calls] == [("get_weather", {"city": "Oslo"})]
    assert (
        first.usage_metadata["input_tokens"] == 30 and first.usage_metadata["output_tokens"] == 12
    )
    history += [
        first,
        messages.ToolMessage(
            weather.invoke({"city": "Oslo"}), tool_call_id=first.tool_calls[0]["id"]
        ),
    ]
    second = model.invoke(history)
    assert second.text == ANSWER
    assert second.usage_metadata["total_tokens"] == 42
    sent = fake_openai.last.json
    assert sent["messages"][-1] == {
        "role": "tool",
        "tool_call_id": "call_w1",
        "content": "sunny in Oslo, 21 degrees",
    }


# ---------------------------------------------------------------- OpenAI Agents SDK


@pytest.mark.parametrize("api", ["responses", "chat_completions"])
def test_agents_sdk_streamed_run_against_an_anthropic_upstream(
    gateway: Gateway, fake_anthropic: FakeUpstream, api: str
) -> None:
    agents = need("agents")
    openai = need("openai")
    agents.set_tracing_disabled(True)

    async def run() -> tuple[str, list[str]]:
        client = openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key="k", max_retries=0)
        model_class = (
            agents.OpenAIResponsesModel if api == "responses" else agents.OpenAIChatCompletionsModel
        )
        agent = agents.Agent(
            name="weather",
            instructions="Answer with the tool's help.",
            tools=[agents.function_tool(get_weather)],
            model=model_class(model="ant:claude-x", openai_client=client),
        )
        result = agents.Runner.run_streamed(agent, "Weather in Oslo?")
        kinds = []
        async for event in result.stream_events():
            if event.type == "run_item_stream_event":
                kinds.append(event.item.type)
        await client.close()
        return str(result.final_output), kinds

    final, kinds = asyncio.run(asyncio.wait_for(run(), 20))
    assert final == ANSWER
    assert kinds == ["tool_call_item", "tool_call_output_item", "message_output_item"]
    results = [
        block
        for m in fake_anthropic.last.json["messages"]
        if isinstance(m["content"], list)
        for block in m["content"]
        if block["type"] == "tool_result"
    ]
    assert results[0]["content"][0]["text"] == "sunny in Oslo, 21 degrees"


# ---------------------------------------------------------------- pydantic-ai


class Forecast(pydantic.BaseModel):
    city: str
    summary: str


FORECAST = {"city": "Oslo", "summary": "sunny"}


def test_pydantic_ai_typed_output_through_an_anthropic_upstream(
    gateway: Gateway, fake_anthropic: FakeUpstream
) -> None:
    """pydantic-ai's default typed output is an output tool the model calls."""
    pai = need("pydantic_ai")
    pai_openai = need("pydantic_ai.models.openai")
    pai_providers = need("pydantic_ai.providers.openai")

    def forecast_turn(recorded: Recorded) -> Reply:
        body = recorded.json
        name = body["tools"][-1]["name"]
        block = {"type": "tool_use", "id": "toolu_f1", "name": name, "input": FORECAST}
        message = anthropic_message(content=[block], stop_reason="tool_use")
        return SSEReply(anthropic_stream_of(message)) if body.get("stream") else JSONReply(message)

    fake_anthropic.responder = forecast_turn
    model = pai_openai.OpenAIChatModel(
        "ant:claude-x",
        provider=pai_providers.OpenAIProvider(base_url=gateway.url + "/v1", api_key="k"),
    )
    agent = pai.Agent(model, output_type=Forecast)
    result = agent.run_sync("Forecast for Oslo")
    assert result.output == Forecast(**FORECAST)
    assert result.usage.input_tokens == 28


def test_pydantic_ai_tools_through_an_openai_upstream(gateway: Gateway) -> None:
    pai = need("pydantic_ai")
    pai_anthropic = need("pydantic_ai.models.anthropic")
    pai_providers = need("pydantic_ai.providers.anthropic")
    anthropic = need("anthropic")
    client = anthropic.AsyncAnthropic(base_url=gateway.url, api_key="k", max_retries=0)
    model = pai_anthropic.AnthropicModel(
        "openai:gpt-x", provider=pai_providers.AnthropicProvider(anthropic_client=client)
    )
    agent = pai.Agent(model, tools=[get_weather])

    async def run() -> str:
        async with agent.run_stream("Weather in Oslo?") as result:
            return "".join([text async for text in result.stream_text(delta=True)])

    assert asyncio.run(asyncio.wait_for(run(), 20)) == ANSWER


# ---------------------------------------------------------------- typed output as a constraint


def test_langchain_with_structured_output_both_ways(
    gateway: Gateway, fake_openai: FakeUpstream, fake_anthropic: FakeUpstream
) -> None:
    """ChatOpenAI's default is response_format json_schema; ChatAnthropic's
    ``json_schema`` method is output_config.format."""
    lc_openai = need("langchain_openai")
    lc_anthropic = need("langchain_anthropic")
    fake_openai.responder = openai_honouring(FORECAST)
    fake_anthropic.responder = anthropic_honouring(FORECAST)
    to_anthropic = lc_openai.ChatOpenAI(
        model="ant:claude-x", base_url=gateway.url + "/v1", api_key="k", max_retries=0, timeout=10
    ).with_structured_output(Forecast)
    assert to_anthropic.invoke("Forecast for Oslo") == Forecast(**FORECAST)
    assert fake_anthropic.last.json["output_config"]["format"]["type"] == "json_schema"
    to_openai = lc_anthropic.ChatAnthropic(
        model="openai:gpt-x", base_url=gateway.url, api_key="k", max_retries=0, timeout=10
    ).with_structured_output(Forecast, method="json_schema")
    assert to_openai.invoke("Forecast for Oslo") == Forecast(**FORECAST)
    assert fake_openai.last.json["response_format"]["type"] == "json_schema"


def test_agents_sdk_output_type_against_an_anthropic_upstream(
    gateway: Gateway, fake_anthropic: FakeUpstream
) -> None:
    agents = need("agents")
    openai = need("openai")
    agents.set_tracing_disabled(True)
    fake_anthropic.responder = anthropic_honouring(FORECAST)

    async def run() -> Any:
        client = openai.AsyncOpenAI(base_url=gateway.url + "/v1", api_key="k", max_retries=0)
        agent = agents.Agent(
            name="forecaster",
            output_type=Forecast,
            model=agents.OpenAIResponsesModel(model="ant:claude-x", openai_client=client),
        )
        result = agents.Runner.run_streamed(agent, "Forecast for Oslo")
        async for _ in result.stream_events():
            pass
        await client.close()
        return result.final_output

    assert asyncio.run(asyncio.wait_for(run(), 20)) == Forecast(**FORECAST)
    assert fake_anthropic.last.json["output_config"]["format"]["type"] == "json_schema"


def test_pydantic_ai_native_output_through_an_anthropic_upstream(
    gateway: Gateway, fake_anthropic: FakeUpstream
) -> None:
    pai = need("pydantic_ai")
    pai_openai = need("pydantic_ai.models.openai")
    pai_providers = need("pydantic_ai.providers.openai")
    fake_anthropic.responder = anthropic_honouring(FORECAST)
    model = pai_openai.OpenAIChatModel(
        "ant:claude-x",
        provider=pai_providers.OpenAIProvider(base_url=gateway.url + "/v1", api_key="k"),
    )
    agent = pai.Agent(model, output_type=pai.NativeOutput(Forecast))
    assert agent.run_sync("Forecast for Oslo").output == Forecast(**FORECAST)
    assert "output_config" in fake_anthropic.last.json
