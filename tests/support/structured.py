"""Fake upstreams that honour structured output as the real ones do: a JSON
answer when the request carries the family's constraint (``response_format``
/ ``output_config.format``) or forces a tool (then the answer is the call's
input), prose otherwise, so a client's ``parse()`` fails on what a gateway
that dropped the constraint would relay."""

from __future__ import annotations

import json
from typing import Any

from tests.support.fakes import (
    JSONReply,
    Recorded,
    Reply,
    Responder,
    SSEReply,
    anthropic_message,
    anthropic_stream_of,
    completion,
    stream_of,
    tool_call,
)

PROSE = "Sure! It is sunny in Oslo today, about 21 degrees."


def openai_honouring(answer: dict[str, Any]) -> Responder:
    def respond(recorded: Recorded) -> Reply:
        body = recorded.json
        fmt = body.get("response_format") or {}
        choice = body.get("tool_choice")
        if fmt.get("type") in ("json_schema", "json_object"):
            message = completion(json.dumps(answer))
        elif choice == "required" or isinstance(choice, dict):
            name = choice["function"]["name"] if isinstance(choice, dict) else None
            name = name or body["tools"][-1]["function"]["name"]
            call = tool_call("call_1", name, json.dumps(answer))
            message = completion(None, tool_calls=[call], finish="tool_calls")
        else:
            message = completion(PROSE)
        return SSEReply(stream_of(message)) if body.get("stream") else JSONReply(message)

    return respond


def anthropic_honouring(answer: dict[str, Any]) -> Responder:
    def respond(recorded: Recorded) -> Reply:
        body = recorded.json
        config = body.get("output_config") or {}
        choice = body.get("tool_choice") or {}
        if config.get("format") or body.get("output_format"):
            message = anthropic_message(json.dumps(answer))
        elif choice.get("type") in ("tool", "any"):
            name = choice.get("name") or body["tools"][-1]["name"]
            block = {"type": "tool_use", "id": "toolu_1", "name": name, "input": answer}
            message = anthropic_message(content=[block], stop_reason="tool_use")
        else:
            message = anthropic_message(PROSE)
        if body.get("stream"):
            return SSEReply(anthropic_stream_of(message))
        return JSONReply(message)

    return respond
