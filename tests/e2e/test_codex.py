"""The real Codex CLI through the gateway's Responses door to fake upstreams that
speak other formats: Anthropic Messages and OpenAI Chat Completions.

Each upstream is scripted: the first turn answers with an ``exec_command`` call
that creates a file, the turn that carries the command's output answers with
text.  Codex must run the command (the file exists) and print the text.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.codex_cli import CODEX, codex_env, run_codex
from tests.e2e.npm_cli import require
from tests.support.fakes import (
    FakeUpstream,
    Recorded,
    SSEReply,
    anthropic_message,
    anthropic_stream_of,
    completion,
    stream_of,
    tool_call,
)
from tests.support.gateway import run_gateway

pytestmark = pytest.mark.e2e

COMMAND = "printf 'hi from vdm' > made.txt"
FINAL = "Created made.txt for you."


@pytest.fixture(scope="module")
def codex() -> Path:
    return require(CODEX)


def _anthropic(request: Recorded) -> SSEReply:
    messages = request.json["messages"]
    answered = any(
        isinstance(m["content"], list) and any(b.get("type") == "tool_result" for b in m["content"])
        for m in messages
    )
    if answered:
        return SSEReply(anthropic_stream_of(anthropic_message(FINAL)))
    call = {
        "type": "tool_use",
        "id": "toolu_01Codex",
        "name": "exec_command",
        "input": {"cmd": COMMAND},
    }
    thinking = {"type": "thinking", "thinking": "I run one command.", "signature": "sig-1"}
    return SSEReply(
        anthropic_stream_of(anthropic_message(content=[thinking, call], stop_reason="tool_use"))
    )


def _chat(request: Recorded) -> SSEReply:
    if any(m["role"] == "tool" for m in request.json["messages"]):
        return SSEReply(stream_of(completion(FINAL)))
    call = tool_call("call_codex1", "exec_command", json.dumps({"cmd": COMMAND}))
    return SSEReply(stream_of(completion(None, finish="tool_calls", tool_calls=[call])))


def _run(
    codex: Path,
    tmp_path: Path,
    fake: FakeUpstream,
    model: str,
    respond: Callable[[Recorded], SSEReply],
    env: dict[str, str],
) -> list[dict[str, Any]]:
    work = tmp_path / "project"
    work.mkdir()
    fake.responder = respond
    with run_gateway(env, tmp_path / "gw") as gateway:
        result = run_codex(
            codex,
            "Create made.txt saying hi",
            codex_env(gateway.url + "/v1", tmp_path / "home", model),
            work,
        )
        log = gateway.log()
    assert result.returncode == 0, f"codex failed:\n{result.stdout}\n{result.stderr}\n{log}"
    assert (work / "made.txt").read_text() == "hi from vdm"
    assert FINAL in result.stdout
    assert "dropped what it has no equivalent for: " in log and "tool web_search" in log
    assert len(fake.requests) >= 2
    return [r.json for r in fake.requests]


def test_codex_tool_loop_through_an_anthropic_upstream(
    codex: Path, fake_anthropic: FakeUpstream, tmp_path: Path
) -> None:
    env = {
        "ANT_API_KEY": "sk-ant-test",
        "ANT_BASE_URL": fake_anthropic.url,
        "ANT_API_FORMAT": "anthropic",
    }
    bodies = _run(codex, tmp_path, fake_anthropic, "ant:claude-x", _anthropic, env)
    first, last = bodies[0], bodies[-1]
    assert first["model"] == "claude-x" and first["stream"] is True
    assert "exec_command" in {t["name"] for t in first["tools"]}
    assert "web_search" not in {t["name"] for t in first["tools"]}
    assert first["system"]  # Codex's developer messages
    assistant = [m for m in last["messages"] if m["role"] == "assistant"][-1]["content"]
    # the thinking block came back with its signature, the call with its id
    assert assistant[0] == {
        "type": "thinking",
        "thinking": "I run one command.",
        "signature": "sig-1",
    }
    assert assistant[1]["type"] == "tool_use" and assistant[1]["id"] == "toolu_01Codex"
    result = last["messages"][-1]["content"][0]
    assert result["type"] == "tool_result" and result["tool_use_id"] == "toolu_01Codex"


def test_codex_tool_loop_through_a_chat_completions_upstream(
    codex: Path, fake_openai: FakeUpstream, tmp_path: Path
) -> None:
    env = {"PLAIN_API_KEY": "sk-test-plain", "PLAIN_BASE_URL": fake_openai.url + "/v1"}
    bodies = _run(codex, tmp_path, fake_openai, "plain:gpt-x", _chat, env)
    assert all(b["model"] == "gpt-x" for b in bodies)
    assert bodies[0]["messages"][0]["role"] == "system"
    last = bodies[-1]["messages"]
    calls = [m for m in last if m.get("tool_calls")]
    assert calls[-1]["tool_calls"][0]["id"] == "call_codex1"
    tool = [m for m in last if m["role"] == "tool"][-1]
    assert tool["tool_call_id"] == "call_codex1" and "exit" in tool["content"].lower()
