"""The gateway calling an OpenAI-compatible provider (Chat Completions): IR ->
a request, its answers -> IR; the usage tap of an answer relayed as bytes.
Pure functions, no I/O.  (The Chat Completions door, clients speaking it to
the gateway, is :mod:`vdm.protocols.openai_door`.)

* :func:`encode_request` — IR request -> chat.completions body;
* :func:`response_events` — a non-streaming chat.completion -> IR events;
* :class:`ChunkDecoder` — streamed chat.completion.chunk objects -> IR events.

Both response paths produce the same events for the same answer, and the
non-streaming message is their fold (``ir.MessageBuilder``), so a streamed and
a non-streamed answer always render identically.

Mapping notes (documented in README "Conversion"):

* system text, and ``system`` turns in mid-conversation, become ``system``
  messages at their position;
* a user turn's ``tool_result`` blocks become ``tool`` messages placed first
  (they must follow the assistant's ``tool_calls``), then the rest of the turn
  as one user message; ``is_error`` results are prefixed ``Error: ``; images
  inside tool results follow in a user message (tool messages carry text only);
* thinking blocks in the history are dropped (OpenAI-compatible upstreams do
  not take them back); ``thinking``/``effort`` become ``reasoning_effort`` on
  providers that declare reasoning support, and are dropped otherwise;
* ``metadata.user_id`` becomes ``user`` (hashed when longer than 64 chars,
  since upstreams bound its length); ``top_k`` and ``cache_control`` drop.
* a tool call's ``extra_content`` (Gemini's thought signature) is kept in
  ``provider_details`` of its ``ToolUseStart`` / ``ToolUsePart`` and sent back
  on the same call (both directions, streaming or not);
* documents become ``file`` parts (``file_data``: a data URL, or the
  document's URL as OpenRouter takes it; with a filename), text documents
  text parts; like images, those of tool results follow in a user message;
* ``output_format`` becomes ``response_format`` (:mod:`vdm.protocols.structured`).
"""

from __future__ import annotations

import hashlib
import mimetypes
from collections.abc import Iterator
from typing import Any, assert_never

import msgspec

from vdm import ir
from vdm.ids import new_message_id, tool_use_id, upstream_tool_id
from vdm.protocols import outcome
from vdm.protocols.sse import last_frame
from vdm.protocols.structured import openai_response_format

_encode = msgspec.json.Encoder().encode
_json_decoder = msgspec.json.Decoder()

# A tool call's provider extras (Gemini's thought signatures), kept verbatim
# in ``provider_details`` under the same name.
EXTRA_CONTENT = "extra_content"

_EFFORT_MAP: dict[str, str] = {
    "minimal": "minimal",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "max": "high",
}


class RequestOptions(msgspec.Struct, frozen=True):
    """How one OpenAI-compatible endpoint wants its requests shaped."""

    max_tokens_field: str = "max_tokens"
    supports_reasoning: bool = False
    max_tokens_limit: int | None = None


# ---------------------------------------------------------------- request


def encode_request(request: ir.ChatRequest, model: str, options: RequestOptions) -> dict[str, Any]:
    messages: list[dict[str, Any]] = []
    if request.system:
        messages.append({"role": "system", "content": _join_text(request.system)})
    for message in request.messages:
        _append_message(messages, message)

    body: dict[str, Any] = {"model": model, "messages": messages}
    if request.max_tokens is not None:
        limit = options.max_tokens_limit
        body[options.max_tokens_field] = (
            min(request.max_tokens, limit) if limit else request.max_tokens
        )
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.stop:
        body["stop"] = request.stop
    if request.user:
        body["user"] = _user_id(request.user)
    if request.tools:
        body["tools"] = [_tool(t) for t in request.tools]
        choice = request.tool_choice
        if choice is not None:
            body["tool_choice"] = _tool_choice(choice)
            if choice.disable_parallel:
                body["parallel_tool_calls"] = False
    elif request.tool_choice is not None and request.tool_choice.mode == "none":
        pass  # no tools, nothing to forbid
    effort = reasoning_effort(request)
    if effort is not None and options.supports_reasoning:
        body["reasoning_effort"] = effort
    if request.output_format is not None:
        body["response_format"] = openai_response_format(request.output_format)
    if request.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def reasoning_effort(request: ir.ChatRequest) -> str | None:
    """The reasoning effort a request asks for, in OpenAI's words."""
    if request.effort is not None:
        return _EFFORT_MAP[request.effort]
    thinking = request.thinking
    if thinking is None or thinking.mode == "disabled":
        return None
    budget = thinking.budget_tokens
    if budget is None:
        return "medium"
    if budget < 4096:
        return "low"
    if budget < 16384:
        return "medium"
    return "high"


