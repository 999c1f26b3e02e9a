"""The Responses API door (``POST /v1/responses``), driven by the official ``openai``
SDK's ``responses.create`` and ``responses.stream`` against fake upstreams of both
formats (``plain``: chat completions, ``ant``: Anthropic Messages), and the native
passthrough (``openai``: ``OPENAI_RESPONSES_API=native``, the package default)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.support.fakes import (
    FakeUpstream,
    JSONReply,
    SSEReply,
    anthropic_message,
    anthropic_stream_of,
    completion,
    error_reply,
    stream_of,
    tool_call,
)
from tests.support.gateway import Gateway, run_gateway

FIXTURES = Path(__file__).parent.parent / "fixtures" / "codex"
THINKING = {"type": "thinking", "thinking": "Let me think.", "signature": "sig-abc"}
CALL = {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"city": "Oslo"}}
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather of a city",
    "strict": True,
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
}


@pytest.fixture
def oai(gateway: Gateway) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=gateway.url + "/v1", api_key="client-key", max_retries=0, timeout=20
    ) as client:
        yield client


def same(a: Any, b: Any) -> None:
    left, right = comparable(a), comparable(b)
    for key in sorted(set(left) | set(right)):
        assert left.get(key) == right.get(key), key


def comparable(response: Any) -> dict[str, Any]:
    """A response without what differs between two calls (ids, timestamps)."""
    data = response.model_dump(exclude_none=True) if not isinstance(response, dict) else response
    data = json.loads(json.dumps(data))
    for key in ("id", "created_at", "completed_at"):
        data.pop(key, None)
    for item in data["output"]:
        item.pop("id", None)
        item.pop("parsed_arguments", None)  # added by the SDK's stream helper for strict tools
        if item["type"] == "function_call":
            item["arguments"] = json.loads(item["arguments"])
    return data


def both(
    oai: openai.OpenAI, fake: FakeUpstream, whole: Any, streamed: list[bytes], **request: Any
) -> tuple[Any, Any, list[Any]]:
    """The same request non-streamed and streamed (SDK helper); both answers and the
    stream's events."""
    fake.reply(JSONReply(whole))
    created = oai.responses.create(**request)
    fake.reply(SSEReply(streamed))
    with oai.responses.stream(**request) as stream:
        events = list(stream)
        final = stream.get_final_response()
    return created, final, events


# ---------------------------------------------------------------- chat-completions upstream


def test_text_answer_from_a_chat_upstream(oai: openai.OpenAI, fake_openai: FakeUpstream) -> None:
    usage = {
        "prompt_tokens": 30,
        "completion_tokens": 7,
        "total_tokens": 37,
        "prompt_tokens_details": {"cached_tokens": 10},
        "completion_tokens_details": {"reasoning_tokens": 4},
    }
    answer = completion("Hello from upstream", usage=usage)
    created, final, events = both(
        oai,
        fake_openai,
        answer,
        stream_of(answer),
        model="plain:gpt-x",
        instructions="Be brief.",
        input="Hi",
        max_output_tokens=50,
        temperature=0.3,
        top_p=0.9,
        metadata={"k": "v"},
    )
    assert created.output_text == "Hello from upstream" == final.output_text
    assert created.status == "completed" and created.object == "response"
    assert created.model == "plain:gpt-x"  # the client's model, as OpenAI echoes it
    assert created.instructions == "Be brief." and created.metadata == {"k": "v"}
    assert created.usage is not None
    assert created.usage.input_tokens == 30 and created.usage.output_tokens == 7
    assert created.usage.input_tokens_details.cached_tokens == 10
    assert created.usage.output_tokens_details.reasoning_tokens == 4
    assert created.usage.total_tokens == 37
    same(created, final)
    sent = fake_openai.last.json
    assert sent["model"] == "gpt-x"
    assert sent["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
    ]
    assert sent["max_tokens"] == 50 and sent["temperature"] == 0.3 and sent["top_p"] == 0.9
    types = [e.type for e in events]
    assert types == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        *["response.output_text.delta"] * 3,
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    assert [e.sequence_number for e in events] == list(range(len(events)))


