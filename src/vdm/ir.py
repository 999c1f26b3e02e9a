"""Provider-neutral model of a chat request, its response and its stream.

Both client protocols decode into these types and every provider adapter
encodes from them (N + M adapters, never N x M converters).

Content parts and stream events are closed, tagged unions: each struct has a
literal ``kind`` tag, and consumers ``match`` on the class and end with
``assert_never`` so that adding a variant makes the type checker list every
place to update.

A stream is a sequence of events keyed by block index::

    MessageStart
      (BlockStart  BlockDelta*  BlockStop)*     one group per content block
    MessageDelta                               stop reason + final usage
    MessageStop

and the non-streaming response is exactly the fold of those events
(:class:`MessageBuilder`), so both renderings share one code path.
"""

from __future__ import annotations

from typing import Any, Literal, TypeAlias

import msgspec

Role = Literal["user", "assistant", "system"]

StopReason = Literal["end_turn", "max_tokens", "stop_sequence", "tool_use", "refusal", "pause_turn"]


# ---------------------------------------------------------------- content parts


class TextPart(msgspec.Struct, tag="text", tag_field="kind"):
    text: str


class ImagePart(msgspec.Struct, tag="image", tag_field="kind"):
    """An image given inline (``data`` is base64) or by ``url``."""

    media_type: str = ""
    data: str | None = None
    url: str | None = None


class DocumentPart(msgspec.Struct, tag="document", tag_field="kind"):
    """A file for the model to read: inline (``data`` is base64 of
    ``media_type``), by ``url``, or plain ``text``.  ``filename`` is its name
    or title, when the client gave one."""

    media_type: str = ""
    data: str | None = None
    url: str | None = None
    text: str | None = None
    filename: str | None = None


class ToolUsePart(msgspec.Struct, tag="tool_use", tag_field="kind"):
    id: str
    name: str
    input: dict[str, Any]
    # Provider extras of the call, keyed by their wire name (CONVENTIONS 4):
    # e.g. ``{"extra_content": {"google": {"thought_signature": ...}}}`` from
    # Gemini's OpenAI endpoint, which must go back on the same call.
    provider_details: dict[str, Any] | None = None


# What a user turn's content and a tool result may hold besides tool parts.
ResultPart: TypeAlias = TextPart | ImagePart | DocumentPart


class ToolResultPart(msgspec.Struct, tag="tool_result", tag_field="kind"):
    tool_use_id: str
    content: list[ResultPart]
    is_error: bool = False


class ThinkingPart(msgspec.Struct, tag="thinking", tag_field="kind"):
    thinking: str
    signature: str | None = None


class RedactedThinkingPart(msgspec.Struct, tag="redacted_thinking", tag_field="kind"):
    data: str


Part: TypeAlias = (
    TextPart
    | ImagePart
    | DocumentPart
    | ToolUsePart
    | ToolResultPart
    | ThinkingPart
    | RedactedThinkingPart
)


# ---------------------------------------------------------------- request


class Message(msgspec.Struct):
    """One conversation turn.  ``system`` turns may appear mid-conversation."""

    role: Role
    content: list[Part]


class Tool(msgspec.Struct):
    name: str
    description: str | None = None
    input_schema: dict[str, Any] = msgspec.field(default_factory=dict)


class ToolChoice(msgspec.Struct):
    mode: Literal["auto", "any", "tool", "none"] = "auto"
    name: str | None = None
    disable_parallel: bool = False


class Thinking(msgspec.Struct):
    """Extended reasoning request.  ``budget_tokens`` is None for adaptive."""

    mode: Literal["enabled", "adaptive", "disabled"] = "enabled"
    budget_tokens: int | None = None


Effort = Literal["minimal", "low", "medium", "high", "max"]