def _user_id(user: str) -> str:
    if len(user) <= 64:
        return user
    return "sha256:" + hashlib.sha256(user.encode()).hexdigest()[:40]


def _join_text(parts: list[ir.TextPart]) -> str:
    return "\n\n".join(p.text for p in parts)


def _tool(tool: ir.Tool) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool.name, "parameters": tool.input_schema}
    if tool.description:
        function["description"] = tool.description
    return {"type": "function", "function": function}


def _tool_choice(choice: ir.ToolChoice) -> Any:
    if choice.mode == "auto":
        return "auto"
    if choice.mode == "any":
        return "required"
    if choice.mode == "none":
        return "none"
    return {"type": "function", "function": {"name": choice.name}}


def _image_url(part: ir.ImagePart) -> dict[str, Any]:
    url = part.url if part.url is not None else f"data:{part.media_type};base64,{part.data}"
    return {"type": "image_url", "image_url": {"url": url}}


def _file(part: ir.DocumentPart) -> dict[str, Any]:
    """A document as a content part: text as text, a file as ``file_data``."""
    if part.text is not None:
        return {
            "type": "text",
            "text": f"{part.filename}\n\n{part.text}" if part.filename else part.text,
        }
    if part.url is not None:
        data = part.url
        name = part.filename or part.url.rsplit("/", 1)[-1].split("?", 1)[0] or "document.pdf"
    else:
        data = f"data:{part.media_type};base64,{part.data}"
        name = part.filename or "document" + (mimetypes.guess_extension(part.media_type) or "")
    return {"type": "file", "file": {"file_data": data, "filename": name}}


def _user_part(part: ir.ResultPart) -> dict[str, Any]:
    match part:
        case ir.TextPart(text=text):
            return {"type": "text", "text": text}
        case ir.ImagePart():
            return _image_url(part)
        case ir.DocumentPart():
            return _file(part)
        case _:
            assert_never(part)


def _user_content(parts: list[ir.ResultPart]) -> str | list[dict[str, Any]]:
    """Plain string when the turn is text only (the most widely accepted form)."""
    texts = [p.text for p in parts if isinstance(p, ir.TextPart)]
    if len(texts) == len(parts):
        return "\n\n".join(texts)
    return [_user_part(p) for p in parts]


def _append_message(out: list[dict[str, Any]], message: ir.Message) -> None:
    if message.role == "system":
        text = "\n\n".join(p.text for p in message.content if isinstance(p, ir.TextPart))
        out.append({"role": "system", "content": text})
        return
    if message.role == "assistant":
        _append_assistant(out, message.content)
        return
    rest: list[ir.ResultPart] = []
    late: list[ir.ResultPart] = []  # images and documents of tool results
    for part in message.content:
        match part:
            case ir.ToolResultPart():
                out.append(_tool_message(part))
                late.extend(p for p in part.content if not isinstance(p, ir.TextPart))
            case ir.TextPart() | ir.ImagePart() | ir.DocumentPart():
                rest.append(part)
            case ir.ToolUsePart() | ir.ThinkingPart() | ir.RedactedThinkingPart():
                pass  # not meaningful in a user turn for OpenAI upstreams
            case _:
                assert_never(part)
    rest = late + rest
    if rest:
        out.append({"role": "user", "content": _user_content(rest)})


def _tool_message(part: ir.ToolResultPart) -> dict[str, Any]:
    text = "\n\n".join(p.text for p in part.content if isinstance(p, ir.TextPart))
    if part.is_error:
        text = "Error: " + text
    return {"role": "tool", "tool_call_id": upstream_tool_id(part.tool_use_id), "content": text}


