"""The Anthropic Messages door: a client's request -> IR, and IR -> the
client's answer (whole, or its SSE events), errors, ``count_tokens`` and the
model list.  Pure functions, no I/O.  (The other direction, the gateway
calling an Anthropic-native provider, is :mod:`vdm.protocols.anthropic_upstream`.)

Decoding validates at the edge: a wrong type is an ``InvalidRequest`` naming
the JSON path; a field the gateway does not know is never an error (it is
kept for Anthropic-native upstreams, which get the original body, and dropped
for others).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, assert_never

import msgspec

from vdm import ir
from vdm.errors import GatewayError, InvalidRequest
from vdm.protocols import fields
from vdm.protocols.sse import frame
from vdm.protocols.structured import strict_compatible

if TYPE_CHECKING:
    from vdm.protocols.model_list import ModelEntry

_encode = msgspec.json.Encoder().encode

# ---------------------------------------------------------------- request decoding


_fail = fields.fail


def _str(obj: dict[str, Any], key: str, path: str, *, required: bool = False) -> str | None:
    value = obj.get(key)
    if value is None:
        if required:
            raise InvalidRequest(f"{path}.{key}: field required")
        return None
    if not isinstance(value, str):
        raise _fail(f"{path}.{key}", "string", value)
    return value


def _number(obj: dict[str, Any], key: str) -> float | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(key, "number", value)
    return float(value)


def _int(obj: dict[str, Any], key: str, path: str) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(f"{path}.{key}" if path else key, "integer", value)
    return value


def validate_request_fields(body: dict[str, Any]) -> str:
    """The checks every /v1/messages request gets, passthrough included.

    Returns the requested model name.
    """
    model = fields.require_model(body)
    messages = body.get("messages")
    if messages is None:
        raise InvalidRequest("messages: field required")
    if not isinstance(messages, list):
        raise _fail("messages", "array", messages)
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        raise InvalidRequest("max_tokens: field required")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise _fail("max_tokens", "positive integer", max_tokens)
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _fail("stream", "boolean", stream)
    return model


def validate_count_tokens_fields(body: dict[str, Any]) -> str:
    model = fields.require_model(body)
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise (
            InvalidRequest("messages: field required")
            if messages is None
            else _fail("messages", "array", messages)
        )
    return model


def decode_request(body: dict[str, Any], *, count_only: bool = False) -> ir.ChatRequest:
    """Anthropic request JSON (already parsed) -> IR."""
    model = validate_count_tokens_fields(body) if count_only else validate_request_fields(body)
    messages = [_decode_message(m, f"messages.{i}") for i, m in enumerate(body["messages"])]
    request = ir.ChatRequest(
        model=model,
        messages=messages,
        max_tokens=body.get("max_tokens"),
        system=_decode_system(body.get("system")),
        stream=bool(body.get("stream", False)),
        temperature=_number(body, "temperature"),
        top_p=_number(body, "top_p"),
        top_k=_int(body, "top_k", ""),
        stop=_decode_stop(body.get("stop_sequences")),
        tools=_decode_tools(body.get("tools")),
        tool_choice=_decode_tool_choice(body.get("tool_choice")),
        thinking=_decode_thinking(body.get("thinking")),
        effort=_decode_effort(body.get("output_config")),
        user=_decode_user(body.get("metadata")),
        output_format=_decode_output_format(body),
    )
    return request


def _decode_system(value: Any) -> list[ir.TextPart]:
    if value is None:
        return []
    if isinstance(value, str):
        return [ir.TextPart(value)] if value else []
    if not isinstance(value, list):
        raise _fail("system", "string or array of text blocks", value)
    parts = []
    for i, block in enumerate(value):
        if not isinstance(block, dict):
            raise _fail(f"system.{i}", "object", block)
        text = _str(block, "text", f"system.{i}", required=True)
        parts.append(ir.TextPart(text or ""))
    return parts


def _decode_message(value: Any, path: str) -> ir.Message:
    if not isinstance(value, dict):
        raise _fail(path, "object", value)
    role = value.get("role")
    if role not in ("user", "assistant", "system"):
        raise InvalidRequest(f"{path}.role: expected 'user', 'assistant' or 'system', got {role!r}")
    content = value.get("content")
    if isinstance(content, str):
        return ir.Message(role, [ir.TextPart(content)])
    if not isinstance(content, list):
        if content is None:
            raise InvalidRequest(f"{path}.content: field required")
        raise _fail(f"{path}.content", "string or array of content blocks", content)
    parts: list[ir.Part] = []
    for i, block in enumerate(content):
        part = _decode_block(block, f"{path}.content.{i}")
        if part is not None:
            parts.append(part)
    return ir.Message(role, parts)


def _decode_block(block: Any, path: str) -> ir.Part | None:
    if not isinstance(block, dict):
        raise _fail(path, "object", block)
    kind = block.get("type")
    if kind == "text":
        return ir.TextPart(_str(block, "text", path, required=True) or "")
    if kind == "image":
        return _decode_image(block, path)
    if kind == "tool_use":
        tool_input = block.get("input", {})
        if not isinstance(tool_input, dict):
            raise _fail(f"{path}.input", "object", tool_input)
        return ir.ToolUsePart(
            id=_str(block, "id", path, required=True) or "",
            name=_str(block, "name", path, required=True) or "",
            input=tool_input,
        )
    if kind == "tool_result":
        return _decode_tool_result(block, path)
    if kind == "thinking":
        return ir.ThinkingPart(
            thinking=_str(block, "thinking", path) or "",
            signature=_str(block, "signature", path),
        )
    if kind == "redacted_thinking":
        return ir.RedactedThinkingPart(_str(block, "data", path) or "")
    if kind == "document":
        return _decode_document(block, path)
    if not isinstance(kind, str):
        raise InvalidRequest(f"{path}.type: field required")
    # Block types without a neutral meaning (server tool results, search
    # results, ...) reach Anthropic-native upstreams untouched; others drop them.
    return None


def _decode_image(block: dict[str, Any], path: str) -> ir.ImagePart:
    source = block.get("source")
    if not isinstance(source, dict):
        raise _fail(f"{path}.source", "object", source)
    kind = source.get("type")
    if kind == "base64":
        return ir.ImagePart(
            media_type=_str(source, "media_type", f"{path}.source", required=True) or "",
            data=_str(source, "data", f"{path}.source", required=True),
        )
    if kind == "url":
        return ir.ImagePart(url=_str(source, "url", f"{path}.source", required=True))
    raise InvalidRequest(f"{path}.source.type: expected 'base64' or 'url', got {kind!r}")


def _decode_document(block: dict[str, Any], path: str) -> ir.DocumentPart:
    """A document block: base64 (PDF), a URL, plain text, or content blocks of
    text.  A Files API ``file_id`` means something to Anthropic alone: a 400
    (this decoding serves only the routes to other upstreams)."""
    source = block.get("source")
    if not isinstance(source, dict):
        raise _fail(f"{path}.source", "object", source)
    where = f"{path}.source"
    title = _str(block, "title", path)
    kind = source.get("type")
    if kind == "base64":
        return ir.DocumentPart(
            media_type=_str(source, "media_type", where, required=True) or "",
            data=_str(source, "data", where, required=True),
            filename=title,
        )
    if kind == "url":
        return ir.DocumentPart(
            media_type="application/pdf",
            url=_str(source, "url", where, required=True),
            filename=title,
        )
    if kind == "text":
        return ir.DocumentPart(
            media_type=_str(source, "media_type", where) or "text/plain",
            text=_str(source, "data", where, required=True),
            filename=title,
        )
    if kind == "content":
        return ir.DocumentPart(
            media_type="text/plain",
            text=_content_text(source.get("content"), where),
            filename=title,
        )
    if kind == "file":
        raise InvalidRequest(
            f"{where}: a document given by file_id (Anthropic's Files API) can only go to an "
            "Anthropic-native provider; send it as base64, a URL or text"
        )
    raise InvalidRequest(
        f"{where}.type: expected 'base64', 'url', 'text' or 'content', got {kind!r}"
    )


def _content_text(content: Any, path: str) -> str:
    """A document's ``content`` source: a string, or text blocks (the only kind
    that can travel as text)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise _fail(f"{path}.content", "string or array of text blocks", content)
    texts = []
    for i, block in enumerate(content):
        if not isinstance(block, dict) or block.get("type") != "text":
            raise InvalidRequest(
                f"{path}.content.{i}: only text blocks of a content document can be sent to "
                "this provider"
            )
        texts.append(_str(block, "text", f"{path}.content.{i}", required=True) or "")
    return "\n\n".join(texts)