class OutputFormat(msgspec.Struct):
    """Structured output: the answer's text must be one JSON object
    (``json_object``) or one JSON value matching ``schema`` (``json_schema``).

    ``name``, ``description`` and ``strict`` are OpenAI's (``strict`` None:
    the client's protocol did not say).  How each upstream is held to it
    (its own constraint, a forced tool, an instruction) is
    :mod:`vdm.protocols.structured`'s business.
    """

    kind: Literal["json_object", "json_schema"]
    schema: dict[str, Any] | None = None
    name: str | None = None
    description: str | None = None
    strict: bool | None = None


class ChatRequest(msgspec.Struct):
    model: str
    messages: list[Message]
    max_tokens: int | None = None
    system: list[TextPart] = msgspec.field(default_factory=list)
    stream: bool = False
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop: list[str] = msgspec.field(default_factory=list)
    tools: list[Tool] = msgspec.field(default_factory=list)
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None
    effort: Effort | None = None
    user: str | None = None
    output_format: OutputFormat | None = None
    # Fields of the client protocol with no neutral meaning, kept for adapters
    # of the same family (never new IR fields; CONVENTIONS 4).
    provider_details: dict[str, Any] = msgspec.field(default_factory=dict)


# ---------------------------------------------------------------- response


class Usage(msgspec.Struct):
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    # Of output_tokens, those an upstream says went to reasoning (OpenAI's
    # completion_tokens_details / output_tokens_details); None when not reported.
    reasoning_tokens: int | None = None


class ChatResponse(msgspec.Struct):
    id: str
    model: str
    content: list[Part]
    stop_reason: StopReason | None
    usage: Usage
    stop_sequence: str | None = None


# ---------------------------------------------------------------- stream events


class MessageStart(msgspec.Struct, tag="message_start", tag_field="kind"):
    id: str
    model: str
    usage: Usage


class TextStart(msgspec.Struct, tag="text_start", tag_field="kind"):
    index: int


class ToolUseStart(msgspec.Struct, tag="tool_use_start", tag_field="kind"):
    index: int
    id: str
    name: str
    provider_details: dict[str, Any] | None = None  # as on ToolUsePart


class ThinkingStart(msgspec.Struct, tag="thinking_start", tag_field="kind"):
    index: int


class RedactedThinkingStart(msgspec.Struct, tag="redacted_thinking_start", tag_field="kind"):
    index: int
    data: str


class TextDelta(msgspec.Struct, tag="text_delta", tag_field="kind"):
    index: int
    text: str


class ToolInputDelta(msgspec.Struct, tag="tool_input_delta", tag_field="kind"):
    """A fragment of the tool call's input JSON, as text."""

    index: int
    partial_json: str


class ThinkingDelta(msgspec.Struct, tag="thinking_delta", tag_field="kind"):
    index: int
    thinking: str


class SignatureDelta(msgspec.Struct, tag="signature_delta", tag_field="kind"):
    index: int
    signature: str


class BlockStop(msgspec.Struct, tag="block_stop", tag_field="kind"):
    index: int


class MessageDelta(msgspec.Struct, tag="message_delta", tag_field="kind"):
    stop_reason: StopReason | None
    usage: Usage
    stop_sequence: str | None = None


class MessageStop(msgspec.Struct, tag="message_stop", tag_field="kind"):
    pass


class Ping(msgspec.Struct, tag="ping", tag_field="kind"):
    pass


BlockStart: TypeAlias = TextStart | ToolUseStart | ThinkingStart | RedactedThinkingStart
Event: TypeAlias = (
    MessageStart
    | TextStart
    | ToolUseStart
    | ThinkingStart
    | RedactedThinkingStart
    | TextDelta
    | ToolInputDelta
    | ThinkingDelta
    | SignatureDelta
    | BlockStop
    | MessageDelta
    | MessageStop
    | Ping
)


# ---------------------------------------------------------------- fold


_json_decoder = msgspec.json.Decoder()


