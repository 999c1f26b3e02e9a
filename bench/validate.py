"""Strict validators for the benchmark answers.

Each validator takes ``(status, content_type, body)`` and returns a list of
error strings (empty = valid).  The strings are stable (no ids or timings) so
the load generator can count them by kind.  The expected answer is the one
:mod:`upstream` serves: :data:`upstream.EXPECTED_TEXT`, 25 input and 20 output
tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import msgspec

from upstream import COMPLETION_TOKENS, EXPECTED_TEXT, PROMPT_TOKENS, TOTAL_TOKENS

Validator = Callable[[int, str, bytes], list[str]]

_decode = msgspec.json.decode
ANTHROPIC_STOP_REASONS = frozenset(
    {"end_turn", "max_tokens", "stop_sequence", "tool_use", "pause_turn", "refusal"}
)


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _status(status: int, content_type: str, body: bytes, want_type: str) -> list[str]:
    errors = []
    if status != 200:
        errors.append(f"HTTP {status}: {body[:200].decode('utf-8', 'replace')}")
    if want_type not in content_type.lower():
        errors.append(f"content-type {content_type!r}, expected {want_type}")
    return errors


def _json_object(body: bytes, what: str) -> tuple[dict | None, list[str]]:
    try:
        obj = _decode(body)
    except msgspec.DecodeError as exc:
        return None, [f"{what}: invalid JSON ({exc})"]
    if not isinstance(obj, dict):
        return None, [f"{what}: JSON is not an object"]
    return obj, []


def _check_text(text: str, what: str) -> list[str]:
    if text == EXPECTED_TEXT:
        return []
    return [f"{what}: text mismatch: got {_short(text)}, expected {_short(EXPECTED_TEXT)}"]


# --- SSE parsing --------------------------------------------------------------


class SSEEvent(msgspec.Struct):
    event: str | None
    data: str


def parse_sse(body: bytes) -> tuple[list[SSEEvent], list[str]]:
    """Parse an SSE body per the WHATWG rules (CRLF/LF, comments, multi-line data)."""
    errors: list[str] = []
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return [], ["SSE: body is not valid UTF-8"]
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    events: list[SSEEvent] = []
    if text and not text.endswith("\n\n"):
        errors.append("SSE: body does not end with a blank line (last event unterminated)")
    for block in text.split("\n\n"):
        if not block:
            continue
        name: str | None = None
        data: list[str] = []
        for line in block.split("\n"):
            if not line or line.startswith(":"):
                continue
            field, sep, value = line.partition(":")
            if not sep:
                value = ""
            elif value.startswith(" "):
                value = value[1:]
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)
            elif field in ("id", "retry"):
                pass
            else:
                errors.append(f"SSE: unknown field {field!r}")
        if data:
            events.append(SSEEvent(name, "\n".join(data)))
        elif name is not None:
            errors.append(f"SSE: event {name!r} without data")
    return events, errors


# --- Anthropic ------------------------------------------------------------------


def _check_anthropic_usage(usage: Any, what: str, *, output: bool = True) -> list[str]:
    if not isinstance(usage, dict):
        return [f"{what}: usage missing or not an object"]
    errors = []
    if usage.get("input_tokens") != PROMPT_TOKENS:
        errors.append(
            f"{what}: usage.input_tokens={_short(usage.get('input_tokens'))}, "
            f"expected {PROMPT_TOKENS}"
        )
    if output and usage.get("output_tokens") != COMPLETION_TOKENS:
        errors.append(
            f"{what}: usage.output_tokens={_short(usage.get('output_tokens'))}, "
            f"expected {COMPLETION_TOKENS}"
        )
    return errors


def validate_anthropic_json(status: int, content_type: str, body: bytes) -> list[str]:
    errors = _status(status, content_type, body, "application/json")
    if status != 200:
        return errors
    msg, errs = _json_object(body, "anthropic message")
    if msg is None:
        return errors + errs
    w = "anthropic message"
    if msg.get("type") != "message":
        errors.append(f"{w}: type={_short(msg.get('type'))}, expected 'message'")
    if msg.get("role") != "assistant":
        errors.append(f"{w}: role={_short(msg.get('role'))}, expected 'assistant'")
    if not isinstance(msg.get("id"), str) or not msg["id"]:
        errors.append(f"{w}: id missing or empty")
    if not isinstance(msg.get("model"), str) or not msg["model"]:
        errors.append(f"{w}: model missing or empty")
    content = msg.get("content")
    if not isinstance(content, list) or not content:
        errors.append(f"{w}: content is not a non-empty list")
    else:
        texts = []
        for i, block in enumerate(content):
            if not isinstance(block, dict) or not isinstance(block.get("type"), str):
                errors.append(f"{w}: content[{i}] is not a typed block")
            elif block["type"] == "text":
                if not isinstance(block.get("text"), str):
                    errors.append(f"{w}: content[{i}].text is not a string")
                else:
                    texts.append(block["text"])
            else:
                errors.append(f"{w}: unexpected content block type {block['type']!r}")
        errors += _check_text("".join(texts), w)
    if msg.get("stop_reason") != "end_turn":
        errors.append(f"{w}: stop_reason={_short(msg.get('stop_reason'))}, expected 'end_turn'")
    if "stop_sequence" not in msg:
        errors.append(f"{w}: stop_sequence key missing")
    errors += _check_anthropic_usage(msg.get("usage"), w)
    return errors


_DELTA_FOR_BLOCK = {
    "text": {"text_delta"},
    "tool_use": {"input_json_delta"},
    "server_tool_use": {"input_json_delta"},
    "thinking": {"thinking_delta", "signature_delta"},
    "redacted_thinking": set(),
}


def validate_anthropic_sse(status: int, content_type: str, body: bytes) -> list[str]:
    """message_start, then content blocks (start, delta+, stop) with increasing
    indexes, message_delta, message_stop; ``ping`` may appear anywhere between
    message_start and message_stop (the Anthropic docs allow any number)."""
    errors = _status(status, content_type, body, "text/event-stream")
    if status != 200:
        return errors
    raw_events, errs = parse_sse(body)
    errors += errs
    w = "anthropic stream"
    events: list[tuple[str, dict]] = []
    for ev in raw_events:
        if ev.event is None:
            errors.append(f"{w}: data without an event: line")
        try:
            data = _decode(ev.data)
        except msgspec.DecodeError:
            errors.append(f"{w}: event {ev.event!r} data is not JSON: {_short(ev.data)}")
            continue
        if not isinstance(data, dict):
            errors.append(f"{w}: event {ev.event!r} data is not an object")
            continue
        if ev.event is not None and data.get("type") != ev.event:
            errors.append(
                f"{w}: event name {ev.event!r} does not match data type {_short(data.get('type'))}"
            )
        kind = data.get("type")
        if kind == "error":
            errors.append(f"{w}: error event: {_short(data.get('error'), 300)}")
            continue
        if kind == "ping":
            if not events:
                errors.append(f"{w}: ping before message_start")
            elif events[-1][0] == "message_stop":
                errors.append(f"{w}: ping after message_stop")
            continue
        events.append((str(kind), data))
    if not events:
        return [*errors, f"{w}: no events"]
    it: Iterator[tuple[str, dict]] = iter(events)
    order = [k for k, _ in events]

    def seq_error(expected: str, got: str | None) -> None:
        errors.append(
            f"{w}: expected {expected}, got {got or 'end of stream'} "
            f"(sequence: {_short(_compress(order), 300)})"
        )

    kind, data = next(it)
    input_seen = False
    if kind != "message_start":
        seq_error("message_start first", kind)
        return errors
    message = data.get("message")
    if not isinstance(message, dict):
        errors.append(f"{w}: message_start.message is not an object")
        message = {}
    if message.get("type") != "message":
        errors.append(f"{w}: message_start type={_short(message.get('type'))}, expected 'message'")
    if message.get("role") != "assistant":
        errors.append(
            f"{w}: message_start role={_short(message.get('role'))}, expected 'assistant'"
        )
    if message.get("content") != []:
        errors.append(f"{w}: message_start content={_short(message.get('content'))}, expected []")
    if not isinstance(message.get("id"), str) or not message.get("id"):
        errors.append(f"{w}: message_start id missing or empty")
    if not isinstance(message.get("model"), str) or not message.get("model"):
        errors.append(f"{w}: message_start model missing or empty")
    start_usage = message.get("usage")
    if not isinstance(start_usage, dict):
        errors.append(f"{w}: message_start usage missing")
    elif start_usage.get("input_tokens") == PROMPT_TOKENS:
        input_seen = True

    texts: list[str] = []
    next_index = 0
    text_deltas = 0
    cur = next(it, None)
    while cur is not None and cur[0] == "content_block_start":
        data = cur[1]
        index = data.get("index")
        block = data.get("content_block")
        if index != next_index:
            errors.append(f"{w}: content_block_start index={_short(index)}, expected {next_index}")
        btype = block.get("type") if isinstance(block, dict) else None
        if btype not in _DELTA_FOR_BLOCK:
            errors.append(f"{w}: content_block_start has unknown block type {_short(btype)}")
        elif btype == "text":
            if block.get("text") != "":
                errors.append(f"{w}: text block starts with text {_short(block.get('text'))}")
        else:
            errors.append(f"{w}: unexpected {btype} block (expected only text)")
        allowed = _DELTA_FOR_BLOCK.get(str(btype), set())
        deltas = 0
        cur = next(it, None)
        while cur is not None and cur[0] == "content_block_delta":
            data = cur[1]
            deltas += 1
            if data.get("index") != index:
                errors.append(
                    f"{w}: content_block_delta index={_short(data.get('index'))}, expected {index}"
                )
            delta = data.get("delta")
            dtype = delta.get("type") if isinstance(delta, dict) else None
            if dtype not in allowed:
                errors.append(f"{w}: {_short(dtype)} delta in a {btype} block")
            elif dtype == "text_delta":
                if not isinstance(delta.get("text"), str):
                    errors.append(f"{w}: text_delta.text is not a string")
                else:
                    text_deltas += 1
                    texts.append(delta["text"])
            cur = next(it, None)
        if btype == "text" and deltas == 0:
            errors.append(f"{w}: text block {index} has no content_block_delta")
        if cur is None or cur[0] != "content_block_stop":
            seq_error(f"content_block_stop for block {index}", cur[0] if cur else None)
            return errors
        if cur[1].get("index") != index:
            errors.append(
                f"{w}: content_block_stop index={_short(cur[1].get('index'))}, expected {index}"
            )
        next_index += 1
        cur = next(it, None)
    if next_index == 0:
        seq_error("content_block_start", cur[0] if cur else None)
        return errors
    errors += _check_text("".join(texts), w)
    if cur is None or cur[0] != "message_delta":
        seq_error("message_delta", cur[0] if cur else None)
        return errors
    data = cur[1]
    delta = data.get("delta")
    if not isinstance(delta, dict):
        errors.append(f"{w}: message_delta.delta is not an object")
    else:
        if delta.get("stop_reason") != "end_turn":
            errors.append(
                f"{w}: message_delta stop_reason={_short(delta.get('stop_reason'))}, "
                "expected 'end_turn'"
            )
        if "stop_sequence" not in delta:
            errors.append(f"{w}: message_delta.delta.stop_sequence key missing")
    usage = data.get("usage")
    if not isinstance(usage, dict):
        errors.append(f"{w}: message_delta usage missing")
    else:
        if usage.get("output_tokens") != COMPLETION_TOKENS:
            errors.append(
                f"{w}: message_delta usage.output_tokens={_short(usage.get('output_tokens'))}, "
                f"expected {COMPLETION_TOKENS}"
            )
        if usage.get("input_tokens") == PROMPT_TOKENS:
            input_seen = True
        elif usage.get("input_tokens") is not None:
            errors.append(
                f"{w}: message_delta usage.input_tokens={_short(usage['input_tokens'])}, "
                f"expected {PROMPT_TOKENS}"
            )
    if not input_seen:
        got = start_usage.get("input_tokens") if isinstance(start_usage, dict) else None
        errors.append(
            f"{w}: input_tokens={_short(got)} in message_start (and not fixed in "
            f"message_delta), expected {PROMPT_TOKENS}"
        )
    cur = next(it, None)
    if cur is None or cur[0] != "message_stop":
        seq_error("message_stop", cur[0] if cur else None)
        return errors
    rest = [k for k, _ in it]
    if rest:
        errors.append(f"{w}: events after message_stop: {_short(_compress(rest))}")
    return errors


def _compress(kinds: list[str]) -> str:
    """``a b b b c`` -> ``a b*3 c`` for readable sequence errors."""
    out: list[str] = []
    prev, n = None, 0
    for k in [*kinds, None]:
        if k == prev:
            n += 1
            continue
        if prev is not None:
            out.append(prev if n == 1 else f"{prev}*{n}")
        prev, n = k, 1
    return " ".join(out)


# --- OpenAI -----------------------------------------------------------------------


def _check_openai_usage(usage: Any, what: str) -> list[str]:
    if not isinstance(usage, dict):
        return [f"{what}: usage missing or not an object"]
    want = {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": COMPLETION_TOKENS,
        "total_tokens": TOTAL_TOKENS,
    }
    return [
        f"{what}: usage.{k}={_short(usage.get(k))}, expected {v}"
        for k, v in want.items()
        if usage.get(k) != v
    ]


def validate_openai_json(status: int, content_type: str, body: bytes) -> list[str]:
    errors = _status(status, content_type, body, "application/json")
    if status != 200:
        return errors
    obj, errs = _json_object(body, "openai completion")
    if obj is None:
        return errors + errs
    w = "openai completion"
    if obj.get("object") != "chat.completion":
        errors.append(f"{w}: object={_short(obj.get('object'))}, expected 'chat.completion'")
    if not isinstance(obj.get("id"), str) or not obj["id"]:
        errors.append(f"{w}: id missing or empty")
    if not isinstance(obj.get("model"), str) or not obj["model"]:
        errors.append(f"{w}: model missing or empty")
    if not isinstance(obj.get("created"), int):
        errors.append(f"{w}: created is not an integer")
    choices = obj.get("choices")
    if not isinstance(choices, list) or len(choices) != 1 or not isinstance(choices[0], dict):
        errors.append(f"{w}: choices is not a one-element list")
    else:
        choice = choices[0]
        if choice.get("index") != 0:
            errors.append(f"{w}: choices[0].index={_short(choice.get('index'))}, expected 0")
        message = choice.get("message")
        if not isinstance(message, dict):
            errors.append(f"{w}: choices[0].message is not an object")
        else:
            if message.get("role") != "assistant":
                errors.append(f"{w}: role={_short(message.get('role'))}, expected 'assistant'")
            content = message.get("content")
            if not isinstance(content, str):
                errors.append(f"{w}: content is not a string")
            else:
                errors += _check_text(content, w)
        if choice.get("finish_reason") != "stop":
            errors.append(
                f"{w}: finish_reason={_short(choice.get('finish_reason'))}, expected 'stop'"
            )
    errors += _check_openai_usage(obj.get("usage"), w)
    return errors


def validate_openai_sse(
    status: int, content_type: str, body: bytes, *, expect_usage: bool = True
) -> list[str]:
    errors = _status(status, content_type, body, "text/event-stream")
    if status != 200:
        return errors
    events, errs = parse_sse(body)
    errors += errs
    w = "openai stream"
    if not events:
        return [*errors, f"{w}: no events"]
    if events[-1].data != "[DONE]":
        errors.append(f"{w}: last event is not data: [DONE]")
    texts: list[str] = []
    finishes: list[Any] = []
    usage_chunks: list[Any] = []
    role_seen = False
    first = True
    done_at = None
    for i, ev in enumerate(events):
        if ev.data == "[DONE]":
            if done_at is None:
                done_at = i
            else:
                errors.append(f"{w}: [DONE] more than once")
            continue
        if done_at is not None:
            errors.append(f"{w}: data after [DONE]")
            continue
        if ev.event is not None and ev.event != "message":
            errors.append(f"{w}: unexpected event name {ev.event!r}")
        try:
            chunk = _decode(ev.data)
        except msgspec.DecodeError:
            errors.append(f"{w}: chunk is not JSON: {_short(ev.data)}")
            continue
        if not isinstance(chunk, dict):
            errors.append(f"{w}: chunk is not an object")
            continue
        if "error" in chunk:
            errors.append(f"{w}: error chunk: {_short(chunk['error'], 300)}")
            continue
        if chunk.get("object") != "chat.completion.chunk":
            errors.append(f"{w}: object={_short(chunk.get('object'))}, expected chunk")
        if not isinstance(chunk.get("id"), str) or not chunk.get("id"):
            errors.append(f"{w}: chunk id missing")
        if not isinstance(chunk.get("model"), str) or not chunk.get("model"):
            errors.append(f"{w}: chunk model missing")
        choices = chunk.get("choices")
        if chunk.get("usage") is not None:
            usage_chunks.append(chunk["usage"])
            if choices:
                errors.append(f"{w}: usage chunk has non-empty choices")
        if not isinstance(choices, list):
            errors.append(f"{w}: choices is not a list")
            continue
        for choice in choices:
            delta = choice.get("delta") if isinstance(choice, dict) else None
            if not isinstance(delta, dict):
                errors.append(f"{w}: choice without a delta object")
                continue
            if first:
                first = False
                if delta.get("role") == "assistant":
                    role_seen = True
            elif "role" in delta and delta["role"] not in (None, "assistant"):
                errors.append(f"{w}: delta role={_short(delta['role'])}")
            content = delta.get("content")
            if content is not None:
                if not isinstance(content, str):
                    errors.append(f"{w}: delta content is not a string")
                else:
                    texts.append(content)
            if choice.get("finish_reason") is not None:
                finishes.append(choice["finish_reason"])
    if not role_seen:
        errors.append(f"{w}: first chunk has no role 'assistant'")
    errors += _check_text("".join(texts), w)
    if finishes != ["stop"]:
        errors.append(f"{w}: finish_reasons={_short(finishes)}, expected ['stop']")
    if expect_usage:
        if len(usage_chunks) != 1:
            errors.append(f"{w}: {len(usage_chunks)} usage chunks, expected 1")
        else:
            errors += _check_openai_usage(usage_chunks[0], w)
    if done_at is None:
        errors.append(f"{w}: no data: [DONE] terminator")
    return errors


VALIDATORS: dict[str, Validator] = {
    "anthropic-json": validate_anthropic_json,
    "anthropic-sse": validate_anthropic_sse,
    "openai-json": validate_openai_json,
    "openai-sse": validate_openai_sse,
}
