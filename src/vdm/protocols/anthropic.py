"""Anthropic Messages API <-> IR.  Pure functions, no I/O.

Decoding validates at the edge: a wrong type is an ``InvalidRequest`` naming
the JSON path; a field the gateway does not know is never an error (it is
kept for Anthropic-native upstreams, which get the original body, and dropped
for others).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, assert_never

import msgspec

from vdm import ir
from vdm.errors import GatewayError, InvalidRequest, UpstreamProtocolError
from vdm.ids import hex_id
from vdm.protocols import fields
from vdm.protocols.sse import frame, last_frame
from vdm.protocols.structured import anthropic_schema, strict_compatible

if TYPE_CHECKING:
    from vdm.protocols.model_list import ModelEntry

_decoder = msgspec.json.Decoder()
_encode = msgspec.json.Encoder().encode

# ---------------------------------------------------------------- ids


def new_message_id() -> str:
    return "msg_" + hex_id(12)


def tool_use_id(upstream_id: str | None) -> str:
    """An id of the ``toolu_`` form, stable for a given upstream id."""
    if not upstream_id:
        return "toolu_" + hex_id(12)
    if upstream_id.startswith("toolu_"):
        return upstream_id
    return "toolu_" + upstream_id


def upstream_tool_id(tool_use_id: str) -> str:
    """The inverse of :func:`tool_use_id`: the id to send to a non-Anthropic
    upstream, so it sees the call ids it issued (consistent for any input)."""
    return (
        tool_use_id[6:]
        if tool_use_id.startswith("toolu_") and len(tool_use_id) > 6
        else tool_use_id
    )


# ---------------------------------------------------------------- request decoding


decode_json_object = fields.decode_json_object  # (the name other modules import)


_fail = fields.fail
_type_name = fields.type_name


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

_PING = frame("ping", b'{"type":"ping"}')
_MESSAGE_STOP = frame("message_stop", b'{"type":"message_stop"}')


def encode_event(event: ir.Event) -> bytes:
    """One IR stream event -> one Anthropic SSE frame."""
    match event:
        case ir.TextDelta(index=i, text=text):
            return frame(
                "content_block_delta",
                _encode(
                    {
                        "type": "content_block_delta",
                        "index": i,
                        "delta": {"type": "text_delta", "text": text},
                    }
                ),
            )
        case ir.ToolInputDelta(index=i, partial_json=pj):
            return frame(
                "content_block_delta",
                _encode(
                    {
                        "type": "content_block_delta",
                        "index": i,
                        "delta": {"type": "input_json_delta", "partial_json": pj},
                    }
                ),
            )
        case ir.ThinkingDelta(index=i, thinking=thinking):
            return frame(
                "content_block_delta",
                _encode(
                    {
                        "type": "content_block_delta",
                        "index": i,
                        "delta": {"type": "thinking_delta", "thinking": thinking},
                    }
                ),
            )
        case ir.SignatureDelta(index=i, signature=sig):
            return frame(
                "content_block_delta",
                _encode(
                    {
                        "type": "content_block_delta",
                        "index": i,
                        "delta": {"type": "signature_delta", "signature": sig},
                    }
                ),
            )
        case ir.TextStart(index=i):
            return _block_start(i, {"type": "text", "text": ""})
        case ir.ToolUseStart(index=i, id=id_, name=name):
            return _block_start(i, {"type": "tool_use", "id": id_, "name": name, "input": {}})
        case ir.ThinkingStart(index=i):
            return _block_start(i, {"type": "thinking", "thinking": "", "signature": ""})
        case ir.RedactedThinkingStart(index=i, data=data):
            return _block_start(i, {"type": "redacted_thinking", "data": data})
        case ir.BlockStop(index=i):
            return frame("content_block_stop", _encode({"type": "content_block_stop", "index": i}))
        case ir.MessageStart(id=id_, model=model, usage=usage):
            return frame(
                "message_start",
                _encode(
                    {
                        "type": "message_start",
                        "message": {
                            "id": id_,
                            "type": "message",
                            "role": "assistant",
                            "model": model,
                            "content": [],
                            "stop_reason": None,
                            "stop_sequence": None,
                            "usage": _usage_dict(usage),
                        },
                    }
                ),
            )
        case ir.MessageDelta(stop_reason=reason, usage=usage, stop_sequence=seq):
            return frame(
                "message_delta",
                _encode(
                    {
                        "type": "message_delta",
                        "delta": {"stop_reason": reason, "stop_sequence": seq},
                        "usage": _usage_dict(usage),
                    }
                ),
            )
        case ir.MessageStop():
            return _MESSAGE_STOP
        case ir.Ping():
            return _PING
        case _:
            assert_never(event)


def _block_start(index: int, block: dict[str, Any]) -> bytes:
    return frame(
        "content_block_start",
        _encode({"type": "content_block_start", "index": index, "content_block": block}),
    )


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


# ---------------------------------------------------------------- passthrough tap

_USAGE_EVENTS = tuple((e, (e.encode(),)) for e in ("message_start", "message_delta"))


class UsageTap:
    """Reads usage out of an Anthropic SSE stream relayed as bytes.

    Fed whole frames (:class:`~vdm.protocols.sse.FrameCutter`); only the last
    ``message_start`` and ``message_delta`` frames of each feed are parsed and
    decoded (usage in both is cumulative), text deltas pass by a substring search.
    """

    __slots__ = ("stop_reason", "usage")

    def __init__(self) -> None:
        self.usage = ir.Usage()
        self.stop_reason: str | None = None

    def feed(self, frames: bytes) -> None:
        if b"message_" not in frames:
            return  # text deltas: nothing to read
        for event, needle in _USAGE_EVENTS:  # the start's usage first, then the final one
            found = last_frame(frames, needle, event)
            if found is not None:
                self._read(event, found[1])

    def _read(self, event: str, data: bytes) -> None:
        try:
            value = _decoder.decode(data)
        except (msgspec.DecodeError, UnicodeDecodeError):
            return
        if not isinstance(value, dict):
            return
        if event == "message_start":
            message = value.get("message")
            usage = message.get("usage") if isinstance(message, dict) else None
        else:
            usage = value.get("usage")
            delta = value.get("delta")
            if isinstance(delta, dict) and isinstance(delta.get("stop_reason"), str):
                self.stop_reason = delta["stop_reason"]
        if isinstance(usage, dict):
            self.usage = ir.merge_usage(self.usage, usage_from_dict(usage))


def usage_from_dict(usage: dict[str, Any]) -> ir.Usage:
    def num(key: str) -> int | None:
        value = usage.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    return ir.Usage(
        input_tokens=num("input_tokens") or 0,
        output_tokens=num("output_tokens") or 0,
        cache_read_input_tokens=num("cache_read_input_tokens"),
        cache_creation_input_tokens=num("cache_creation_input_tokens"),
    )


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


# ================================================================ upstream direction
#
# The gateway calling an Anthropic-native provider for a client of another
# protocol (OpenAI door, gRPC):
#
# * :func:`encode_request` — IR request -> Messages API body;
# * :class:`EventDecoder` — the upstream's SSE events -> IR events;
# * :func:`response_events` — a non-streaming message -> the same IR events.
#
# Mapping notes: ``system`` turns in mid-conversation join the top-level
# system text (the Messages API takes no system role in ``messages``);
# consecutive turns of one role merge (the API requires alternation), with a
# user turn's tool results first; empty text, thinking without a signature
# (another provider's reasoning, which Anthropic cannot verify) and parts that
# do not belong to the turn's role are dropped.

DEFAULT_MAX_TOKENS = 4096
_EMPTY_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}

_EFFORT_TO_ANTHROPIC: dict[str, str] = {
    "minimal": "low",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "max": "max",
}

_STOP_REASONS: dict[str, ir.StopReason] = {
    "end_turn": "end_turn",
    "max_tokens": "max_tokens",
    "stop_sequence": "stop_sequence",
    "tool_use": "tool_use",
    "refusal": "refusal",
    "pause_turn": "pause_turn",
    "model_context_window_exceeded": "max_tokens",
}


def encode_request(
    request: ir.ChatRequest, model: str, *, max_tokens_limit: int | None = None
) -> dict[str, Any]:
    """IR request -> Anthropic Messages API request body."""
    system = [p.text for p in request.system if p.text]
    messages = _encode_messages(request.messages, system)
    max_tokens = request.max_tokens if request.max_tokens is not None else DEFAULT_MAX_TOKENS
    if max_tokens_limit:
        max_tokens = min(max_tokens, max_tokens_limit)
    body: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "messages": messages}
    if system:
        body["system"] = (
            system[0] if len(system) == 1 else [{"type": "text", "text": t} for t in system]
        )
    _encode_sampling(request, body)
    if request.tools:
        body["tools"] = [_encode_tool(t) for t in request.tools]
        if request.tool_choice is not None:
            body["tool_choice"] = _encode_tool_choice(request.tool_choice)
    if request.thinking is not None:
        body["thinking"] = _encode_thinking(request.thinking, max_tokens)
    output_config: dict[str, Any] = {}
    if request.effort is not None:
        output_config["effort"] = _EFFORT_TO_ANTHROPIC[request.effort]
    fmt = request.output_format
    if fmt is not None and fmt.schema is not None:  # (json_object goes as a tool: structured.plan)
        output_config["format"] = {"type": "json_schema", "schema": anthropic_schema(fmt.schema)}
    if output_config:
        body["output_config"] = output_config
    if request.user:
        body["metadata"] = {"user_id": request.user}
    if request.stream:
        body["stream"] = True
    return body


def _encode_sampling(request: ir.ChatRequest, body: dict[str, Any]) -> None:
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.top_k is not None:
        body["top_k"] = request.top_k
    if request.stop:
        body["stop_sequences"] = list(request.stop)


def _encode_messages(messages: list[ir.Message], system: list[str]) -> list[dict[str, Any]]:
    """Turns -> alternating user/assistant messages; system turns go to ``system``."""
    out: list[dict[str, Any]] = []
    for message in messages:
        if message.role == "system":
            system.extend(p.text for p in message.content if isinstance(p, ir.TextPart) and p.text)
            continue
        blocks = [b for p in message.content if (b := _encode_part(p, message.role)) is not None]
        if not blocks:
            continue
        if out and out[-1]["role"] == message.role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": message.role, "content": blocks})
    for turn in out:
        if turn["role"] == "user":
            # Tool results must open the user turn that answers the tool calls.
            turn["content"].sort(key=lambda b: b["type"] != "tool_result")
    return out


def _encode_part(part: ir.Part, role: str) -> dict[str, Any] | None:
    """One IR part -> one content block, or None when it has no place in ``role``."""
    user = role == "user"
    match part:
        case ir.TextPart(text=text):
            return {"type": "text", "text": text} if text else None
        case ir.ImagePart():
            return _encode_image(part) if user else None
        case ir.DocumentPart():
            return _encode_document(part) if user else None
        case ir.ToolResultPart():
            return _encode_tool_result(part) if user else None
        case ir.ToolUsePart(id=id_, name=name, input=tool_input):
            return (
                None if user else {"type": "tool_use", "id": id_, "name": name, "input": tool_input}
            )
        case ir.ThinkingPart(thinking=thinking, signature=signature):
            if user or not signature:
                return None
            return {"type": "thinking", "thinking": thinking, "signature": signature}
        case ir.RedactedThinkingPart(data=data):
            return None if user else {"type": "redacted_thinking", "data": data}
        case _:
            assert_never(part)


def _encode_image(part: ir.ImagePart) -> dict[str, Any]:
    if part.url is not None:
        return {"type": "image", "source": {"type": "url", "url": part.url}}
    return {
        "type": "image",
        "source": {"type": "base64", "media_type": part.media_type, "data": part.data or ""},
    }


def _encode_document(part: ir.DocumentPart) -> dict[str, Any]:
    """A document block: PDF as base64 or URL, anything textual as text.  What
    Anthropic cannot read (Word, spreadsheets, binary text) is a 400 naming it."""
    if part.url is not None:
        source: dict[str, Any] = {"type": "url", "url": part.url}
    elif part.text is not None:
        source = {"type": "text", "media_type": "text/plain", "data": part.text}
    elif part.media_type == "application/pdf":
        source = {"type": "base64", "media_type": "application/pdf", "data": part.data or ""}
    else:
        source = {"type": "text", "media_type": "text/plain", "data": _document_text(part)}
    block: dict[str, Any] = {"type": "document", "source": source}
    if part.filename:
        block["title"] = part.filename
    return block


def _document_text(part: ir.DocumentPart) -> str:
    what = f"document {part.filename!r} ({part.media_type or 'no media type'})"
    if not part.media_type.startswith("text/") and part.media_type not in _TEXT_MEDIA_TYPES:
        raise InvalidRequest(
            f"{what}: Anthropic-native providers read PDF and plain-text documents only"
        )
    try:
        return base64.b64decode(part.data or "", validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest(f"{what}: not base64 of UTF-8 text") from None


_TEXT_MEDIA_TYPES = frozenset({"application/json", "application/xml", "application/x-yaml"})


def _encode_result_part(part: ir.ResultPart) -> dict[str, Any]:
    match part:
        case ir.TextPart(text=text):
            return {"type": "text", "text": text}
        case ir.ImagePart():
            return _encode_image(part)
        case ir.DocumentPart():
            return _encode_document(part)
        case _:
            assert_never(part)


def _encode_tool_result(part: ir.ToolResultPart) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": part.tool_use_id}
    content = [
        _encode_result_part(p)
        for p in part.content
        if not (isinstance(p, ir.TextPart) and not p.text)
    ]
    if content:
        block["content"] = content
    if part.is_error:
        block["is_error"] = True
    return block


def _encode_tool(tool: ir.Tool) -> dict[str, Any]:
    out: dict[str, Any] = {"name": tool.name}
    if tool.description:
        out["description"] = tool.description
    out["input_schema"] = tool.input_schema or _EMPTY_SCHEMA
    return out


def _encode_tool_choice(choice: ir.ToolChoice) -> dict[str, Any]:
    out: dict[str, Any] = {"type": choice.mode}
    if choice.mode == "tool":
        out["name"] = choice.name or ""
    if choice.disable_parallel and choice.mode != "none":
        out["disable_parallel_tool_use"] = True
    return out


def _encode_thinking(thinking: ir.Thinking, max_tokens: int) -> dict[str, Any]:
    match thinking.mode:
        case "enabled":
            budget = thinking.budget_tokens if thinking.budget_tokens is not None else 1024
            # The budget must stay below max_tokens (which may have been clamped).
            return {"type": "enabled", "budget_tokens": max(min(budget, max_tokens - 1), 1)}
        case "adaptive":
            return {"type": "adaptive"}
        case "disabled":
            return {"type": "disabled"}
        case _:
            assert_never(thinking.mode)


# ---------------------------------------------------------------- upstream answers


def _stop_reason(value: Any) -> ir.StopReason | None:
    if not isinstance(value, str):
        return None
    return _STOP_REASONS.get(value, "end_turn")


class EventDecoder:
    """Per-stream state: an Anthropic upstream's SSE events -> IR events.

    Block types without a neutral meaning (``server_tool_use``,
    ``web_search_tool_result``, ...) are skipped with their deltas and stop,
    and later blocks renumbered, so IR block indices stay contiguous.
    ``model``, when given, replaces the upstream's model name.
    """

    __slots__ = ("_indices", "_model", "_next", "_started", "provider", "saw_stop")

    def __init__(self, provider: str = "anthropic", *, model: str | None = None) -> None:
        self.provider = provider
        self._model = model
        self._indices: dict[int, int] = {}  # upstream index -> IR index (known blocks)
        self._next = 0
        self._started = False
        self.saw_stop = False

    def feed(self, event: str | None, data: bytes | dict[str, Any]) -> Iterator[ir.Event]:
        value = self._decode(data) if isinstance(data, bytes) else data
        if value is None or self.saw_stop:
            return
        kind = value.get("type") or event
        if kind == "content_block_delta":
            yield from self._delta(value)
        elif kind == "content_block_start":
            yield from self._start()
            yield from self._block_start(value)
        elif kind == "content_block_stop":
            index = self._indices.get(value.get("index"))  # type: ignore[arg-type]
            if index is not None:
                yield ir.BlockStop(index)
        elif kind == "message_start":
            yield from self._message_start(value.get("message"))
        elif kind == "message_delta":
            yield from self._start()
            yield self._message_delta(value)
        elif kind == "message_stop":
            yield from self._start()
            self.saw_stop = True
            yield ir.MessageStop()
        elif kind == "ping":
            yield ir.Ping()
        elif kind == "error":
            raise self._error(value.get("error"))

    def _decode(self, data: bytes) -> dict[str, Any] | None:
        if not data.strip():
            return None
        try:
            value = _decoder.decode(data)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            raise UpstreamProtocolError(
                f"provider '{self.provider}' sent a stream event that is not JSON: {data[:200]!r}",
                provider=self.provider,
            ) from exc
        return value if isinstance(value, dict) else None

    def _error(self, error: Any) -> UpstreamProtocolError:
        if isinstance(error, dict):
            detail = f"{error.get('type', 'error')}: {error.get('message', '')}"
        else:
            detail = str(error)
        return UpstreamProtocolError(
            f"provider '{self.provider}' reported an error mid-stream: {detail}",
            provider=self.provider,
        )

    def _message_start(self, message: Any) -> Iterator[ir.Event]:
        if self._started:
            return
        self._started = True
        if not isinstance(message, dict):
            message = {}
        usage = message.get("usage")
        model = self._model or message.get("model")
        yield ir.MessageStart(
            id=message.get("id") or new_message_id(),
            model=model if isinstance(model, str) else "",
            usage=usage_from_dict(usage) if isinstance(usage, dict) else ir.Usage(),
        )

    def _start(self) -> Iterator[ir.Event]:
        """A message_start for upstreams that skip it."""
        if not self._started:
            yield from self._message_start({})

    def _message_delta(self, value: dict[str, Any]) -> ir.MessageDelta:
        delta = value.get("delta")
        if not isinstance(delta, dict):
            delta = {}
        usage = value.get("usage")
        sequence = delta.get("stop_sequence")
        return ir.MessageDelta(
            stop_reason=_stop_reason(delta.get("stop_reason")),
            usage=usage_from_dict(usage) if isinstance(usage, dict) else ir.Usage(),
            stop_sequence=sequence if isinstance(sequence, str) else None,
        )

    def _block_start(self, value: dict[str, Any]) -> Iterator[ir.Event]:
        block = value.get("content_block")
        upstream = value.get("index")
        if not isinstance(block, dict) or not isinstance(upstream, int):
            return
        kind = block.get("type")
        if kind not in _BLOCK_STARTS:
            return  # no neutral meaning: skipped with its deltas and stop
        index = self._next
        self._next += 1
        self._indices[upstream] = index
        yield from _BLOCK_STARTS[kind](index, block)

    def _delta(self, value: dict[str, Any]) -> Iterator[ir.Event]:
        index = self._indices.get(value.get("index"))  # type: ignore[arg-type]
        delta = value.get("delta")
        if index is None or not isinstance(delta, dict):
            return
        field = _DELTA_FIELDS.get(delta.get("type"))  # type: ignore[arg-type]
        if field is None:
            return  # citations_delta and other deltas without a neutral meaning
        text = delta.get(field[0])
        if isinstance(text, str) and text:
            yield field[1](index, text)


def _text_start(index: int, block: dict[str, Any]) -> Iterator[ir.Event]:
    yield ir.TextStart(index)
    text = block.get("text")
    if isinstance(text, str) and text:
        yield ir.TextDelta(index, text)


def _tool_use_start(index: int, block: dict[str, Any]) -> Iterator[ir.Event]:
    id_, name = block.get("id"), block.get("name")
    yield ir.ToolUseStart(
        index,
        id_ if isinstance(id_, str) and id_ else tool_use_id(None),
        name if isinstance(name, str) else "",
    )
    tool_input = block.get("input")
    if isinstance(tool_input, dict) and tool_input:
        yield ir.ToolInputDelta(index, _encode(tool_input).decode())


def _thinking_start(index: int, block: dict[str, Any]) -> Iterator[ir.Event]:
    yield ir.ThinkingStart(index)
    thinking, signature = block.get("thinking"), block.get("signature")
    if isinstance(thinking, str) and thinking:
        yield ir.ThinkingDelta(index, thinking)
    if isinstance(signature, str) and signature:
        yield ir.SignatureDelta(index, signature)


def _redacted_thinking_start(index: int, block: dict[str, Any]) -> Iterator[ir.Event]:
    data = block.get("data")
    yield ir.RedactedThinkingStart(index, data if isinstance(data, str) else "")


_BLOCK_STARTS: dict[str, Callable[[int, dict[str, Any]], Iterator[ir.Event]]] = {
    "text": _text_start,
    "tool_use": _tool_use_start,
    "thinking": _thinking_start,
    "redacted_thinking": _redacted_thinking_start,
}

# delta type -> (field holding the fragment, IR event it becomes)
_DELTA_FIELDS: dict[str, tuple[str, Callable[[int, str], ir.Event]]] = {
    "text_delta": ("text", ir.TextDelta),
    "input_json_delta": ("partial_json", ir.ToolInputDelta),
    "thinking_delta": ("thinking", ir.ThinkingDelta),
    "signature_delta": ("signature", ir.SignatureDelta),
}


def response_events(
    body: dict[str, Any], *, model: str | None = None, provider: str = "anthropic"
) -> Iterator[ir.Event]:
    """A non-streaming Anthropic message -> the IR events of the same answer
    (its fold is the message), through the same :class:`EventDecoder`."""
    decoder = EventDecoder(provider, model=model)
    yield from decoder.feed("message_start", {"type": "message_start", "message": body})
    content = body.get("content")
    for i, block in enumerate(content if isinstance(content, list) else []):
        yield from decoder.feed(
            "content_block_start",
            {"type": "content_block_start", "index": i, "content_block": block},
        )
        yield from decoder.feed("content_block_stop", {"type": "content_block_stop", "index": i})
    yield from decoder.feed(
        "message_delta",
        {
            "type": "message_delta",
            "delta": {
                "stop_reason": body.get("stop_reason"),
                "stop_sequence": body.get("stop_sequence"),
            },
            "usage": body.get("usage"),
        },
    )
    yield from decoder.feed("message_stop", {"type": "message_stop"})