def _append_assistant(out: list[dict[str, Any]], parts: list[ir.Part]) -> None:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for part in parts:
        match part:
            case ir.TextPart(text=text):
                texts.append(text)
            case ir.ToolUsePart(id=id_, name=name, input=tool_input, provider_details=details):
                call: dict[str, Any] = {
                    "id": upstream_tool_id(id_),
                    "type": "function",
                    "function": {"name": name, "arguments": _encode(tool_input).decode()},
                }
                if details is not None and EXTRA_CONTENT in details:
                    call[EXTRA_CONTENT] = details[EXTRA_CONTENT]
                calls.append(call)
            case ir.ThinkingPart() | ir.RedactedThinkingPart():
                pass  # see module notes
            case ir.ImagePart() | ir.DocumentPart() | ir.ToolResultPart():
                pass  # not meaningful in an assistant turn
            case _:
                assert_never(part)
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        message["tool_calls"] = calls
    if texts or calls:
        out.append(message)


# ---------------------------------------------------------------- response


def usage_from_openai(usage: Any) -> ir.Usage:
    """OpenAI usage -> IR usage, Anthropic semantics (cached reads apart)."""
    if not isinstance(usage, dict):
        return ir.Usage()
    return outcome.usage_from_prompt(
        usage.get("prompt_tokens"),
        usage.get("completion_tokens"),
        outcome.detail(usage.get("prompt_tokens_details"), "cached_tokens"),
        outcome.detail(usage.get("completion_tokens_details"), "reasoning_tokens"),
    )


def stop_reason(finish_reason: Any, saw_tool_call: bool) -> ir.StopReason:
    if isinstance(finish_reason, str) and finish_reason in outcome.STOP_REASONS_OF_FINISH:
        reason = outcome.STOP_REASONS_OF_FINISH[finish_reason]
        # Some upstreams say "stop" after tool calls.
        if reason == "end_turn" and saw_tool_call:
            return "tool_use"
        return reason
    return "tool_use" if saw_tool_call else "end_turn"


def response_events(body: Any, model: str) -> Iterator[ir.Event]:
    """A non-streaming chat.completion -> the IR events of the same answer."""
    decoder = ChunkDecoder(model)
    choices = body.get("choices") if isinstance(body, dict) else None
    choice = choices[0] if isinstance(choices, list) and choices else {}
    message = choice.get("message") if isinstance(choice, dict) else None
    if not isinstance(message, dict):
        message = {}
    delta = dict(message)
    calls = message.get("tool_calls")
    if isinstance(calls, list):
        delta["tool_calls"] = [dict(c, index=i) for i, c in enumerate(calls) if isinstance(c, dict)]
    chunk = {
        "choices": [{"delta": delta, "finish_reason": choice.get("finish_reason")}],
        "usage": body.get("usage") if isinstance(body, dict) else None,
    }
    yield from decoder.feed(chunk)
    yield from decoder.finish()


def tool_call_details(call: dict[str, Any]) -> dict[str, Any] | None:
    """A tool call's provider extras for the IR (``provider_details``).

    Gemini's OpenAI endpoint puts the call's thought signature in
    ``extra_content`` (``{"google": {"thought_signature": ...}}``) and wants it
    back on the same call; it comes with the call's first fragment (Gemini
    sends a call whole), which is where it is read.
    """
    extra = call.get(EXTRA_CONTENT)
    return {EXTRA_CONTENT: extra} if isinstance(extra, dict) and extra else None