def test_input_items_tools_and_choices_map_to_chat(
    oai: openai.OpenAI, fake_openai: FakeUpstream
) -> None:
    fake_openai.reply(JSONReply(completion("ok")))
    oai.responses.create(
        model="plain:gpt-x",
        input=[
            {"role": "developer", "content": "Use tools."},
            {
                "type": "message",
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "Weather?"},
                    {
                        "type": "input_image",
                        "image_url": "https://example.com/a.png",
                        "detail": "auto",
                    },
                ],
            },
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "Checking.", "annotations": []}],
            },
            {
                "type": "function_call",
                "call_id": "call_9",
                "name": "get_weather",
                "arguments": '{"city": "Oslo"}',
            },
            {"type": "function_call_output", "call_id": "call_9", "output": "sunny"},
            {
                "type": "web_search_call",
                "id": "ws_1",
                "status": "completed",
                "action": {"type": "search", "query": "x"},
            },
        ],
        tools=[WEATHER, {"type": "web_search"}],  # type: ignore[list-item]
        tool_choice={"type": "function", "name": "get_weather"},
        parallel_tool_calls=False,
        text={"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}}},
    )
    sent = fake_openai.last.json
    system, user, assistant, tool = sent["messages"]
    assert system == {"role": "system", "content": "Use tools."}
    assert sent["response_format"] == {  # text.format -> response_format
        "type": "json_schema",
        "json_schema": {"name": "w", "schema": {"type": "object"}},
    }
    assert user == {
        "role": "user",
        "content": [
            {"type": "text", "text": "Weather?"},
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
        ],
    }
    assert assistant["content"] == "Checking."
    assert assistant["tool_calls"] == [tool_call("call_9", "get_weather", '{"city":"Oslo"}')]
    assert tool == {"role": "tool", "tool_call_id": "call_9", "content": "sunny"}
    # function tools verbatim, web_search dropped (never a 400)
    assert sent["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather of a city",
                "parameters": WEATHER["parameters"],
            },
        }
    ]
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert sent["parallel_tool_calls"] is False


def test_tool_calls_from_a_chat_upstream_keep_their_call_ids(
    oai: openai.OpenAI, fake_openai: FakeUpstream
) -> None:
    answer = completion(
        None,
        finish="tool_calls",
        tool_calls=[
            tool_call("call_a", "get_weather", '{"city": "Oslo"}'),
            tool_call("call_b", "get_weather", '{"city": "Rome"}'),
        ],
    )
    created, final, events = both(
        oai,
        fake_openai,
        answer,
        stream_of(answer),
        model="plain:gpt-x",
        input="Weather?",
        tools=[WEATHER],
    )
    calls = [i for i in created.output if i.type == "function_call"]
    # the IR's ids, as every door shows them; the upstream gets its own back (below)
    assert [(c.call_id, c.name, json.loads(c.arguments)) for c in calls] == [
        ("toolu_call_a", "get_weather", {"city": "Oslo"}),
        ("toolu_call_b", "get_weather", {"city": "Rome"}),
    ]
    same(created, final)
    deltas = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert deltas == '{"city": "Oslo"}{"city": "Rome"}'
    # the next turn sends the calls back as the client got them
    fake_openai.reply(JSONReply(completion("Sunny and rainy.")))
    follow = oai.responses.create(
        model="plain:gpt-x",
        tools=[WEATHER],
        input=[
            {"role": "user", "content": "Weather?"},
            *[
                {
                    "type": "function_call",
                    "call_id": c.call_id,
                    "name": c.name,
                    "arguments": c.arguments,
                }
                for c in calls
            ],
            {"type": "function_call_output", "call_id": "toolu_call_a", "output": "sunny"},
            {"type": "function_call_output", "call_id": "toolu_call_b", "output": "rainy"},
        ],
    )
    assert follow.output_text == "Sunny and rainy."
    messages = fake_openai.last.json["messages"]
    assert [c["id"] for c in messages[1]["tool_calls"]] == ["call_a", "call_b"]
    assert [(m["role"], m["tool_call_id"]) for m in messages[2:]] == [
        ("tool", "call_a"),
        ("tool", "call_b"),
    ]


def test_reasoning_content_becomes_a_reasoning_summary(
    oai: openai.OpenAI, fake_openai: FakeUpstream
) -> None:
    answer = completion("42", reasoning="Six times seven.")
    created, final, events = both(
        oai, fake_openai, answer, stream_of(answer), model="plain:gpt-x", input="?"
    )
    reasoning, message = created.output
    assert reasoning.type == "reasoning"
    assert [s.text for s in reasoning.summary] == ["Six times seven."]
    assert reasoning.encrypted_content is None  # nothing any upstream could verify
    assert message.type == "message" and created.output_text == "42"
    same(created, final)
    summary = "".join(e.delta for e in events if e.type == "response.reasoning_summary_text.delta")
    assert summary == "Six times seven."


