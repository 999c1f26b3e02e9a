"""The real Claude Code CLI through the gateway to a fake OpenAI upstream.

The upstream is scripted: the first turn answers with a ``Write`` tool call,
the turn that carries the tool result answers with text.  Claude Code must
create the file and print the text.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.e2e.claude_cli import CLAUDE_CODE, claude_env, run_claude
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


@pytest.fixture(scope="module")
def claude() -> Path:
    return require(CLAUDE_CODE)


def test_claude_code_writes_a_file_through_a_converted_tool_loop(
    claude: Path, fake_openai: FakeUpstream, tmp_path: Path
) -> None:
    work = tmp_path / "project"
    work.mkdir()
    target = work / "hello.txt"

    def respond(request: Recorded) -> SSEReply:
        body = request.json
        if any(m["role"] == "tool" for m in body["messages"]):
            answer = completion("Created hello.txt for you.")
        elif body.get("tools"):
            arguments = json.dumps({"file_path": str(target), "content": "hi from vdm\n"})
            answer = completion(
                None, finish="tool_calls", tool_calls=[tool_call("call_w1", "Write", arguments)]
            )
        else:  # side requests (titles, summaries) get plain text
            answer = completion("ok")
        return SSEReply(stream_of(answer))

    fake_openai.responder = respond
    env = {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": fake_openai.url + "/v1"}
    with run_gateway(env, tmp_path / "gw") as gateway:
        result = run_claude(
            claude, "Create hello.txt saying hi", claude_env(gateway.url, tmp_path / "home"), work
        )
        log = gateway.log()
    assert result.returncode == 0, f"claude failed:\n{result.stdout}\n{result.stderr}\n{log}"
    assert target.read_text() == "hi from vdm\n"
    assert "Created hello.txt for you." in result.stdout
    main_turns = [r for r in fake_openai.requests if r.json.get("tools")]
    assert len(main_turns) >= 2
    first = main_turns[0].json
    assert first["stream"] is True
    assert first["model"] == "gpt-4.1"  # claude-opus-… through the package's `opus` alias
    assert {t["function"]["name"] for t in first["tools"]} >= {"Write", "Read", "Bash"}
    follow_up = main_turns[-1].json["messages"]
    tool_messages = [m for m in follow_up if m["role"] == "tool"]
    assert tool_messages and tool_messages[0]["tool_call_id"] == "call_w1"
    assert "hello.txt" in tool_messages[0]["content"]


# The model name an Anthropic-native upstream answers with: not the one asked of it
# (a dated snapshot, as Anthropic's own API names it), nor the one Claude Code asked for.
SNAPSHOT = "claude-opus-4-8-20990101"
SIGNATURE = "EqQBCkYIBxgCKkAsig+/passthrough=="


def test_claude_code_keeps_thinking_and_its_signature_through_passthrough(
    claude: Path, fake_anthropic: FakeUpstream, tmp_path: Path
) -> None:
    """Claude Code drops every thinking block from its history when an answer names
    another model than the one it asked for; the passthrough must name its model, so
    the tool turn carries the thinking block and its signature back upstream."""
    work = tmp_path / "project"
    work.mkdir()
    target = work / "hello.txt"

    def respond(request: Recorded) -> SSEReply:
        body = request.json
        results = [
            block
            for m in body["messages"]
            if m["role"] == "user" and isinstance(m["content"], list)
            for block in m["content"]
            if block.get("type") == "tool_result"
        ]
        if results:
            content = [{"type": "text", "text": "Created hello.txt for you."}]
            stop = "end_turn"
        elif body.get("tools"):
            content = [
                {"type": "thinking", "thinking": "The user wants a file.", "signature": SIGNATURE},
                {
                    "type": "tool_use",
                    "id": "toolu_w1",
                    "name": "Write",
                    "input": {"file_path": str(target), "content": "hi from vdm\n"},
                },
            ]
            stop = "tool_use"
        else:
            content, stop = [{"type": "text", "text": "ok"}], "end_turn"
        message = anthropic_message(model=SNAPSHOT, content=content, stop_reason=stop)
        return SSEReply(anthropic_stream_of(message))

    fake_anthropic.responder = respond
    env = {
        "ANT_API_KEY": "sk-ant-test",
        "ANT_BASE_URL": fake_anthropic.url,
        "ANT_API_FORMAT": "anthropic",
        "ANT_ALIAS_OPUS": "claude-opus-up",  # Claude Code's claude-opus-… through an alias
        "VDM_DEFAULT_PROVIDER": "ant",
    }
    with run_gateway(env, tmp_path / "gw") as gateway:
        result = run_claude(
            claude, "Create hello.txt saying hi", claude_env(gateway.url, tmp_path / "home"), work
        )
        log = gateway.log()
    assert result.returncode == 0, f"claude failed:\n{result.stdout}\n{result.stderr}\n{log}"
    assert target.read_text() == "hi from vdm\n"
    assert "Created hello.txt for you." in result.stdout
    main_turns = [r for r in fake_anthropic.requests if r.json.get("tools")]
    assert len(main_turns) >= 2
    assert main_turns[0].json["model"] == "claude-opus-up"
    follow_up = main_turns[-1].json["messages"]
    turns = [m for m in follow_up if m["role"] == "assistant"]
    assert turns, "the tool turn carries no assistant turn"
    blocks = turns[-1]["content"]
    assert [b["type"] for b in blocks] == ["thinking", "tool_use"], blocks
    assert blocks[0]["thinking"] == "The user wants a file."
    assert blocks[0]["signature"] == SIGNATURE
    assert blocks[1]["id"] == "toolu_w1"
