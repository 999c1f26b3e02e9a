"""The gateway calling an Anthropic-native provider: IR -> a Messages API
request, and the provider's answer (SSE events or one message) -> IR events;
the usage tap of an answer relayed as bytes.  Pure functions, no I/O.  (The
Anthropic door, clients speaking Messages to the gateway, is
:mod:`vdm.protocols.anthropic_door`.)

Mapping: ``system`` turns in mid-conversation join the top-level system text
(the Messages API takes no system role in ``messages``); consecutive turns of
one role merge (the API requires alternation), with a user turn's tool
results first; empty text, thinking without a signature (another provider's
reasoning, which Anthropic cannot verify) and parts that do not belong to the
turn's role are dropped.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from typing import Any, assert_never

import msgspec

from vdm import ir
from vdm.errors import InvalidRequest, UpstreamProtocolError
from vdm.ids import new_message_id, tool_use_id
from vdm.protocols import outcome
from vdm.protocols.sse import last_frame
from vdm.protocols.structured import anthropic_schema

_decoder = msgspec.json.Decoder()
_encode = msgspec.json.Encoder().encode

# ---------------------------------------------------------------- request
# encode_request: IR request -> Messages API body.

DEFAULT_MAX_TOKENS = 4096
_EMPTY_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}

_EFFORT_TO_ANTHROPIC: dict[str, str] = {
    "minimal": "low",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "max": "max",
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
    return outcome.ANTHROPIC_STOP_REASONS.get(value, "end_turn")


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
