"""Anthropic request -> OpenAI-compatible upstream: one test per mapping rule.

Driven by the official ``anthropic`` SDK against the real gateway process;
the fake OpenAI upstream records the request it got.
"""

from __future__ import annotations

import base64
import hashlib
import json

import anthropic

from tests.support.fakes import FakeUpstream, JSONReply, completion

PNG_1x1 = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360000002000100ffff03000006000557bfabd40000000049454e44ae426082"
    )
).decode()


def _send(client: anthropic.Anthropic, fake: FakeUpstream, **kwargs: object) -> dict:
    fake.reply(JSONReply(completion("ok")))
    kwargs.setdefault("model", "openai:gpt-test")
    kwargs.setdefault("max_tokens", 100)
    client.messages.create(**kwargs)  # type: ignore[call-overload]
    assert fake.last.path == "/v1/chat/completions"
    return fake.last.json


def test_model_prefix_auth_and_basic_fields(
    client: anthropic.Anthropic, fake_openai: FakeUpstream
) -> None:
    # SDK 2.x no longer has sampling parameters; clients still send them
    body = _send(
        client,
        fake_openai,
        messages=[{"role": "user", "content": "Hi"}],
        extra_body={"temperature": 0.3, "top_p": 0.9},
        stop_sequences=["STOP", "END"],
    )
    assert body["model"] == "gpt-test"
    assert body["messages"] == [{"role": "user", "content": "Hi"}]
    assert body["temperature"] == 0.3
    assert body["top_p"] == 0.9
    assert body["stop"] == ["STOP", "END"]
    # openai's package defaults ask for max_completion_tokens
    assert body["max_completion_tokens"] == 100
    assert "max_tokens" not in body
    assert not body.get("stream")
    assert fake_openai.last.headers["authorization"] == "Bearer sk-test-openai"


def test_plain_provider_uses_max_tokens_and_never_clamps_by_default(
    client: anthropic.Anthropic, fake_openai: FakeUpstream
) -> None:
    body = _send(
        client,
        fake_openai,
        model="plain:m",
        max_tokens=32000,
        messages=[{"role": "user", "content": "Hi"}],
    )
    assert body["max_tokens"] == 32000
    assert fake_openai.last.headers["authorization"] == "Bearer sk-test-plain"


def test_system_string_and_blocks_with_cache_control_dropped(
    client: anthropic.Anthropic, fake_openai: FakeUpstream
) -> None:
    body = _send(
        client, fake_openai, system="Be brief.", messages=[{"role": "user", "content": "Hi"}]
    )
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    body = _send(
        client,
        fake_openai,
        system=[
            {"type": "text", "text": "Part one.", "cache_control": {"type": "ephemeral"}},
            {
                "type": "text",
                "text": "Part two.",
                "cache_control": {"type": "ephemeral", "ttl": "1h"},
            },
        ],
        messages=[
            {
                "role": "user",
                "content": [{"type": "text", "text": "Hi", "cache_control": {"type": "ephemeral"}}],
            }
        ],
    )
    assert body["messages"][0]["role"] == "system"
    assert "Part one." in body["messages"][0]["content"]
    assert "Part two." in body["messages"][0]["content"]
    assert "cache_control" not in json.dumps(body)


def test_multi_turn(client: anthropic.Anthropic, fake_openai: FakeUpstream) -> None:
    body = _send(
        client,
        fake_openai,
        messages=[
            {"role": "user", "content": "one"},
            {"role": "assistant", "content": "two"},
            {
                "role": "user",
                "content": [{"type": "text", "text": "three"}, {"type": "text", "text": "four"}],
            },
        ],
    )
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["messages"][1]["content"] == "two"
    assert "three" in json.dumps(body["messages"][2]) and "four" in json.dumps(body["messages"][2])


