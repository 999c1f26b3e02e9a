"""The OpenAI Responses door (Codex CLI, the Agents SDK): ``POST /v1/responses``
bodies -> IR, and IR answers -> ``response`` objects.  Pure, no I/O.  The
streamed rendering (the ``response.*`` event grammar) is
:mod:`vdm.protocols.responses_door_stream`; both build their output items
with the per-item mappers here, so a streamed answer assembles into exactly
the non-streamed one.  A native upstream's answer relayed as bytes is read
by :mod:`vdm.protocols.responses_upstream`.

Mapping (README "Responses API (Codex CLI)"):

* ``instructions`` and ``system``/``developer`` messages -> system text (in
  place when they come mid-conversation);
* ``message`` items -> turns; ``function_call`` / ``function_call_output``
  items -> tool calls / results.  A ``call_id`` is the IR's tool-call id
  verbatim (``toolu_…``, as the other doors show it), both ways, so every
  upstream sees again the ids it issued (chat completions' ``call_…`` ids
  come back without the prefix the IR gave them);
* ``reasoning`` items <-> thinking blocks: the summary text is the thinking
  text; ``encrypted_content`` carries the upstream's thinking signature
  (``vdm:thinking:`` + signature) or redacted thinking (``vdm:redacted:`` +
  data).  Content without that prefix (OpenAI's own blobs) cannot be verified
  by any other upstream and is dropped;
* ``function`` tools -> IR tools (schemas verbatim); every other tool type
  (``web_search``, ``namespace``, ``custom``, ...) has no equivalent on other
  providers and is dropped (:attr:`Options.dropped`, logged by the pipeline),
  never refused: an agent must not stop over a tool it can live without;
* ``reasoning.effort`` -> a thinking budget (``none``/``minimal``: off);
  ``text.format`` json_object / json_schema -> the IR's output format, as
  ``response_format`` in the chat-completions door; ``input_file`` parts (a
  ``file_data`` data URL or a ``file_url``) -> documents;
* the gateway keeps no state: ``previous_response_id``, ``conversation``,
  ``item_reference`` items, ``background`` and stored ``prompt`` templates
  are a 400 on converted routes; ``store: true`` is accepted, nothing is
  stored (the response says ``store: false``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, assert_never

import msgspec

from vdm import ir
from vdm.errors import GatewayError, InvalidRequest
from vdm.ids import hex_id
from vdm.protocols import fields, openai_door, outcome
from vdm.protocols.sse import frame

_encode = msgspec.json.Encoder().encode

THINKING_PREFIX = "vdm:thinking:"
REDACTED_PREFIX = "vdm:redacted:"
_EFFORT_BUDGET = {**openai_door.EFFORT_BUDGET, "xhigh": 32768}
_NO_THINKING = ("none", "minimal")
_EMPTY_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}
# Fields of a stateful Responses API: refused on converted routes.
_STATEFUL = {
    "previous_response_id": "previous_response_id: this gateway is stateless and keeps no "
    "responses; send the whole conversation in 'input' (with store: false)",
    "conversation": "conversation: this gateway is stateless and keeps no conversations; "
    "send the whole conversation in 'input'",
    "prompt": "prompt: stored prompt templates are not supported by this gateway; "
    "send 'instructions' and 'input'",
}
# An error's kind -> the ``code`` of a failed response (``response.failed``).
_FAILED_CODES = {"rate_limit": "rate_limit_exceeded", "invalid_request": "invalid_prompt"}


class Options(msgspec.Struct, frozen=True):
    """What the answer echoes of the request (not part of the IR), and what
    the decoder had to drop."""

    model: str
    echo: dict[str, Any]
    dropped: tuple[str, ...] = ()


# ---------------------------------------------------------------- validation


_fail = fields.fail


def validate_request_fields(body: dict[str, Any]) -> str:
    """Checks every Responses request gets, passthrough included; returns the model."""
    model = fields.require_model(body)
    value = body.get("input")
    if value is not None and not isinstance(value, str | list):
        raise _fail("input", "string or array of input items", value)
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _fail("stream", "boolean", stream)
    return model


# ---------------------------------------------------------------- request -> IR


def decode_request(body: dict[str, Any]) -> tuple[ir.ChatRequest, Options]:
    model = validate_request_fields(body)
    for key, message in _STATEFUL.items():
        if body.get(key) is not None:
            raise InvalidRequest(message)
    if body.get("background") is True:
        raise InvalidRequest(
            "background: background responses need a store; this gateway "
            "is stateless (use stream: true for long answers)"
        )
    dropped: list[str] = []
    system: list[ir.TextPart] = []
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise _fail("instructions", "string", instructions)
        if instructions:
            system.append(ir.TextPart(instructions))
    messages = _decode_input(body.get("input"), system, dropped)
    if not messages:
        raise InvalidRequest("input: field required (a string or a non-empty array of items)")
    max_tokens = body.get("max_output_tokens")
    if max_tokens is not None and (
        isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
    ):
        raise _fail("max_output_tokens", "positive integer", max_tokens)
    tools = _decode_tools(body.get("tools"), dropped)
    user = body.get("safety_identifier", body.get("user"))
    request = ir.ChatRequest(
        model=model,
        messages=messages,
        max_tokens=max_tokens,
        system=system,
        stream=body.get("stream") is True,
        temperature=_number(body, "temperature"),
        top_p=_number(body, "top_p"),
        tools=tools,
        tool_choice=_decode_tool_choice(
            body.get("tool_choice"), body.get("parallel_tool_calls"), {t.name for t in tools}
        ),
        thinking=_decode_reasoning(body.get("reasoning")),
        user=user if isinstance(user, str) and user else None,
        output_format=_decode_text_format(body.get("text")),
    )
    return request, Options(model, _echo(body), tuple(dropped))


def _number(body: dict[str, Any], key: str) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(key, "number", value)
    return float(value)


def _decode_input(value: Any, system: list[ir.TextPart], dropped: list[str]) -> list[ir.Message]:
    if isinstance(value, str):
        return [ir.Message("user", [ir.TextPart(value)])]
    if value is None:
        return []
    messages: list[ir.Message] = []
    for i, item in enumerate(value):
        path = f"input.{i}"
        if not isinstance(item, dict):
            raise _fail(path, "object", item)
        kind = item.get("type", "message" if "role" in item else None)
        match kind:
            case "message":
                _decode_message(item, path, system, messages)
            case "function_call":
                _append(messages, "assistant", _function_call(item, path))
            case "function_call_output":
                _append(messages, "user", _function_call_output(item, path))
            case "custom_tool_call":  # (a custom tool of an earlier native turn)
                call_id = _str(item, "call_id", path)
                _append(
                    messages,
                    "assistant",
                    ir.ToolUsePart(
                        call_id, _str(item, "name", path), {"input": str(item.get("input", ""))}
                    ),
                )
            case "custom_tool_call_output":
                _append(
                    messages,
                    "user",
                    ir.ToolResultPart(
                        _str(item, "call_id", path), _output(item.get("output"), path)
                    ),
                )
            case "reasoning":
                part = _reasoning(item, path)
                if part is not None:
                    _append(messages, "assistant", part)
            case "item_reference":
                raise InvalidRequest(
                    f"{path}: item_reference needs stored items; this gateway "
                    "is stateless: send the items themselves"
                )
            case str():  # web_search_call, local_shell_call, compaction, ...: no equivalent
                dropped.append(f"input item {kind}")
            case _:
                raise _fail(f"{path}.type", "an input item type", kind)
    return messages


def _str(item: dict[str, Any], key: str, path: str) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not value:
        raise _fail(f"{path}.{key}", "non-empty string", value)
    return value


def _append(messages: list[ir.Message], role: ir.Role, part: ir.Part) -> None:
    """Consecutive items of one role make one turn (a reasoning item, the text
    and the calls of one assistant answer; the results of parallel calls)."""
    last = messages[-1] if messages else None
    if (
        last is not None
        and last.role == role
        and (role == "assistant" or all(isinstance(p, ir.ToolResultPart) for p in last.content))
    ):
        last.content.append(part)
    else:
        messages.append(ir.Message(role, [part]))


def _decode_message(
    item: dict[str, Any], path: str, system: list[ir.TextPart], messages: list[ir.Message]
) -> None:
    role = item.get("role")
    parts = _content(item.get("content"), path)
    if role in ("system", "developer"):
        texts = [p for p in parts if isinstance(p, ir.TextPart)]
        if messages:  # mid-conversation: stays in place
            messages.append(ir.Message("system", list(texts)))
        else:
            system.extend(texts)
    elif role == "user":
        messages.append(ir.Message("user", list(parts)))
    elif role == "assistant":
        for part in parts:
            _append(messages, "assistant", part)
    else:
        raise InvalidRequest(
            f"{path}.role: expected user, assistant, system or developer, got {role!r}"
        )


def _input_image(part: dict[str, Any], where: str) -> ir.ImagePart:
    if part.get("image_url") is None:
        raise InvalidRequest(
            f"{where}: only images given by image_url (an http(s) or "
            "base64 data: URL) are supported, not file_id"
        )
    return openai_door.image_part(part.get("image_url"), where)


def _input_file(part: dict[str, Any], where: str) -> ir.DocumentPart:
    return openai_door.document_part(part, where, url_key="file_url")


_PARTS: dict[str, openai_door.PartReader] = {
    "input_text": openai_door.text_part,
    "output_text": openai_door.text_part,
    "text": openai_door.text_part,
    "summary_text": openai_door.text_part,
    "refusal": openai_door.refusal_part,
    "input_image": _input_image,
    "input_file": _input_file,
}


def _content(content: Any, path: str) -> list[ir.ResultPart]:
    return openai_door.content_parts(
        content, path, _PARTS, "input_text, output_text, input_image or input_file"
    )


def _function_call(item: dict[str, Any], path: str) -> ir.ToolUsePart:
    arguments = item.get("arguments") or ""
    if not isinstance(arguments, str):
        raise _fail(f"{path}.arguments", "string", arguments)
    return ir.ToolUsePart(
        _str(item, "call_id", path),
        _str(item, "name", path),
        ir.parse_tool_input(arguments),
    )


def _function_call_output(item: dict[str, Any], path: str) -> ir.ToolResultPart:
    return ir.ToolResultPart(_str(item, "call_id", path), _output(item.get("output"), path))


def _output(value: Any, path: str) -> list[ir.ResultPart]:
    if value is None:
        return []
    if isinstance(value, str):
        return [ir.TextPart(value)]
    return _content(value, path + ".output")


def _reasoning(item: dict[str, Any], path: str) -> ir.Part | None:
    """A reasoning item back from the client: thinking the upstream can verify, or nothing."""
    summary = item.get("summary") or []
    if not isinstance(summary, list):
        raise _fail(f"{path}.summary", "array", summary)
    text = "\n\n".join(p.get("text", "") for p in summary if isinstance(p, dict))
    encrypted = item.get("encrypted_content")
    if isinstance(encrypted, str):
        if encrypted.startswith(THINKING_PREFIX):
            return ir.ThinkingPart(text, encrypted[len(THINKING_PREFIX) :])
        if encrypted.startswith(REDACTED_PREFIX):
            return ir.RedactedThinkingPart(encrypted[len(REDACTED_PREFIX) :])
    # Without a signature no upstream takes thinking back; the encoders drop it.
    return ir.ThinkingPart(text) if text else None


def _decode_tools(value: Any, dropped: list[str]) -> list[ir.Tool]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _fail("tools", "array", value)
    tools = []
    for i, tool in enumerate(value):
        if not isinstance(tool, dict):
            raise _fail(f"tools.{i}", "object", tool)
        kind = tool.get("type")
        if kind != "function":
            name = tool.get("name")
            dropped.append(f"tool {kind}" + (f" {name!r}" if isinstance(name, str) else ""))
            continue
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise _fail(f"tools.{i}.name", "non-empty string", name)
        schema = tool.get("parameters") or _EMPTY_SCHEMA
        if not isinstance(schema, dict):
            raise _fail(f"tools.{i}.parameters", "object", schema)
        description = tool.get("description")
        tools.append(ir.Tool(name, description if isinstance(description, str) else None, schema))
    return tools


def _decode_tool_choice(value: Any, parallel: Any, names: set[str]) -> ir.ToolChoice | None:
    disable = parallel is False
    if value is None:
        return ir.ToolChoice("auto", disable_parallel=True) if disable else None
    if value in ("auto", "none"):
        return ir.ToolChoice(value, disable_parallel=disable)
    if value == "required":
        return ir.ToolChoice("any", disable_parallel=disable)
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "function":
        name = value.get("name")
        if not isinstance(name, str) or not name:
            raise _fail("tool_choice.name", "non-empty string", name)
        if name not in names:
            raise InvalidRequest(f"tool_choice.name: no function tool named {name!r} in tools")
        return ir.ToolChoice("tool", name, disable_parallel=disable)
    if kind == "allowed_tools":
        mode = value.get("mode", "auto")
        return ir.ToolChoice("any" if mode == "required" else "auto", disable_parallel=disable)
    if isinstance(kind, str):  # a hosted tool (web_search, ...): dropped, so the model picks
        return ir.ToolChoice("auto", disable_parallel=disable)
    raise InvalidRequest(
        "tool_choice: expected 'auto', 'none', 'required' or "
        '{"type": "function", "name": ...}'
    )


def _decode_reasoning(value: Any) -> ir.Thinking | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _fail("reasoning", "object", value)
    effort = value.get("effort")
    if effort is None:
        return None
    if effort in _NO_THINKING:
        return ir.Thinking("disabled")
    budget = _EFFORT_BUDGET.get(effort) if isinstance(effort, str) else None
    if budget is None:
        raise InvalidRequest(
            f"reasoning.effort: expected none, minimal, low, medium, high or xhigh, got {effort!r}"
        )
    return ir.Thinking("enabled", budget)


def _decode_text_format(text: Any) -> ir.OutputFormat | None:
    """``text.format``: the chat-completions ``response_format`` with the
    json_schema fields one level up."""
    if text is None:
        return None
    if not isinstance(text, dict):
        raise _fail("text", "object", text)
    fmt = text.get("format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        return openai_door.json_schema_format(fmt, "text.format")
    return openai_door.output_format(fmt, "text.format")


def _echo(body: dict[str, Any]) -> dict[str, Any]:
    """The request fields a response object repeats, as the client sent them."""
    reasoning = body.get("reasoning")
    text = body.get("text")
    return {
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": None,
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")}
        if isinstance(reasoning, dict)
        else {"effort": None, "summary": None},
        "store": False,  # nothing is stored, whatever the client asked
        "temperature": body.get("temperature"),
        "text": text
        if isinstance(text, dict) and text.get("format")
        else {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_p": body.get("top_p"),
        "truncation": "disabled",
        "user": body.get("user"),
        "metadata": body.get("metadata") or {},
    }


# ---------------------------------------------------------------- IR -> response


def new_response_id() -> str:
    return "resp_" + hex_id(16)


def item_id(kind: str, response_id: str, index: int) -> str:
    """An output item's id: unique in the response, no randomness per item."""
    return f"{kind}_{response_id[5:]}{index:03d}"