class _ToolCall:
    __slots__ = ("arguments", "block", "closed", "details", "id", "name")

    def __init__(self, id_: str, name: str, details: dict[str, Any] | None) -> None:
        self.id, self.name, self.details = id_, name, details
        self.block = -1  # its block's index, once opened
        self.arguments: list[str] = []
        self.closed = False

    def whole(self) -> bool:
        """Are the arguments so far one complete JSON value?  (They are one
        object, and no proper prefix of an object's text is valid JSON.)"""
        try:
            _json_decoder.decode("".join(self.arguments))
        except msgspec.DecodeError:
            return False
        return True

    def input_json(self) -> str:
        """The arguments as one JSON object text.

        Buffered until the call ends, so a client always gets parseable input
        (an upstream's malformed JSON is kept under ``_raw_arguments``), and
        the streamed and non-streamed renderings agree.
        """
        raw = "".join(self.arguments)
        if not raw.strip():
            return ""
        parsed = ir.parse_tool_input(raw)
        return raw if "_raw_arguments" not in parsed else _encode(parsed).decode()


class ChunkDecoder:
    """Per-stream state: chat.completion.chunk objects -> IR events.

    Blocks are opened lazily as their first fragment arrives and closed when
    another block starts, so the Anthropic rule "one block at a time, in
    index order" holds for any split of the upstream's fragments.

    Parallel tool calls may come interleaved (fragments of call 0, call 1,
    call 0, ... by ``index``): a call that starts while the open one's
    arguments are not yet whole JSON waits (its fragments kept) until they
    are, or until the answer ends or turns to text; then the waiting calls
    open in turn.  Calls streamed one after the other open as they come.
    """

    __slots__ = (
        "_finish_reason",
        "_next_index",
        "_open",
        "_open_kind",
        "_open_tool",
        "_started",
        "_tools",
        "_usage",
        "_waiting",
        "model",
        "saw_finish",
    )

    def __init__(self, model: str) -> None:
        self.model = model
        self._started = False
        self._next_index = 0
        self._open: int | None = None  # index of the open block
        self._open_kind = ""
        self._open_tool: _ToolCall | None = None
        self._tools: dict[int, _ToolCall] = {}
        self._waiting: list[_ToolCall] = []  # calls started while the open one was unfinished
        self._finish_reason: Any = None
        self._usage = ir.Usage()
        self.saw_finish = False

    def start(self) -> Iterator[ir.Event]:
        if not self._started:
            self._started = True
            yield ir.MessageStart(new_message_id(), self.model, ir.Usage())
            yield ir.Ping()

    def feed(self, chunk: Any) -> Iterator[ir.Event]:
        yield from self.start()
        if not isinstance(chunk, dict):
            return
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self._usage = usage_from_openai(usage)
        choices = chunk.get("choices")
        if not isinstance(choices, list) or not choices:
            return
        choice = choices[0]
        if not isinstance(choice, dict):
            return
        delta = choice.get("delta")
        if isinstance(delta, dict):
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if isinstance(reasoning, str) and reasoning:
                yield from self._open_block("thinking")
                yield ir.ThinkingDelta(self._open, reasoning)  # type: ignore[arg-type]
            content = delta.get("content")
            if isinstance(content, str) and content:
                yield from self._open_block("text")
                yield ir.TextDelta(self._open, content)  # type: ignore[arg-type]
            calls = delta.get("tool_calls")
            if isinstance(calls, list):
                for call in calls:
                    if isinstance(call, dict):
                        yield from self._tool_fragment(call)
        finish = choice.get("finish_reason")
        if finish:
            self._finish_reason = finish
            self.saw_finish = True

    def _open_block(self, kind: str) -> Iterator[ir.Event]:
        if self._open is not None and self._open_kind == kind:
            return
        yield from self._close()
        index = self._next_index
        self._next_index += 1
        self._open, self._open_kind = index, kind
        yield ir.TextStart(index) if kind == "text" else ir.ThinkingStart(index)

    def _close(self) -> Iterator[ir.Event]:
        """Close the open block, then every waiting tool call in turn."""
        yield from self._close_open()
        for tool in self._waiting:
            yield self._open_tool_block(tool)
            yield from self._close_open()
        self._waiting.clear()

    def _close_open(self) -> Iterator[ir.Event]:
        if self._open is not None:
            tool = self._open_tool
            if tool is not None:
                tool.closed = True
                arguments = tool.input_json()
                if arguments:
                    yield ir.ToolInputDelta(tool.block, arguments)
                self._open_tool = None
            yield ir.BlockStop(self._open)
            self._open, self._open_kind = None, ""

    def _open_tool_block(self, tool: _ToolCall) -> ir.ToolUseStart:
        tool.block = self._next_index
        self._next_index += 1
        self._open, self._open_kind, self._open_tool = tool.block, "tool", tool
        return ir.ToolUseStart(tool.block, tool.id, tool.name, tool.details)

    def _tool_fragment(self, call: dict[str, Any]) -> Iterator[ir.Event]:
        position = call.get("index")
        if not isinstance(position, int):
            position = len(self._tools) if call.get("id") else max(len(self._tools) - 1, 0)
        function = call.get("function")
        if not isinstance(function, dict):
            function = {}
        tool = self._tools.get(position)
        if tool is None:
            name = function.get("name")
            tool = _ToolCall(
                tool_use_id(call.get("id")),
                name if isinstance(name, str) else "",
                tool_call_details(call),
            )
            self._tools[position] = tool
            open_tool = self._open_tool
            if open_tool is not None and (self._waiting or not open_tool.whole()):
                self._waiting.append(tool)  # the open call may have more to come
            else:
                yield from self._close()
                yield self._open_tool_block(tool)
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments and not tool.closed:
            # (fragments of a call whose block already closed cannot be sent)
            tool.arguments.append(arguments)
            if self._waiting and tool is self._open_tool and "}" in arguments and tool.whole():
                yield from self._next_waiting()

    def _next_waiting(self) -> Iterator[ir.Event]:
        """The open call is whole: close it and open the waiting calls in turn,
        up to one that is not whole yet (or the last)."""
        yield from self._close_open()
        while self._waiting:
            tool = self._waiting.pop(0)
            yield self._open_tool_block(tool)
            if not self._waiting or not tool.whole():
                return
            yield from self._close_open()

    def finish(self) -> Iterator[ir.Event]:
        """End of the upstream stream: close blocks, report stop and usage."""
        yield from self.start()
        if self._next_index == 0:
            # An empty answer still renders as one (empty) text block.
            yield ir.TextStart(0)
            self._open, self._open_kind, self._next_index = 0, "text", 1
        yield from self._close()
        yield ir.MessageDelta(stop_reason(self._finish_reason, bool(self._tools)), self._usage)
        yield ir.MessageStop()


