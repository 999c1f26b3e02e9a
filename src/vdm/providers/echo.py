"""The built-in offline provider: zero-config demo and test double.

Deterministic: it replies with the last user text, streamed word by word, and
reports usage from the same rough count as local ``count_tokens``.  When the
request has tools and the last user text says "use the X tool", it answers
with a ``tool_use`` of tool X (input filled from the schema's required
properties), so tool loops can be tried offline; when the last user turn
carries tool results, it reports them back as text.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import msgspec

from vdm import ir
from vdm.ids import new_message_id, tool_use_id
from vdm.providers.base import ClientContext
from vdm.tokens import count_request_tokens, count_text_tokens

if TYPE_CHECKING:
    from vdm.config import ApiFormat

_TOOL_ASK = re.compile(r"\buse the ([\w.-]+) tool\b", re.IGNORECASE)
_PLACEHOLDER: dict[str, Any] = {
    "string": "echo",
    "integer": 0,
    "number": 0,
    "boolean": False,
    "array": [],
    "object": {},
}


class EchoProvider:
    name = "echo"
    api_format: ApiFormat = "echo"

    async def events(
        self, request: ir.ChatRequest, model: str, ctx: ClientContext
    ) -> AsyncIterator[ir.Event]:
        for event in answer(request, model):
            yield event

    async def close(self) -> None:
        return None


def answer(request: ir.ChatRequest, model: str) -> list[ir.Event]:
    usage_in = count_request_tokens(request)
    events: list[ir.Event] = [
        ir.MessageStart(new_message_id(), request.model, ir.Usage(input_tokens=usage_in)),
        ir.Ping(),
    ]
    last_user = _last_user(request)
    tool = _requested_tool(request, last_user)
    if tool is not None:
        arguments = msgspec.json.encode(_placeholder_input(tool.input_schema)).decode()
        events += [
            ir.ToolUseStart(0, tool_use_id(None), tool.name),
            ir.ToolInputDelta(0, arguments),
            ir.BlockStop(0),
        ]
        output, reason = count_text_tokens(arguments) + 8, "tool_use"
    else:
        text = _reply_text(request, last_user)
        events.append(ir.TextStart(0))
        words = re.findall(r"\S+\s*|\s+", text) or [""]
        if request.max_tokens is not None and len(words) > request.max_tokens:
            words, reason = words[: request.max_tokens], "max_tokens"
        else:
            reason = "end_turn"
        events += [ir.TextDelta(0, w) for w in words]
        events.append(ir.BlockStop(0))
        output = max(count_text_tokens("".join(words)), 1)
    events += [
        ir.MessageDelta(reason, ir.Usage(input_tokens=usage_in, output_tokens=output)),  # type: ignore[arg-type]
        ir.MessageStop(),
    ]
    return events


def _last_user(request: ir.ChatRequest) -> ir.Message | None:
    for message in reversed(request.messages):
        if message.role == "user":
            return message
    return None


def _texts(message: ir.Message | None) -> str:
    if message is None:
        return ""
    return "\n".join(p.text for p in message.content if isinstance(p, ir.TextPart))


def _requested_tool(request: ir.ChatRequest, last_user: ir.Message | None) -> ir.Tool | None:
    if not request.tools or (request.tool_choice and request.tool_choice.mode == "none"):
        return None
    if last_user and any(isinstance(p, ir.ToolResultPart) for p in last_user.content):
        return None
    by_name = {t.name.lower(): t for t in request.tools}
    choice = request.tool_choice
    if choice is not None and choice.mode == "tool" and choice.name:
        return by_name.get(choice.name.lower())
    match = _TOOL_ASK.search(_texts(last_user))
    if match:
        return by_name.get(match.group(1).lower())
    if choice is not None and choice.mode == "any":
        return request.tools[0]
    return None


def _placeholder_input(schema: dict[str, Any]) -> dict[str, Any]:
    properties = schema.get("properties")
    required = schema.get("required")
    if not isinstance(properties, dict) or not isinstance(required, list):
        return {}
    out: dict[str, Any] = {}
    for name in required:
        prop = properties.get(name)
        kind = prop.get("type") if isinstance(prop, dict) else None
        out[name] = _PLACEHOLDER.get(kind, "echo") if isinstance(kind, str) else "echo"
    return out


def _reply_text(request: ir.ChatRequest, last_user: ir.Message | None) -> str:
    if last_user is not None:
        results = [p for p in last_user.content if isinstance(p, ir.ToolResultPart)]
        if results:
            lines = []
            for result in results:
                text = " ".join(p.text for p in result.content if isinstance(p, ir.TextPart))
                status = "failed" if result.is_error else "returned"
                lines.append(f"Tool call {result.tool_use_id} {status}: {text}".rstrip())
            return "\n".join(lines)
    text = _texts(last_user).strip()
    return text or "(echo: no user text)"
