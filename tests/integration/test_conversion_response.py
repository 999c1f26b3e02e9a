"""OpenAI-compatible answer -> Anthropic message, non-streaming and streaming.

For each upstream answer the same completion is served once as JSON and once
as a chunk stream; the SDK's ``messages.stream(...).get_final_message()`` must
equal the non-streaming result (apart from the message id).
"""

from __future__ import annotations

from typing import Any

import anthropic
import pytest

from tests.support.fakes import (
    FakeUpstream,
    JSONReply,
    SSEReply,
    completion,
    stream_of,
    tool_call,
)

ASK = [{"role": "user", "content": "Hi"}]


def _both(
    client: anthropic.Anthropic, fake: FakeUpstream, body: dict[str, Any], **kwargs: Any
) -> tuple[anthropic.types.Message, anthropic.types.Message]:
    kwargs.setdefault("model", "openai:gpt-test")
    kwargs.setdefault("max_tokens", 100)
    kwargs.setdefault("messages", ASK)
    fake.reply(JSONReply(body))
    plain = client.messages.create(**kwargs)
    fake.reply(SSEReply(stream_of(body)))
    with client.messages.stream(**kwargs) as stream:
        streamed = stream.get_final_message()
    return plain, streamed


def _same(a: anthropic.types.Message, b: anthropic.types.Message) -> None:
    da, db = a.model_dump(), b.model_dump()
    assert da.pop("id").startswith("msg_") and db.pop("id").startswith("msg_")
    assert da == db


def test_text_answer(client: anthropic.Anthropic, fake_openai: FakeUpstream) -> None:
    plain, streamed = _both(client, fake_openai, completion("Hello there, friend!"))
    _same(plain, streamed)
    assert plain.type == "message" and plain.role == "assistant"
    assert plain.model == "openai:gpt-test"  # the model the client asked for
    assert [b.type for b in plain.content] == ["text"]
    assert plain.content[0].text == "Hello there, friend!"  # type: ignore[union-attr]
    assert plain.stop_reason == "end_turn"
    assert plain.usage.input_tokens == 25 and plain.usage.output_tokens == 20


@pytest.mark.parametrize(
    ("finish", "reason"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("content_filter", "refusal"),
    ],
)
def test_finish_reason_map(
    client: anthropic.Anthropic, fake_openai: FakeUpstream, finish: str, reason: str
) -> None:
    plain, streamed = _both(client, fake_openai, completion("x", finish=finish))
    _same(plain, streamed)
    assert plain.stop_reason == reason


def test_tool_calls_become_tool_use_blocks(
    client: anthropic.Anthropic, fake_openai: FakeUpstream
) -> None:
    body = completion(
        "Checking both.",
        finish="tool_calls",
        tool_calls=[
            tool_call("call_1", "get_weather", '{"city": "Paris"}'),
            tool_call("call_2", "get_time", '{"tz": "Europe/Paris", "fmt": {"h24": true}}'),
        ],
    )
    plain, streamed = _both(client, fake_openai, body)
    _same(plain, streamed)
    assert plain.stop_reason == "tool_use"
    text, first, second = plain.content
    assert text.type == "text" and text.text == "Checking both."
    assert first.type == "tool_use" and second.type == "tool_use"
    assert first.id.startswith("toolu_") and first.id != second.id
    assert (first.name, first.input) == ("get_weather", {"city": "Paris"})
    assert (second.name, second.input) == ("get_time", {"tz": "Europe/Paris", "fmt": {"h24": True}})


def test_tool_use_id_survives_the_round_trip(
    client: anthropic.Anthropic, fake_openai: FakeUpstream
) -> None:
    fake_openai.reply(
        JSONReply(
            completion(
                None,
                finish="tool_calls",
                tool_calls=[tool_call("call_abc", "get_weather", '{"city": "Oslo"}')],
            )
        )
    )
    first = client.messages.create(model="openai:gpt-test", max_tokens=50, messages=ASK)
    use = first.content[0]
    assert use.type == "tool_use"
    fake_openai.reply(JSONReply(completion("It is cold.")))
    client.messages.create(
        model="openai:gpt-test",
        max_tokens=50,
        messages=[
            *ASK,
            {"role": "assistant", "content": [use.model_dump()]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "-3C"}],
            },
        ],
    )
    assert use.id == "toolu_call_abc"
    sent = fake_openai.last.json["messages"]
    assert sent[1]["tool_calls"][0]["id"] == "call_abc"  # the upstream sees its own id
    assert sent[2] == {"role": "tool", "tool_call_id": "call_abc", "content": "-3C"}


def test_malformed_tool_arguments_do_not_crash(
    client: anthropic.Anthropic, fake_openai: FakeUpstream
) -> None:
    body = completion(
        None, finish="tool_calls", tool_calls=[tool_call("call_1", "get_weather", '{"city": "Par')]
    )
    plain, streamed = _both(client, fake_openai, body)
    _same(plain, streamed)
    block = plain.content[0]
    assert block.type == "tool_use" and block.name == "get_weather"
    assert isinstance(block.input, dict)
    assert block.input == {"_raw_arguments": '{"city": "Par'}


def test_reasoning_content_becomes_thinking(
    client: anthropic.Anthropic, fake_openai: FakeUpstream
) -> None:
    body = completion("The answer is 4.", reasoning="2 plus 2 is 4.")
    plain, streamed = _both(client, fake_openai, body)
    _same(plain, streamed)
    thinking, text = plain.content
    assert thinking.type == "thinking" and thinking.thinking == "2 plus 2 is 4."
    assert text.type == "text" and text.text == "The answer is 4."


def test_cached_prompt_tokens(client: anthropic.Anthropic, fake_openai: FakeUpstream) -> None:
    usage = {
        "prompt_tokens": 100,
        "completion_tokens": 7,
        "total_tokens": 107,
        "prompt_tokens_details": {"cached_tokens": 60},
    }
    plain, streamed = _both(client, fake_openai, completion("ok", usage=usage))
    _same(plain, streamed)
    assert plain.usage.input_tokens == 40
    assert plain.usage.cache_read_input_tokens == 60
    assert plain.usage.output_tokens == 7


def test_empty_answer_is_one_empty_text_block(
    client: anthropic.Anthropic, fake_openai: FakeUpstream
) -> None:
    plain, streamed = _both(client, fake_openai, completion(""))
    _same(plain, streamed)
    assert [(b.type, b.text) for b in plain.content] == [("text", "")]  # type: ignore[union-attr]


def test_upstream_error_object_mid_stream_is_an_error_event(
    client: anthropic.Anthropic, fake_openai: FakeUpstream
) -> None:
    from tests.support.fakes import chunk, sse

    fake_openai.reply(
        SSEReply(
            sse(
                chunk({"content": "partial"}),
                {"error": {"message": "model overloaded"}},
                done=False,
            )
        )
    )
    with (
        pytest.raises(anthropic.APIStatusError) as raised,
        client.messages.stream(model="openai:gpt-test", max_tokens=10, messages=ASK) as stream,
    ):
        for _ in stream:
            pass
    assert "model overloaded" in str(raised.value)
