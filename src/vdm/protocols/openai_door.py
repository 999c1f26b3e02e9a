"""The OpenAI Chat Completions door: requests from OpenAI SDK clients -> IR,
and IR answers -> ``chat.completion`` / chunk SSE.  Pure, no I/O.

(:mod:`vdm.protocols.openai_upstream` is the other direction: IR -> requests
to OpenAI-compatible upstreams, and their answers -> IR.)

``response_format`` (``json_object``, ``json_schema``) becomes the IR's
``output_format``; how each upstream is held to it is
:mod:`vdm.protocols.structured`'s business.  ``file`` content parts (a
``file_data`` data URL) become documents; a ``file_id`` names a file this
gateway cannot read, and is a 400.
"""

from __future__ import annotations

import base64
import mimetypes
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, assert_never

import msgspec

from vdm import ir
from vdm.errors import GatewayError, InvalidRequest
from vdm.ids import hex_id
from vdm.protocols import fields, outcome
from vdm.protocols.fields import decode_json_object
from vdm.protocols.sse import frame

if TYPE_CHECKING:
    from vdm.protocols.model_list import ModelEntry

_encode = msgspec.json.Encoder().encode

# reasoning_effort -> thinking budget for upstreams that take budgets.
EFFORT_BUDGET = {"low": 2048, "medium": 8192, "high": 24576}
_ERROR_TYPES = {
    "invalid_request": "invalid_request_error",
    "authentication": "authentication_error",
    "permission": "permission_error",
    "not_found": "not_found_error",
    "too_large": "invalid_request_error",
    "rate_limit": "rate_limit_error",
    "api_error": "api_error",
    "overloaded": "server_error",
    "timeout": "timeout",
}
# The OpenAI API's own codes where it has one for the kind; else the kind.
_ERROR_CODES = {"authentication": "invalid_api_key"}


class Options(msgspec.Struct, frozen=True):
    """How the client wants its answer rendered (not part of the IR)."""

    include_usage: bool = False


# ---------------------------------------------------------------- validation


_fail = fields.fail