def message_item(id_: str, text: str, status: str = "completed") -> dict[str, Any]:
    content = [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
    return {
        "id": id_,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": content if status == "completed" else [],
    }


def function_call_item(
    id_: str, call_id: str, name: str, arguments: str, status: str = "completed"
) -> dict[str, Any]:
    return {
        "id": id_,
        "type": "function_call",
        "status": status,
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
    }


def reasoning_item(id_: str, text: str, encrypted: str | None) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": id_,
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": text}] if text else [],
    }
    if encrypted is not None:
        item["encrypted_content"] = encrypted
    return item


def output_items(content: list[ir.Part], response_id: str) -> Iterator[dict[str, Any]]:
    for index, part in enumerate(content):
        match part:
            case ir.TextPart(text=text):
                yield message_item(item_id("msg", response_id, index), text)
            case ir.ToolUsePart(id=call_id, name=name, input=tool_input):
                yield function_call_item(
                    item_id("fc", response_id, index),
                    call_id,
                    name,
                    _encode(tool_input).decode(),
                )
            case ir.ThinkingPart(thinking=thinking, signature=signature):
                yield reasoning_item(
                    item_id("rs", response_id, index),
                    thinking,
                    THINKING_PREFIX + signature if signature else None,
                )
            case ir.RedactedThinkingPart(data=data):
                yield reasoning_item(item_id("rs", response_id, index), "", REDACTED_PREFIX + data)
            case ir.ImagePart() | ir.DocumentPart() | ir.ToolResultPart():
                pass
            case _:
                assert_never(part)