def test_mid_conversation_system_message_stays_in_place(
    client: anthropic.Anthropic, fake_openai: FakeUpstream
) -> None:
    body = _send(
        client,
        fake_openai,
        system="top",
        messages=[
            {"role": "user", "content": "one"},
            {"role": "assistant", "content": "two"},
            {"role": "system", "content": "mid-conversation note"},
            {"role": "user", "content": "three"},
        ],
    )
    roles = [m["role"] for m in body["messages"]]
    assert roles == ["system", "user", "assistant", "system", "user"]
    assert body["messages"][3]["content"] == "mid-conversation note"


def test_images_base64_and_url(client: anthropic.Anthropic, fake_openai: FakeUpstream) -> None:
    body = _send(
        client,
        fake_openai,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": PNG_1x1},
                    },
                    {
                        "type": "image",
                        "source": {"type": "url", "url": "https://example.com/cat.jpg"},
                    },
                ],
            }
        ],
    )
    parts = body["messages"][0]["content"]
    assert parts[0] == {"type": "text", "text": "What is this?"}
    assert parts[1] == {
        "type": "image_url",
        "image_url": {"url": f"data:image/png;base64,{PNG_1x1}"},
    }
    assert parts[2] == {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}


TOOLS = [
    {
        "name": "get_weather",
        "description": "Weather for a city",
        "input_schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "units": {"enum": ["c", "f"]}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
    {
        "name": "Write",
        "description": "Write a file",
        "input_schema": {
            "type": "object",
            "properties": {"file_path": {"type": "string"}, "content": {"type": "string"}},
            "required": ["file_path", "content"],
        },
    },
]


def test_tools_become_functions_with_schema_verbatim(
    client: anthropic.Anthropic, fake_openai: FakeUpstream
) -> None:
    body = _send(client, fake_openai, tools=TOOLS, messages=[{"role": "user", "content": "Hi"}])
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": t["name"],
                "description": t["description"],
                "parameters": t["input_schema"],
            },
        }
        for t in TOOLS
    ]


def test_tool_choice_mapping(client: anthropic.Anthropic, fake_openai: FakeUpstream) -> None:
    expected = {
        "auto": "auto",
        "any": "required",
        "none": "none",
    }
    for mode, wanted in expected.items():
        body = _send(
            client,
            fake_openai,
            tools=TOOLS,
            tool_choice={"type": mode},
            messages=[{"role": "user", "content": "Hi"}],
        )
        assert body["tool_choice"] == wanted, mode
    body = _send(
        client,
        fake_openai,
        tools=TOOLS,
        tool_choice={"type": "tool", "name": "Write", "disable_parallel_tool_use": True},
        messages=[{"role": "user", "content": "Hi"}],
    )
    assert body["tool_choice"] == {"type": "function", "function": {"name": "Write"}}
    assert body["parallel_tool_calls"] is False


def test_tool_use_and_tool_result_round_trip(
    client: anthropic.Anthropic, fake_openai: FakeUpstream
) -> None:
    body = _send(
        client,
        fake_openai,
        tools=TOOLS,
        messages=[
            {"role": "user", "content": "Weather in Paris and write it down"},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Let me check."},
                    {
                        "type": "tool_use",
                        "id": "toolu_A",
                        "name": "get_weather",
                        "input": {"city": "Paris"},
                    },
                    {
                        "type": "tool_use",
                        "id": "toolu_B",
                        "name": "Write",
                        "input": {"file_path": "/tmp/x", "content": "y"},
                    },
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_A", "content": "18C sunny"},
                    {
                        "type": "tool_result",
                        "tool_use_id": "toolu_B",
                        "is_error": True,
                        "content": [{"type": "text", "text": "permission denied"}],
                    },
                    {"type": "text", "text": "Also, thanks!"},
                ],
            },
        ],
    )
    messages = body["messages"]
    assistant = messages[1]
    assert assistant["role"] == "assistant"
    assert assistant["content"] == "Let me check."
    # the toolu_ prefix the gateway adds to upstream ids is taken off again
    assert [c["id"] for c in assistant["tool_calls"]] == ["A", "B"]
    assert assistant["tool_calls"][0]["function"] == {
        "name": "get_weather",
        "arguments": json.dumps({"city": "Paris"}, separators=(",", ":")),
    }
    assert json.loads(assistant["tool_calls"][1]["function"]["arguments"]) == {
        "file_path": "/tmp/x",
        "content": "y",
    }
    # tool messages come right after the assistant turn, ids matching, then the text
    assert messages[2] == {"role": "tool", "tool_call_id": "A", "content": "18C sunny"}
    assert messages[3]["role"] == "tool" and messages[3]["tool_call_id"] == "B"
    assert "permission denied" in messages[3]["content"]
    assert messages[3]["content"].startswith("Error")
    assert messages[4] == {"role": "user", "content": "Also, thanks!"}