def test_max_tokens_is_an_incomplete_response(
    oai: openai.OpenAI, fake_openai: FakeUpstream
) -> None:
    answer = completion("Cut", finish="length")
    fake_openai.reply(JSONReply(answer))
    created = oai.responses.create(model="plain:gpt-x", input="Long story", max_output_tokens=3)
    assert created.status == "incomplete"
    assert created.incomplete_details is not None
    assert created.incomplete_details.reason == "max_output_tokens"
    fake_openai.reply(SSEReply(stream_of(answer)))
    events = list(oai.responses.create(model="plain:gpt-x", input="Long story", stream=True))
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.incomplete_details.reason == "max_output_tokens"


# ---------------------------------------------------------------- Anthropic upstream


def test_thinking_and_tool_use_from_an_anthropic_upstream(
    oai: openai.OpenAI, fake_anthropic: FakeUpstream
) -> None:
    answer = anthropic_message(content=[THINKING, CALL], stop_reason="tool_use")
    created, final, events = both(
        oai,
        fake_anthropic,
        answer,
        anthropic_stream_of(answer),
        model="ant:claude-x",
        input="Weather in Oslo?",
        tools=[WEATHER],
        reasoning={"effort": "high"},
        max_output_tokens=30000,
    )
    reasoning, call = created.output
    assert [s.text for s in reasoning.summary] == ["Let me think."]
    assert reasoning.encrypted_content == "vdm:thinking:sig-abc"
    assert (call.call_id, call.name, json.loads(call.arguments)) == (
        "toolu_01A",
        "get_weather",
        {"city": "Oslo"},
    )
    same(created, final)
    assert created.usage is not None and created.usage.input_tokens == 28  # 25 + 3 cached
    assert created.usage.input_tokens_details.cached_tokens == 3
    sent = fake_anthropic.last.json
    assert sent["model"] == "claude-x" and sent["max_tokens"] == 30000
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 24576}  # effort high
    assert sent["tools"] == [
        {
            "name": "get_weather",
            "description": "Weather of a city",
            "input_schema": WEATHER["parameters"],
        }
    ]
    done = [e for e in events if e.type == "response.output_item.done"]
    assert done[0].item.encrypted_content == "vdm:thinking:sig-abc"

    # The next turn gives the reasoning item back: Anthropic sees its signed thinking again.
    fake_anthropic.reply(JSONReply(anthropic_message("Sunny.")))
    oai.responses.create(
        model="ant:claude-x",
        tools=[WEATHER],
        input=[
            {"role": "user", "content": "Weather in Oslo?"},
            reasoning.model_dump(exclude_none=True),
            call.model_dump(exclude_none=True),
            {"type": "function_call_output", "call_id": "toolu_01A", "output": "sunny"},
            {
                "type": "reasoning",
                "id": "rs_foreign",
                "summary": [],
                "encrypted_content": "gAAAA-openai-blob",
            },  # another provider's: dropped
        ],
    )
    messages = fake_anthropic.last.json["messages"]
    assert messages[1] == {
        "role": "assistant",
        "content": [
            THINKING,
            {
                "type": "tool_use",
                "id": "toolu_01A",
                "name": "get_weather",
                "input": {"city": "Oslo"},
            },
        ],
    }
    assert messages[2]["content"][0]["tool_use_id"] == "toolu_01A"
    assert len(messages) == 3


def test_effort_none_disables_thinking_and_instructions_become_system(
    oai: openai.OpenAI, fake_anthropic: FakeUpstream
) -> None:
    fake_anthropic.reply(JSONReply(anthropic_message("ok")))
    oai.responses.create(
        model="ant:claude-x",
        instructions="Sys.",
        reasoning={"effort": "none"},
        input=[{"role": "developer", "content": "Dev."}, {"role": "user", "content": "Hi"}],
    )
    sent = fake_anthropic.last.json
    assert sent["thinking"] == {"type": "disabled"}
    assert sent["system"] == [{"type": "text", "text": "Sys."}, {"type": "text", "text": "Dev."}]


# ---------------------------------------------------------------- Codex's own requests


def _codex(name: str, model: str) -> dict[str, Any]:
    captured = json.loads((FIXTURES / name).read_text())
    captured["body"]["model"] = model
    return captured