def usage_dict(usage: ir.Usage) -> dict[str, Any]:
    prompt, cached = outcome.prompt_tokens(usage)
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens or 0},
        "total_tokens": prompt + usage.output_tokens,
    }


def envelope(
    options: Options,
    response_id: str,
    created: int,
    status: str,
    output: list[dict[str, Any]],
    usage: ir.Usage | None,
    stop_reason: str | None = None,
) -> dict[str, Any]:
    """The response object around its output: in progress, finished or failed."""
    reason = outcome.INCOMPLETE_REASONS.get(stop_reason or "")
    if reason is not None and status == "completed":
        status = "incomplete"
    return {
        "id": response_id,
        "object": "response",
        "created_at": created,
        "status": status,
        "error": None,
        "incomplete_details": {"reason": reason} if status == "incomplete" else None,
        "model": options.model,
        "output": output,
        **options.echo,
        "usage": usage_dict(usage) if usage is not None else None,
    }


def encode_response(response: ir.ChatResponse, options: Options) -> bytes:
    response_id = new_response_id()
    output = list(output_items(response.content, response_id))
    return _encode(
        envelope(
            options,
            response_id,
            int(time.time()),
            "completed",
            output,
            response.usage,
            response.stop_reason,
        )
    )


# ---------------------------------------------------------------- errors