# ---------------------------------------------------------------- passthrough tap


# Usage or a finish reason, compact or as json.dumps spaces them (the
# ``"usage":null`` and ``"finish_reason":null`` most chunks carry do not count).
_TELLING = (b'"usage":{', b'"usage": {', b'"finish_reason":"', b'"finish_reason": "')
# What a tap looks for, backwards from the end (the last usage and finish reason
# are the ones that count): a usage object's token counts, a finish reason's value.
_LAST_TELLING = ((b'_tokens"',), (b'_reason":"', b'_reason": "'))


def _tells(data: bytes) -> bool:
    return any(needle in data for needle in _TELLING)


class UsageTap:
    """Reads usage out of a chat-completion SSE stream relayed as bytes.

    Fed whole frames (:class:`~vdm.protocols.sse.FrameCutter`); only the last
    frame with usage and the last with a finish reason are parsed and decoded
    (usage is cumulative; the last finish reason is the one that counts)."""

    __slots__ = ("stop_reason", "usage")

    def __init__(self) -> None:
        self.usage: ir.Usage | None = None
        self.stop_reason: str | None = None

    def feed(self, frames: bytes) -> None:
        read = None
        for needles in _LAST_TELLING:
            found = last_frame(frames, needles)
            if found is not None and found[1] is not read and _tells(found[1]):
                read = found[1]
                self.read(read)

    def read(self, data: bytes) -> None:
        """One chunk, or a whole non-streaming body."""
        try:
            value = _json_decoder.decode(data)
        except (msgspec.DecodeError, UnicodeDecodeError):
            return
        if not isinstance(value, dict):
            return
        if isinstance(value.get("usage"), dict):
            self.usage = usage_from_openai(value["usage"])
        choices = value.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            reason = choices[0].get("finish_reason")
            if isinstance(reason, str):
                self.stop_reason = reason