def _decode_output_format(body: dict[str, Any]) -> ir.OutputFormat | None:
    """``output_config.format``, or the older top-level ``output_format``."""
    config = body.get("output_config")
    path, fmt = "output_config.format", config.get("format") if isinstance(config, dict) else None
    if fmt is None:
        path, fmt = "output_format", body.get("output_format")
    if fmt is None:
        return None
    if not isinstance(fmt, dict):
        raise _fail(path, "object", fmt)
    if fmt.get("type") != "json_schema":
        raise InvalidRequest(f"{path}.type: expected 'json_schema', got {fmt.get('type')!r}")
    schema = fmt.get("schema")
    if not isinstance(schema, dict):
        raise _fail(f"{path}.schema", "object", schema)
    # Always enforced: strict wherever OpenAI's strict mode can take the schema.
    return ir.OutputFormat("json_schema", schema, strict=strict_compatible(schema))


def _decode_tool_result(block: dict[str, Any], path: str) -> ir.ToolResultPart:
    content = block.get("content")
    parts: list[ir.ResultPart] = []
    if isinstance(content, str):
        parts.append(ir.TextPart(content))
    elif isinstance(content, list):
        for i, inner in enumerate(content):
            part = _decode_block(inner, f"{path}.content.{i}")
            if isinstance(part, ir.TextPart | ir.ImagePart | ir.DocumentPart):
                parts.append(part)
    elif content is not None:
        raise _fail(f"{path}.content", "string or array", content)
    is_error = block.get("is_error", False)
    if not isinstance(is_error, bool):
        raise _fail(f"{path}.is_error", "boolean", is_error)
    return ir.ToolResultPart(
        tool_use_id=_str(block, "tool_use_id", path, required=True) or "",
        content=parts,
        is_error=is_error,
    )