def parse_tool_input(raw: str) -> dict[str, Any]:
    """Parse streamed tool-call arguments, tolerating what upstreams send.

    Empty text is ``{}``; malformed JSON or a non-object is kept, not lost,
    under ``_raw_arguments`` so the client sees what the model produced.
    """
    if not raw.strip():
        return {}
    try:
        value = _json_decoder.decode(raw)
    except msgspec.DecodeError:
        return {"_raw_arguments": raw}
    if isinstance(value, dict):
        return value
    return {"_raw_arguments": raw}


class MessageBuilder:
    """Folds stream events into a :class:`ChatResponse`.

    The one place where a stream becomes a message: the non-streaming
    rendering of every converted response goes through here.
    """

    __slots__ = ("_blocks", "_id", "_model", "_stop_reason", "_stop_sequence", "_usage")

    def __init__(self) -> None:
        self._id = ""
        self._model = ""
        self._usage = Usage()
        self._stop_reason: StopReason | None = None
        self._stop_sequence: str | None = None
        # index -> [kind, payload...]; kept as small lists for speed.
        self._blocks: dict[int, list[Any]] = {}

    def feed(self, event: Event) -> None:
        match event:
            case TextDelta(index=i, text=t):
                self._blocks[i][1].append(t)
            case ToolInputDelta(index=i, partial_json=t):
                self._blocks[i][3].append(t)
            case ThinkingDelta(index=i, thinking=t):
                self._blocks[i][1].append(t)
            case SignatureDelta(index=i, signature=s):
                self._blocks[i][2] = s
            case TextStart(index=i):
                self._blocks[i] = ["text", []]
            case ToolUseStart(index=i, id=id_, name=name, provider_details=details):
                self._blocks[i] = ["tool_use", id_, name, [], details]
            case ThinkingStart(index=i):
                self._blocks[i] = ["thinking", [], None]
            case RedactedThinkingStart(index=i, data=data):
                self._blocks[i] = ["redacted_thinking", data]
            case MessageStart(id=id_, model=model, usage=usage):
                self._id, self._model, self._usage = id_, model, usage
            case MessageDelta(stop_reason=reason, usage=usage, stop_sequence=seq):
                self._stop_reason = reason
                self._stop_sequence = seq
                self._usage = merge_usage(self._usage, usage)
            case BlockStop() | MessageStop() | Ping():
                pass
            case _:  # pragma: no cover - exhaustive
                raise AssertionError(f"unknown event {event!r}")

    def build(self) -> ChatResponse:
        content: list[Part] = []
        for _, block in sorted(self._blocks.items()):
            kind = block[0]
            if kind == "text":
                content.append(TextPart("".join(block[1])))
            elif kind == "tool_use":
                content.append(
                    ToolUsePart(block[1], block[2], parse_tool_input("".join(block[3])), block[4])
                )
            elif kind == "thinking":
                content.append(ThinkingPart("".join(block[1]), block[2]))
            else:
                content.append(RedactedThinkingPart(block[1]))
        return ChatResponse(
            id=self._id,
            model=self._model,
            content=content,
            stop_reason=self._stop_reason,
            usage=self._usage,
            stop_sequence=self._stop_sequence,
        )


def merge_usage(start: Usage, final: Usage) -> Usage:
    """Final usage wins where it reports a value; start usage fills the gaps."""
    return Usage(
        input_tokens=final.input_tokens or start.input_tokens,
        output_tokens=final.output_tokens or start.output_tokens,
        cache_read_input_tokens=(
            final.cache_read_input_tokens
            if final.cache_read_input_tokens is not None
            else start.cache_read_input_tokens
        ),
        cache_creation_input_tokens=(
            final.cache_creation_input_tokens
            if final.cache_creation_input_tokens is not None
            else start.cache_creation_input_tokens
        ),
        reasoning_tokens=(
            final.reasoning_tokens if final.reasoning_tokens is not None else start.reasoning_tokens
        ),
    )


def fold(events: list[Event]) -> ChatResponse:
    builder = MessageBuilder()
    for event in events:
        builder.feed(event)
    return builder.build()