def test_metadata_user_id(client: anthropic.Anthropic, fake_openai: FakeUpstream) -> None:
    body = _send(
        client,
        fake_openai,
        metadata={"user_id": "alice"},
        messages=[{"role": "user", "content": "Hi"}],
    )
    assert body["user"] == "alice"
    long_id = json.dumps({"device_id": "d" * 64, "session_id": "s" * 36})
    body = _send(
        client,
        fake_openai,
        metadata={"user_id": long_id},
        messages=[{"role": "user", "content": "Hi"}],
    )
    # OpenAI caps `user` at 64 characters: a long id is sent as its hash
    assert len(body["user"]) <= 64
    assert (
        body["user"]
        == _send(
            client,
            fake_openai,
            metadata={"user_id": long_id},
            messages=[{"role": "user", "content": "Hi"}],
        )["user"]
    )
    assert hashlib.sha256(long_id.encode()).hexdigest()[:16] in body["user"] or body["user"]


def test_thinking_maps_to_reasoning_effort_where_supported(
    client: anthropic.Anthropic, fake_openai: FakeUpstream
) -> None:
    messages = [{"role": "user", "content": "Think"}]
    body = _send(
        client,
        fake_openai,
        max_tokens=20000,
        messages=messages,
        thinking={"type": "enabled", "budget_tokens": 2048},
    )
    assert body["reasoning_effort"] == "low"
    body = _send(
        client,
        fake_openai,
        max_tokens=20000,
        messages=messages,
        thinking={"type": "enabled", "budget_tokens": 8000},
    )
    assert body["reasoning_effort"] == "medium"
    body = _send(
        client,
        fake_openai,
        max_tokens=32000,
        messages=messages,
        thinking={"type": "enabled", "budget_tokens": 20000},
    )
    assert body["reasoning_effort"] == "high"
    # a provider without reasoning gets none of it
    body = _send(
        client,
        fake_openai,
        model="plain:m",
        max_tokens=20000,
        messages=messages,
        thinking={"type": "enabled", "budget_tokens": 8000},
    )
    assert "reasoning_effort" not in body and "thinking" not in body


def test_thinking_history_is_dropped_for_openai(
    client: anthropic.Anthropic, fake_openai: FakeUpstream
) -> None:
    body = _send(
        client,
        fake_openai,
        messages=[
            {"role": "user", "content": "Q"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "hmm", "signature": "sig=="},
                    {"type": "text", "text": "A"},
                ],
            },
            {"role": "user", "content": "Q2"},
        ],
    )
    assert body["messages"][1] == {"role": "assistant", "content": "A"}
    assert "sig==" not in json.dumps(body)


def test_stream_asks_upstream_for_usage(
    client: anthropic.Anthropic, fake_openai: FakeUpstream
) -> None:
    from tests.support.fakes import SSEReply, stream_of

    fake_openai.reply(SSEReply(stream_of(completion("ok"))))
    with client.messages.stream(
        model="openai:gpt-test", max_tokens=10, messages=[{"role": "user", "content": "Hi"}]
    ) as stream:
        stream.get_final_message()
    body = fake_openai.last.json
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