def _decode_stop(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        raise _fail("stop_sequences", "array of strings", value)
    return value


def _decode_tools(value: Any) -> list[ir.Tool]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _fail("tools", "array", value)
    tools = []
    for i, tool in enumerate(value):
        if not isinstance(tool, dict):
            raise _fail(f"tools.{i}", "object", tool)
        kind = tool.get("type")
        if kind not in (None, "custom"):
            # Server tools (web_search_..., bash_..., text_editor_...) run on
            # Anthropic's side; they have no meaning for other upstreams.
            continue
        schema = tool.get("input_schema")
        if not isinstance(schema, dict):
            raise _fail(f"tools.{i}.input_schema", "object", schema)
        tools.append(
            ir.Tool(
                name=_str(tool, "name", f"tools.{i}", required=True) or "",
                description=_str(tool, "description", f"tools.{i}"),
                input_schema=schema,
            )
        )
    return tools


def _decode_tool_choice(value: Any) -> ir.ToolChoice | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _fail("tool_choice", "object", value)
    mode = value.get("type")
    if mode not in ("auto", "any", "tool", "none"):
        raise InvalidRequest(
            f"tool_choice.type: expected 'auto', 'any', 'tool' or 'none', got {mode!r}"
        )
    name = _str(value, "name", "tool_choice", required=mode == "tool")
    disable = value.get("disable_parallel_tool_use", False)
    if not isinstance(disable, bool):
        raise _fail("tool_choice.disable_parallel_tool_use", "boolean", disable)
    return ir.ToolChoice(mode=mode, name=name, disable_parallel=disable)


def _decode_thinking(value: Any) -> ir.Thinking | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _fail("thinking", "object", value)
    mode = value.get("type")
    if mode == "enabled":
        return ir.Thinking("enabled", _int(value, "budget_tokens", "thinking"))
    if mode == "adaptive":
        return ir.Thinking("adaptive")
    if mode == "disabled":
        return ir.Thinking("disabled")
    raise InvalidRequest(
        f"thinking.type: expected 'enabled', 'adaptive' or 'disabled', got {mode!r}"
    )


_EFFORTS = ("minimal", "low", "medium", "high", "max")


def _decode_effort(value: Any) -> ir.Effort | None:
    if not isinstance(value, dict):
        return None
    effort = value.get("effort")
    return effort if effort in _EFFORTS else None


def _decode_user(value: Any) -> str | None:
    if not isinstance(value, dict):
        return None
    user = value.get("user_id")
    return user if isinstance(user, str) else None


# ---------------------------------------------------------------- response encoding


def _usage_dict(usage: ir.Usage) -> dict[str, Any]:
    out: dict[str, Any] = {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
    }
    if usage.cache_read_input_tokens is not None:
        out["cache_read_input_tokens"] = usage.cache_read_input_tokens
    if usage.cache_creation_input_tokens is not None:
        out["cache_creation_input_tokens"] = usage.cache_creation_input_tokens
    return out


def _part_dict(part: ir.Part) -> dict[str, Any]:
    match part:
        case ir.TextPart(text=text):
            return {"type": "text", "text": text}
        case ir.ToolUsePart(id=id_, name=name, input=tool_input):
            return {"type": "tool_use", "id": id_, "name": name, "input": tool_input}
        case ir.ThinkingPart(thinking=thinking, signature=signature):
            return {"type": "thinking", "thinking": thinking, "signature": signature or ""}
        case ir.RedactedThinkingPart(data=data):
            return {"type": "redacted_thinking", "data": data}
        case ir.ImagePart():
            raise ValueError("an image cannot appear in an assistant response")
        case ir.DocumentPart():
            raise ValueError("a document cannot appear in an assistant response")
        case ir.ToolResultPart():
            raise ValueError("a tool result cannot appear in an assistant response")
        case _:
            assert_never(part)


def encode_response(response: ir.ChatResponse) -> bytes:
    return _encode(
        {
            "id": response.id,
            "type": "message",
            "role": "assistant",
            "model": response.model,
            "content": [_part_dict(p) for p in response.content],
            "stop_reason": response.stop_reason,
            "stop_sequence": response.stop_sequence,
            "usage": _usage_dict(response.usage),
        }
    )


# ---------------------------------------------------------------- stream encoding
#
# One small encoder per IR event type, found by the event's type in one table
# (a dict lookup, where a ``match`` tries the cases in turn).  The frames sent
# many times per stream (the deltas, a block's stop) are byte templates around
# the one value that changes, the same bytes msgspec writes for the dict; the
# frames sent once per stream build their dict.  The table covers every member
# of :data:`vdm.ir.Event` (tests/unit/test_anthropic_door.py checks it).

_PING = frame("ping", b'{"type":"ping"}')
_MESSAGE_STOP = frame("message_stop", b'{"type":"message_stop"}')
_BLOCK_DELTA = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":'


def _text_delta(event: ir.TextDelta) -> bytes:
    return b'%b%d,"delta":{"type":"text_delta","text":%b}}\n\n' % (
        _BLOCK_DELTA,
        event.index,
        _encode(event.text),
    )


def _tool_input_delta(event: ir.ToolInputDelta) -> bytes:
    return b'%b%d,"delta":{"type":"input_json_delta","partial_json":%b}}\n\n' % (
        _BLOCK_DELTA,
        event.index,
        _encode(event.partial_json),
    )


def _thinking_delta(event: ir.ThinkingDelta) -> bytes:
    return b'%b%d,"delta":{"type":"thinking_delta","thinking":%b}}\n\n' % (
        _BLOCK_DELTA,
        event.index,
        _encode(event.thinking),
    )


def _signature_delta(event: ir.SignatureDelta) -> bytes:
    return b'%b%d,"delta":{"type":"signature_delta","signature":%b}}\n\n' % (
        _BLOCK_DELTA,
        event.index,
        _encode(event.signature),
    )


def _block_stop(event: ir.BlockStop) -> bytes:
    return b'event: content_block_stop\ndata: {"type":"content_block_stop","index":%d}\n\n' % (
        event.index
    )


def _block_start(index: int, block: dict[str, Any]) -> bytes:
    return frame(
        "content_block_start",
        _encode({"type": "content_block_start", "index": index, "content_block": block}),
    )


def _text_start(event: ir.TextStart) -> bytes:
    return _block_start(event.index, {"type": "text", "text": ""})


def _tool_use_start(event: ir.ToolUseStart) -> bytes:
    block = {"type": "tool_use", "id": event.id, "name": event.name, "input": {}}
    return _block_start(event.index, block)


def _thinking_start(event: ir.ThinkingStart) -> bytes:
    return _block_start(event.index, {"type": "thinking", "thinking": "", "signature": ""})


def _redacted_thinking_start(event: ir.RedactedThinkingStart) -> bytes:
    return _block_start(event.index, {"type": "redacted_thinking", "data": event.data})


def _message_start(event: ir.MessageStart) -> bytes:
    message: dict[str, Any] = {
        "id": event.id,
        "type": "message",
        "role": "assistant",
        "model": event.model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": _usage_dict(event.usage),
    }
    return frame("message_start", _encode({"type": "message_start", "message": message}))


def _message_delta(event: ir.MessageDelta) -> bytes:
    body = {
        "type": "message_delta",
        "delta": {"stop_reason": event.stop_reason, "stop_sequence": event.stop_sequence},
        "usage": _usage_dict(event.usage),
    }
    return frame("message_delta", _encode(body))


def _message_stop(event: ir.MessageStop) -> bytes:
    return _MESSAGE_STOP


def _ping(event: ir.Ping) -> bytes:
    return _PING


EVENT_ENCODERS: dict[type[ir.Event], Callable[[Any], bytes]] = {
    ir.TextDelta: _text_delta,
    ir.ToolInputDelta: _tool_input_delta,
    ir.ThinkingDelta: _thinking_delta,
    ir.SignatureDelta: _signature_delta,
    ir.BlockStop: _block_stop,
    ir.TextStart: _text_start,
    ir.ToolUseStart: _tool_use_start,
    ir.ThinkingStart: _thinking_start,
    ir.RedactedThinkingStart: _redacted_thinking_start,
    ir.MessageStart: _message_start,
    ir.MessageDelta: _message_delta,
    ir.MessageStop: _message_stop,
    ir.Ping: _ping,
}
_encoder_of = EVENT_ENCODERS.__getitem__


def encode_event(event: ir.Event) -> bytes:
    """One IR stream event -> one Anthropic SSE frame."""
    return _encoder_of(type(event))(event)


# ---------------------------------------------------------------- errors

_ERROR_TYPES = {
    "invalid_request": "invalid_request_error",
    "authentication": "authentication_error",
    "permission": "permission_error",
    "not_found": "not_found_error",
    "too_large": "request_too_large",
    "rate_limit": "rate_limit_error",
    "api_error": "api_error",
    "overloaded": "overloaded_error",
    "timeout": "api_error",
}


def error_body(error: GatewayError) -> dict[str, Any]:
    return {"type": "error", "error": {"type": _ERROR_TYPES[error.kind], "message": error.message}}


def encode_error(error: GatewayError) -> bytes:
    return _encode(error_body(error))


# Sent while a stream is silent (server.asgi.send_stream), as Anthropic does.
PING = b'event: ping\ndata: {"type": "ping"}\n\n'


def encode_stream_error(error: GatewayError) -> bytes:
    """The error event that ends a stream whose first bytes already went out."""
    return frame("error", encode_error(error))


def encode_count(input_tokens: int) -> bytes:
    return _encode({"input_tokens": input_tokens})


# ---------------------------------------------------------------- model list


def model_list(models: Sequence[ModelEntry], created: float) -> dict[str, Any]:
    """``GET /v1/models`` in Anthropic's list shape (one page, no cursor)."""
    created_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created))
    data = [
        {"type": "model", "id": m.id, "display_name": m.display_name, "created_at": created_at}
        for m in models
    ]
    return {
        "data": data,
        "has_more": False,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
    }