def validate_request_fields(body: dict[str, Any]) -> str:
    """Checks every chat request gets, passthrough included; returns the model."""
    model = fields.require_model(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise (
            InvalidRequest("messages: field required")
            if messages is None
            else _fail("messages", "non-empty array", messages)
        )
    stream = body.get("stream")
    if stream is not None and not isinstance(stream, bool):
        raise _fail("stream", "boolean", stream)
    n = body.get("n")
    if n is not None and n != 1:
        raise InvalidRequest(f"n: only n=1 is supported by this gateway, got {n!r}")
    return model


# ---------------------------------------------------------------- request -> IR


def decode_request(body: dict[str, Any]) -> tuple[ir.ChatRequest, Options]:
    model = validate_request_fields(body)
    system: list[ir.TextPart] = []
    messages: list[ir.Message] = []
    for i, value in enumerate(body["messages"]):
        _decode_message(value, f"messages.{i}", system, messages)
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None and (
        isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1
    ):
        raise _fail("max_completion_tokens", "positive integer", max_tokens)
    stream_options = body.get("stream_options")
    include_usage = isinstance(stream_options, dict) and stream_options.get("include_usage") is True
    request = ir.ChatRequest(
        model=model,
        messages=messages,
        max_tokens=max_tokens,
        system=system,
        stream=body.get("stream") is True,
        temperature=_number(body, "temperature"),
        top_p=_number(body, "top_p"),
        stop=_stop(body.get("stop")),
        tools=_tools(body.get("tools")),
        tool_choice=_tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls")),
        thinking=_thinking(body.get("reasoning_effort")),
        user=body.get("user") if isinstance(body.get("user"), str) else None,
        output_format=output_format(body.get("response_format")),
    )
    return request, Options(include_usage=include_usage)


def decode(body: bytes) -> tuple[ir.ChatRequest, Options]:
    return decode_request(decode_json_object(body))


def _number(body: dict[str, Any], key: str) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(key, "number", value)
    return float(value)


def _stop(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise _fail("stop", "string or array of strings", value)


def _decode_message(
    value: Any, path: str, system: list[ir.TextPart], messages: list[ir.Message]
) -> None:
    if not isinstance(value, dict):
        raise _fail(path, "object", value)
    role = value.get("role")
    content = value.get("content")
    if role in ("system", "developer"):
        texts = [p for p in _content(content, path) if isinstance(p, ir.TextPart)]
        if messages:  # mid-conversation: stays in place
            messages.append(ir.Message("system", list(texts)))
        else:
            system.extend(texts)
    elif role == "user":
        messages.append(ir.Message("user", list(_content(content, path))))
    elif role == "assistant":
        parts: list[ir.Part] = [] if content is None else list(_content(content, path))
        parts.extend(_tool_calls(value.get("tool_calls"), path))
        messages.append(ir.Message("assistant", parts))
    elif role == "tool":
        call_id = value.get("tool_call_id")
        if not isinstance(call_id, str) or not call_id:
            raise _fail(f"{path}.tool_call_id", "string", call_id)
        result = ir.ToolResultPart(call_id, _content(content, path))
        last = messages[-1] if messages else None
        if (
            last is not None
            and last.role == "user"
            and all(isinstance(p, ir.ToolResultPart) for p in last.content)
        ):
            last.content.append(result)
        else:
            messages.append(ir.Message("user", [result]))
    else:
        raise InvalidRequest(
            f"{path}.role: expected system, developer, user, assistant or tool, got {role!r}"
        )


PartReader = Callable[[dict[str, Any], str], ir.ResultPart]


def content_parts(
    content: Any,
    path: str,
    readers: Mapping[str, PartReader],
    supported: str,
    *,
    none_is_empty: bool = False,
) -> list[ir.ResultPart]:
    """A message's ``content``, the Chat and Responses doors alike: a string is
    one text part; an array, each part read by the reader its ``type`` names
    (another type is a 400 that lists the ``supported`` ones)."""
    if isinstance(content, str):
        return [ir.TextPart(content)]
    if content is None and none_is_empty:
        return []
    if not isinstance(content, list):
        raise _fail(f"{path}.content", "string or array of content parts", content)
    parts: list[ir.ResultPart] = []
    for i, part in enumerate(content):
        where = f"{path}.content.{i}"
        if not isinstance(part, dict):
            raise _fail(where, "object", part)
        kind = part.get("type")
        reader = readers.get(kind) if isinstance(kind, str) else None
        if reader is None:
            raise InvalidRequest(
                f"{where}.type: content part {kind!r} is not supported; use {supported}"
            )
        parts.append(reader(part, where))
    return parts


def text_part(part: dict[str, Any], where: str) -> ir.TextPart:
    text = part.get("text")
    if not isinstance(text, str):
        raise _fail(f"{where}.text", "string", text)
    return ir.TextPart(text)


def refusal_part(part: dict[str, Any], where: str) -> ir.TextPart:
    return ir.TextPart(str(part.get("refusal", "")))


def _image_url_part(part: dict[str, Any], where: str) -> ir.ImagePart:
    return image_part(part.get("image_url"), where)


def _file_part(part: dict[str, Any], where: str) -> ir.DocumentPart:
    file = part.get("file")
    if not isinstance(file, dict):
        raise _fail(f"{where}.file", "object", file)
    return document_part(file, f"{where}.file")


_CHAT_PARTS: dict[str, PartReader] = {
    "text": text_part,
    "image_url": _image_url_part,
    "refusal": refusal_part,
    "file": _file_part,
}


def _content(content: Any, path: str) -> list[ir.ResultPart]:
    return content_parts(content, path, _CHAT_PARTS, "text, image_url or file", none_is_empty=True)


def document_part(
    file: dict[str, Any], path: str, *, data_key: str = "file_data", url_key: str | None = None
) -> ir.DocumentPart:
    """A file given inline (a base64 data URL, or bare base64 typed by its
    filename) or by http(s) URL; ``file_id`` names a file of the upstream's
    Files API, which no other upstream can read: a 400."""
    filename = file.get("filename")
    if filename is not None and not isinstance(filename, str):
        raise _fail(f"{path}.filename", "string", filename)
    data = file.get(data_key)
    url = file.get(url_key) if url_key else None
    if data is None and url is None:
        if file.get("file_id") is not None:
            raise InvalidRequest(
                f"{path}.file_id: a file uploaded to a provider's Files API cannot be sent "
                f"to this provider; send its content as {data_key} (a base64 data URL)"
            )
        raise InvalidRequest(f"{path}.{data_key}: field required")
    value = data if data is not None else url
    where = f"{path}.{data_key if data is not None else url_key}"
    if not isinstance(value, str) or not value:
        raise _fail(where, "string", value)
    if value.startswith(("http://", "https://")):
        return ir.DocumentPart(media_type="application/pdf", url=value, filename=filename)
    if url is not None:
        raise InvalidRequest(f"{where}: expected an http(s) URL")
    if value.startswith("data:"):
        header, sep, payload = value.partition(",")
        if not sep or not header.endswith(";base64"):
            raise InvalidRequest(f"{where}: data URLs must be base64")
        media_type = header[5:-7]
    else:  # bare base64, as some clients send it
        payload, media_type = value, ""
    _check_base64(payload, where)
    if not media_type:
        media_type = (mimetypes.guess_type(filename)[0] if filename else None) or "application/pdf"
    return ir.DocumentPart(media_type=media_type, data=payload, filename=filename)


def _check_base64(data: str, where: str) -> None:
    """A cheap check of the head: a whole decode of a large file is the upstream's."""
    try:
        base64.b64decode(data[:64] + "=" * (-len(data[:64]) % 4), validate=True)
    except ValueError:
        raise InvalidRequest(f"{where}: invalid base64 data") from None


def image_part(value: Any, path: str) -> ir.ImagePart:
    url = value.get("url") if isinstance(value, dict) else value
    if not isinstance(url, str) or not url:
        raise _fail(f"{path}.image_url.url", "string", url)
    if url.startswith("data:"):
        header, sep, data = url.partition(",")
        if not sep or not header.endswith(";base64"):
            raise InvalidRequest(f"{path}.image_url.url: data URLs must be base64")
        _check_base64(data, f"{path}.image_url.url")
        return ir.ImagePart(media_type=header[5:-7] or "image/png", data=data)
    if url.startswith(("http://", "https://")):
        return ir.ImagePart(url=url)
    raise InvalidRequest(f"{path}.image_url.url: expected an http(s) or data: URL")


def _tool_calls(value: Any, path: str) -> list[ir.ToolUsePart]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _fail(f"{path}.tool_calls", "array", value)
    out = []
    for i, call in enumerate(value):
        where = f"{path}.tool_calls.{i}"
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise _fail(f"{where}.function", "object with a name", function)
        call_id = call.get("id")
        if not isinstance(call_id, str) or not call_id:
            raise _fail(f"{where}.id", "string", call_id)
        arguments = function.get("arguments") or ""
        if not isinstance(arguments, str):
            raise _fail(f"{where}.function.arguments", "string", arguments)
        out.append(ir.ToolUsePart(call_id, function["name"], ir.parse_tool_input(arguments)))
    return out


def _tools(value: Any) -> list[ir.Tool]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _fail("tools", "array", value)
    tools = []
    for i, tool in enumerate(value):
        if not isinstance(tool, dict) or tool.get("type", "function") != "function":
            raise InvalidRequest(f"tools.{i}: only function tools are supported")
        function = tool.get("function")
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise _fail(f"tools.{i}.function", "object with a name", function)
        schema = function.get("parameters") or {"type": "object", "properties": {}}
        if not isinstance(schema, dict):
            raise _fail(f"tools.{i}.function.parameters", "object", schema)
        description = function.get("description")
        tools.append(
            ir.Tool(function["name"], description if isinstance(description, str) else None, schema)
        )
    return tools


def _tool_choice(value: Any, parallel: Any) -> ir.ToolChoice | None:
    disable = parallel is False
    if value is None:
        return ir.ToolChoice("auto", disable_parallel=True) if disable else None
    if value in ("auto", "none"):
        return ir.ToolChoice(value, disable_parallel=disable)
    if value == "required":
        return ir.ToolChoice("any", disable_parallel=disable)
    if isinstance(value, dict) and isinstance(value.get("function"), dict):
        name = value["function"].get("name")
        if isinstance(name, str) and name:
            return ir.ToolChoice("tool", name, disable_parallel=disable)
    raise InvalidRequest(
        "tool_choice: expected 'auto', 'none', 'required' or "
        '{"type": "function", "function": {"name": ...}}'
    )


def _thinking(value: Any) -> ir.Thinking | None:
    if value is None:
        return None
    if value in ("none", "minimal"):
        return ir.Thinking("disabled")
    budget = EFFORT_BUDGET.get(value) if isinstance(value, str) else None
    if budget is None:
        raise InvalidRequest(
            f"reasoning_effort: expected none, minimal, low, medium or high, got {value!r}"
        )
    return ir.Thinking("enabled", budget)


def output_format(value: Any, path: str = "response_format") -> ir.OutputFormat | None:
    """``response_format`` -> the IR's output format (None for ``text``)."""
    if value is None:
        return None
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return ir.OutputFormat("json_object")
    if kind == "json_schema":
        return json_schema_format(value.get("json_schema"), f"{path}.json_schema")
    raise InvalidRequest(f"{path}.type: expected text, json_object or json_schema")


def json_schema_format(spec: Any, path: str) -> ir.OutputFormat:
    """OpenAI's json_schema object (``name``, ``schema``, ``strict``, ``description``)."""
    if not isinstance(spec, dict):
        raise _fail(path, "object", spec)
    schema = spec.get("schema")
    if not isinstance(schema, dict):
        raise _fail(f"{path}.schema", "object", schema)
    name, description, strict = spec.get("name"), spec.get("description"), spec.get("strict")
    if name is not None and not isinstance(name, str):
        raise _fail(f"{path}.name", "string", name)
    if description is not None and not isinstance(description, str):
        raise _fail(f"{path}.description", "string", description)
    if strict is not None and not isinstance(strict, bool):
        raise _fail(f"{path}.strict", "boolean", strict)
    return ir.OutputFormat("json_schema", schema, name or None, description or None, strict)


# ---------------------------------------------------------------- IR -> answers


def new_completion_id() -> str:
    return "chatcmpl-" + hex_id(12)


def usage_dict(usage: ir.Usage) -> dict[str, Any]:
    prompt, cached = outcome.prompt_tokens(usage)
    out: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": usage.output_tokens,
        "total_tokens": prompt + usage.output_tokens,
    }
    if cached:
        out["prompt_tokens_details"] = {"cached_tokens": cached}
    if usage.reasoning_tokens is not None:
        out["completion_tokens_details"] = {"reasoning_tokens": usage.reasoning_tokens}
    return out


def finish_reason(stop_reason: str | None) -> str:
    return outcome.FINISH_REASONS.get(stop_reason, "stop")


def encode_response(response: ir.ChatResponse, model: str) -> bytes:
    texts: list[str] = []
    reasoning: list[str] = []
    calls: list[dict[str, Any]] = []
    for part in response.content:
        match part:
            case ir.TextPart(text=text):
                texts.append(text)
            case ir.ThinkingPart(thinking=thinking):
                reasoning.append(thinking)
            case ir.ToolUsePart(id=id_, name=name, input=tool_input):
                calls.append(
                    {
                        "id": id_,
                        "type": "function",
                        "function": {"name": name, "arguments": _encode(tool_input).decode()},
                    }
                )
            case (
                ir.RedactedThinkingPart() | ir.ImagePart() | ir.DocumentPart() | ir.ToolResultPart()
            ):
                pass
            case _:
                assert_never(part)
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts or not calls else None,
    }
    if reasoning:
        message["reasoning_content"] = "".join(reasoning)
    if calls:
        message["tool_calls"] = calls
    return _encode(
        {
            "id": new_completion_id(),
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": message,
                    "finish_reason": finish_reason(response.stop_reason),
                    "logprobs": None,
                }
            ],
            "usage": usage_dict(response.usage),
        }
    )


