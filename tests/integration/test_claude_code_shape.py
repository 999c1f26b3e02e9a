"""What Claude Code really sends (captured fixtures), through both paths."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.fakes import FakeUpstream, SSEReply, anthropic_stream, completion, stream_of
from tests.support.gateway import Gateway

FIXTURES = Path(__file__).parent.parent / "fixtures" / "claude_code"


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


def post(gateway: Gateway, captured: dict[str, Any], body: bytes) -> httpx.Response:
    headers = {**captured["headers"], "x-api-key": "client-key"}
    return httpx.post(gateway.url + captured["path"], content=body, headers=headers, timeout=20)


def test_head_root_answers(gateway: Gateway) -> None:
    assert httpx.head(gateway.url + "/").status_code == 200


@pytest.mark.parametrize("name", ["messages_request.json", "messages_tool_result_request.json"])
def test_converted_for_an_openai_upstream(
    gateway: Gateway, fake_openai: FakeUpstream, name: str
) -> None:
    captured = fixture(name)
    # (a bare claude-… name would match this gateway's user alias `claude` of `ant`)
    captured["body"]["model"] = "openai:" + captured["body"]["model"]
    fake_openai.reply(SSEReply(stream_of(completion("Done."))))
    response = post(gateway, captured, json.dumps(captured["body"]).encode())
    assert response.status_code == 200, response.text
    assert "event: message_stop" in response.text
    sent = fake_openai.last.json
    original = captured["body"]
    assert sent["model"] == "gpt-4.1"  # claude-opus-… → the `opus` fallback alias
    assert sent["max_completion_tokens"] == original["max_tokens"]  # never clamped
    assert sent["reasoning_effort"] == "high"  # output_config.effort
    assert len(sent["tools"]) == len(original["tools"])
    for tool, function in zip(original["tools"], sent["tools"], strict=True):
        assert function["function"]["parameters"] == tool["input_schema"]
    text = json.dumps(sent)
    for dropped in ("cache_control", "context_management", "output_config", "thinking"):
        assert dropped not in text
    assert len(sent["user"]) <= 64
    roles = [m["role"] for m in sent["messages"]]
    assert roles[0] == "system"
    # the mid-conversation system message stays where Claude Code put it
    where = [i for i, m in enumerate(original["messages"]) if m["role"] == "system"]
    assert where and roles.count("system") == 1 + len(where)
    if name == "messages_tool_result_request.json":
        assistant = next(m for m in sent["messages"] if m.get("tool_calls"))
        tool = next(m for m in sent["messages"] if m["role"] == "tool")
        assert tool["tool_call_id"] == assistant["tool_calls"][0]["id"]


@pytest.mark.parametrize("name", ["messages_request.json", "messages_tool_result_request.json"])
def test_passed_through_to_an_anthropic_upstream_byte_for_byte(
    gateway: Gateway, fake_anthropic: FakeUpstream, name: str
) -> None:
    captured = fixture(name)
    captured["body"]["model"] = "ant:opus-test"
    body = json.dumps(captured["body"], ensure_ascii=False, indent=None).encode()
    upstream = anthropic_stream(["Hi ", "there"])
    fake_anthropic.reply(SSEReply(upstream))
    response = post(gateway, captured, body)
    assert response.status_code == 200
    # relayed as bytes, the first event naming the model Claude Code asked for
    named = b"".join(upstream).replace(b'"model": "claude-upstream"', b'"model":"ant:opus-test"')
    assert response.content == named
    got = fake_anthropic.last
    assert got.path == "/v1/messages"
    assert got.body == body.replace(b'"model": "ant:opus-test"', b'"model":"opus-test"')
    assert got.headers["anthropic-beta"] == captured["headers"]["anthropic-beta"]
    assert got.headers["anthropic-version"] == "2023-06-01"
    assert got.headers["x-api-key"] == "sk-ant-test"