@pytest.mark.parametrize("name", ["responses_request.json", "responses_tool_result_request.json"])
def test_codex_requests_convert_for_both_formats(
    gateway: Gateway, fake_openai: FakeUpstream, fake_anthropic: FakeUpstream, name: str
) -> None:
    for model, fake, reply in (
        ("plain:gpt-x", fake_openai, stream_of(completion("Done."))),
        ("ant:claude-x", fake_anthropic, anthropic_stream_of(anthropic_message("Done."))),
    ):
        captured = _codex(name, model)
        fake.reply(SSEReply(reply))
        response = httpx.post(
            gateway.url + captured["path"],
            json=captured["body"],
            timeout=20,
            headers={**captured["headers"], "authorization": "Bearer k"},
        )
        assert response.status_code == 200, response.text
        assert "event: response.completed" in response.text
        sent = fake.last.json
        names = [t.get("name") or t["function"]["name"] for t in sent["tools"]]
        assert "exec_command" in names and "multi_agent_v1" not in names
        assert len(names) == 7  # the function tools; namespace and web_search dropped
        if name == "responses_tool_result_request.json":
            text = json.dumps(sent["messages"])
            assert '"toolu_01ABC"' in text or '"01ABC"' in text


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"model": "plain:x", "input": 5}, "input: expected string or array"),
        ({"model": "plain:x", "input": [{"type": 5}]}, "input.0.type"),
        ({"model": "plain:x", "input": [{"role": "robot", "content": "x"}]}, "input.0.role"),
        ({"model": "plain:x", "input": "x", "previous_response_id": "resp_1"}, "stateless"),
        ({"model": "plain:x", "input": [{"type": "item_reference", "id": "msg_1"}]}, "stateless"),
        ({"model": "plain:x", "input": "x", "reasoning": {"effort": "huge"}}, "reasoning.effort"),
        ({"model": "plain:x", "input": "x", "max_output_tokens": 0}, "max_output_tokens"),
        ({"input": "x"}, "model: field required"),
    ],
)
def test_bad_requests_are_400_in_the_openai_shape(
    gateway: Gateway, oai: openai.OpenAI, body: dict[str, Any], message: str
) -> None:
    response = httpx.post(gateway.url + "/v1/responses", json=body, timeout=20)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert message in error["message"] and error["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError, match=message.split(":")[0]):
        oai.post("/responses", body=body, cast_to=httpx.Response)


@pytest.mark.parametrize(
    ("status", "exception"),
    [
        (401, openai.AuthenticationError),
        (403, openai.PermissionDeniedError),
        (429, openai.RateLimitError),
        (500, openai.InternalServerError),
    ],
)
def test_upstream_failures_raise_the_matching_sdk_exception(
    oai: openai.OpenAI, fake_anthropic: FakeUpstream, status: int, exception: type[Exception]
) -> None:
    for stream in (False, True):
        fake_anthropic.reply(error_reply(status, "nope", style="anthropic"))
        with pytest.raises(exception, match="nope"):
            if stream:
                with oai.responses.stream(model="ant:claude-x", input="Hi") as events:
                    list(events)
            else:
                oai.responses.create(model="ant:claude-x", input="Hi")


def test_a_stream_cut_mid_answer_ends_with_error_and_response_failed(
    oai: openai.OpenAI, fake_openai: FakeUpstream
) -> None:
    fake_openai.reply(SSEReply(stream_of(completion("one two three")), cut_after=3))
    events = list(oai.responses.create(model="plain:gpt-x", input="Hi", stream=True))
    assert [e.type for e in events[-2:]] == ["error", "response.failed"]
    failed = events[-1].response
    assert failed.status == "failed" and failed.error is not None
    assert "plain" in failed.error.message
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert failed.id == events[0].response.id


# ---------------------------------------------------------------- native passthrough


def test_native_provider_gets_the_body_and_relays_the_stream_byte_for_byte(
    gateway: Gateway, oai: openai.OpenAI, fake_openai: FakeUpstream
) -> None:
    upstream = [
        f"event: {t}\ndata: {json.dumps(d)}\n\n".encode()
        for t, d in [
            (
                "response.created",
                {
                    "type": "response.created",
                    "sequence_number": 0,
                    "response": {
                        "id": "resp_up",
                        "object": "response",
                        "created_at": 1,
                        "status": "in_progress",
                        "model": "gpt-x",
                        "output": [],
                        "tools": [],
                        "tool_choice": "auto",
                        "parallel_tool_calls": True,
                    },
                },
            ),
            (
                "response.completed",
                {
                    "type": "response.completed",
                    "sequence_number": 1,
                    "response": {
                        "id": "resp_up",
                        "object": "response",
                        "created_at": 1,
                        "status": "completed",
                        "model": "gpt-x",
                        "output": [],
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
                    },
                },
            ),
        ]
    ]
    fake_openai.reply(SSEReply(upstream))
    body = {
        "model": "openai:gpt-x",
        "input": "Hi",
        "stream": True,
        "store": True,
        "previous_response_id": "resp_prev",
        "tools": [{"type": "web_search"}],
    }
    response = httpx.post(gateway.url + "/v1/responses", json=body, timeout=20)
    assert response.status_code == 200
    # byte for byte, but every event names the model the client asked for
    relayed = b"".join(upstream).replace(b'"model": "gpt-x"', b'"model":"openai:gpt-x"')
    assert relayed.count(b'"model":"openai:gpt-x"') == 2
    assert response.content == relayed
    assert response.headers["x-vdm-provider"] == "openai"
    sent = fake_openai.last
    assert sent.path == "/v1/responses" and sent.headers["authorization"] == "Bearer sk-test-openai"
    assert sent.json == {**body, "model": "gpt-x"}  # stateful fields go to the stateful API
    whole = {
        "id": "resp_up",
        "object": "response",
        "created_at": 1,
        "status": "completed",
        "model": "gpt-x",
        "output": [],
        "tools": [],
        "tool_choice": "auto",
        "parallel_tool_calls": True,
        "extra": {"kept": True},
    }
    fake_openai.reply(JSONReply(whole))
    raw = oai.responses.with_raw_response.create(model="openai:gpt-x", input="Hi")
    assert json.loads(raw.http_response.content) == {**whole, "model": "openai:gpt-x"}


def test_responses_api_setting_picks_conversion(tmp_path: Path, fake_openai: FakeUpstream) -> None:
    env = {
        "OPENAI_API_KEY": "sk-o",
        "OPENAI_BASE_URL": fake_openai.url + "/v1",
        "OPENAI_RESPONSES_API": "convert",
    }
    fake_openai.reply(JSONReply(completion("converted")))
    with (
        run_gateway(env, tmp_path) as gateway,
        openai.OpenAI(base_url=gateway.url + "/v1", api_key="k", max_retries=0) as client,
    ):
        answer = client.responses.create(model="gpt-x", input="Hi", reasoning={"effort": "low"})
    assert answer.output_text == "converted"
    sent = fake_openai.last
    assert sent.path == "/v1/chat/completions"
    assert sent.json["reasoning_effort"] == "low"  # openai declares reasoning support


def test_slow_first_event_opens_the_stream_with_pings(
    tmp_path: Path, fake_openai: FakeUpstream
) -> None:
    env = {
        "PLAIN_API_KEY": "sk-p",
        "PLAIN_BASE_URL": fake_openai.url + "/v1",
        "PING_INTERVAL": "0.2",
    }
    fake_openai.reply(SSEReply(stream_of(completion("late")), delays=[0.7]))
    with run_gateway(env, tmp_path) as gateway:
        response = httpx.post(
            gateway.url + "/v1/responses",
            timeout=20,
            json={"model": "plain:gpt-x", "input": "Hi", "stream": True},
        )
        assert response.text.startswith(": ping\n\n")
        fake_openai.reply(SSEReply(stream_of(completion("late")), delays=[0.7]))
        with (
            openai.OpenAI(base_url=gateway.url + "/v1", api_key="k", max_retries=0) as client,
            client.responses.stream(model="plain:gpt-x", input="Hi") as stream,
        ):
            assert stream.get_final_response().output_text == "late"


def test_middleware_and_metrics_see_the_responses_door(
    tmp_path: Path, fake_anthropic: FakeUpstream
) -> None:
    env = {
        "ANT_API_KEY": "sk-a",
        "ANT_BASE_URL": fake_anthropic.url,
        "ANT_API_FORMAT": "anthropic",
        "MIDDLEWARE": "request-log",
    }
    fake_anthropic.reply(SSEReply(anthropic_stream_of(anthropic_message("Hi there"))))
    with run_gateway(env, tmp_path) as gateway:
        with (
            openai.OpenAI(base_url=gateway.url + "/v1", api_key="k", max_retries=0) as client,
            client.responses.stream(model="ant:claude-x", input="Hi") as stream,
        ):
            assert stream.get_final_response().output_text == "Hi there"
        totals = httpx.get(gateway.url + "/metrics/running-totals?door=responses").json()
        log = gateway.log()
    assert "start responses ant:claude-x -> ant:claude-x stream=true" in log
    # usage of a converted Anthropic stream: input from message_start, output from the end
    assert totals["totals"]["requests"] == 1
    assert totals["totals"]["input_tokens"] == 25 and totals["totals"]["output_tokens"] == 20