def error_body(error: GatewayError) -> dict[str, Any]:
    return openai_door.error_body(error)


def encode_error(error: GatewayError) -> bytes:
    """An HTTP error answer: the OpenAI API's error shape, as for every OpenAI path."""
    return openai_door.encode_error(error)


def failure(error: GatewayError) -> dict[str, Any]:
    """A failed response's ``error`` field."""
    return {"code": _FAILED_CODES.get(error.kind, "server_error"), "message": error.message}


def error_events(error: GatewayError, sequence: int, failed: dict[str, Any]) -> bytes:
    """How a stream that already started ends on a failure: an ``error`` event
    (what the SDK's raw stream reports) and ``response.failed`` carrying the
    message (what Codex reads)."""
    failed["error"] = failure(error)
    return frame(
        "error",
        _encode(
            {
                "type": "error",
                "code": error.kind,
                "message": error.message,
                "param": None,
                "sequence_number": sequence,
            }
        ),
    ) + frame(
        "response.failed",
        _encode({"type": "response.failed", "response": failed, "sequence_number": sequence + 1}),
    )


def encode_stream_error(error: GatewayError) -> bytes:
    """A failure before any event of the stream went out (pings only)."""
    options = Options("", {})
    failed = envelope(options, new_response_id(), int(time.time()), "failed", [], None)
    return error_events(error, 0, failed)


# Sent while a stream is silent: an SSE comment, which the openai SDK and Codex skip.
PING = b": ping\n\n"
