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
from tests.support.fakes import FakeUpstream, Recorded, SSEReply, completion, stream_of, tool_call
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