_DONE = b"data: [DONE]\n\n"


class ChunkEncoder:
    """Per-stream state: IR events -> ``chat.completion.chunk`` SSE frames."""

    __slots__ = ("_head", "_include_usage", "_tools", "_usage")

    def __init__(self, model: str, options: Options) -> None:
        self._head = (
            b'{"id":"'
            + new_completion_id().encode()
            + b'","object":"chat.completion.chunk","created":'
            + str(int(time.time())).encode()
            + b',"model":'
            + _encode(model)
            + b',"choices":'
        )
        self._include_usage = options.include_usage
        self._tools: dict[int, int] = {}  # IR block index -> tool_calls index
        self._usage = ir.Usage()

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return frame(None, self._head + _encode([choice]) + b"}")

    def encode(self, event: ir.Event) -> bytes:
        match event:
            case ir.TextDelta(text=text):
                return self._chunk({"content": text})
            case ir.ThinkingDelta(thinking=thinking):
                return self._chunk({"reasoning_content": thinking})
            case ir.ToolUseStart(index=i, id=id_, name=name):
                position = self._tools[i] = len(self._tools)
                return self._chunk(
                    {
                        "tool_calls": [
                            {
                                "index": position,
                                "id": id_,
                                "type": "function",
                                "function": {"name": name, "arguments": ""},
                            }
                        ]
                    }
                )
            case ir.ToolInputDelta(index=i, partial_json=pj):
                return self._chunk(
                    {
                        "tool_calls": [
                            {"index": self._tools.get(i, 0), "function": {"arguments": pj}}
                        ]
                    }
                )
            case ir.MessageStart(usage=usage):
                self._usage = usage
                return self._chunk({"role": "assistant", "content": ""})
            case ir.MessageDelta(stop_reason=reason, usage=usage):
                self._usage = ir.merge_usage(self._usage, usage)
                return self._chunk({}, finish_reason(reason))
            case ir.MessageStop():
                if not self._include_usage:
                    return _DONE
                usage_frame = frame(
                    None,
                    self._head + b"[]," + b'"usage":' + _encode(usage_dict(self._usage)) + b"}",
                )
                return usage_frame + _DONE
            case (
                ir.TextStart()
                | ir.ThinkingStart()
                | ir.RedactedThinkingStart()
                | ir.SignatureDelta()
                | ir.BlockStop()
                | ir.Ping()
            ):
                return b""
            case _:
                assert_never(event)


# ---------------------------------------------------------------- errors


def error_body(error: GatewayError) -> dict[str, Any]:
    return {
        "error": {
            "message": error.message,
            "type": _ERROR_TYPES[error.kind],
            "param": None,
            "code": error.code or _ERROR_CODES.get(error.kind, error.kind),
        }
    }


def encode_error(error: GatewayError) -> bytes:
    return _encode(error_body(error))


# Sent while a stream is silent: an SSE comment, which every SSE client skips.
PING = b": ping\n\n"


def encode_stream_error(error: GatewayError) -> bytes:
    """The last frame of a stream whose first bytes already went out."""
    return frame(None, encode_error(error))


# ---------------------------------------------------------------- model list


def model_list(models: Sequence[ModelEntry], created: float) -> dict[str, Any]:
    """``GET /v1/models`` in OpenAI's list shape (``owned_by``: the provider)."""
    return {
        "object": "list",
        "data": [
            {"id": m.id, "object": "model", "created": int(created), "owned_by": m.owned_by}
            for m in models
        ],
    }
