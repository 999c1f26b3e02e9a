"""LLMProxy messages <-> the IR, and the gateway's errors -> ``ExecuteError``.

Pure functions, no I/O.

* System fragments become the system prompt (one text block each), user
  fragments one user message (one text block each).
* ``response_model_schema`` becomes one forced tool, :data:`ANSWER_TOOL`,
  whose input schema is the client's schema; the tool call's input *is* the
  answer, and its JSON is returned as the response text (streamed as the
  provider streams the arguments).  One mechanism for every provider family:
  OpenAI-format providers get ``tools`` + ``tool_choice: function``,
  Anthropic-native ones ``tools`` + ``tool_choice: tool``, and both enforce
  the schema's shape far better than an instruction in the prompt.  A model
  that answers with text anyway gets its text returned.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from vdm import ir
from vdm.errors import GatewayError, InvalidRequest, UnknownModel, UpstreamStatusError
from vdm.grpc import llm_proxy_pb2 as pb
from vdm.protocols.fields import too_deep

ANSWER_TOOL = "respond"
_ANSWER_DESCRIPTION = (
    "Give your whole answer by calling this tool: its input is the answer, "
    "and must match the schema exactly."
)

# error kind (vdm.errors) -> ExecuteError.error_code
_CODE_BY_KIND: dict[str, str] = {
    "invalid_request": "INVALID_REQUEST",
    "too_large": "INVALID_REQUEST",
    "not_found": "MODEL_NOT_FOUND",  # an upstream 404: the model it was asked for
    "rate_limit": "RATE_LIMITED",
    "timeout": "TIMEOUT",
}
UPSTREAM_ERROR = "UPSTREAM_ERROR"
_decode_json = msgspec.json.Decoder().decode
_encode_json = msgspec.json.Encoder().encode


def to_chat_request(
    message: pb.ExecuteRequest,
    *,
    default_model: str | None,
    max_input_length: int,
    stream: bool,
) -> ir.ChatRequest:
    """Validate an ``ExecuteRequest`` and build the IR request (raises InvalidRequest)."""
    model = message.model_name.strip() if message.HasField("model_name") else ""
    model = model or (default_model or "")
    if not model:
        raise InvalidRequest(
            "model_name: required (this server has no default model; "
            "its operator can set GRPC_DEFAULT_MODEL)"
        )
    size = sum(map(len, message.system_fragments)) + sum(map(len, message.user_fragments))
    if size > max_input_length:
        raise InvalidRequest(
            f"the fragments hold {size} characters; this server accepts at "
            f"most {max_input_length} (max_input_length)"
        )
    user: list[ir.Part] = [ir.TextPart(f) for f in message.user_fragments if f]
    if not user:
        raise InvalidRequest("user_fragments: at least one non-empty fragment is required")
    request = ir.ChatRequest(
        model=model,
        messages=[ir.Message("user", user)],
        system=[ir.TextPart(f) for f in message.system_fragments if f],
        stream=stream,
    )
    if message.HasField("response_model_schema") and message.response_model_schema.strip():
        request.tools = [
            ir.Tool(ANSWER_TOOL, _ANSWER_DESCRIPTION, parse_schema(message.response_model_schema))
        ]
        request.tool_choice = ir.ToolChoice("tool", ANSWER_TOOL)
    return request


def parse_schema(text: str) -> dict[str, Any]:
    try:
        schema = _decode_json(text)
    except msgspec.DecodeError:
        raise InvalidRequest("response_model_schema: not valid JSON") from None
    except RecursionError:
        raise too_deep("response_model_schema") from None
    if not isinstance(schema, dict):
        raise InvalidRequest("response_model_schema: expected a JSON Schema object")
    kind = schema.get("type", "object" if "properties" in schema else None)
    if kind != "object":
        raise InvalidRequest(
            "response_model_schema: the schema must describe a JSON object "
            '("type": "object"), as a Pydantic model\'s schema does'
        )
    return schema


def answer_text(response: ir.ChatResponse, structured: bool) -> str:
    """The text of a folded answer: the answer tool's input as JSON when the
    request asked for a schema (and the model called it), else its text."""
    if structured:
        for part in response.content:
            if isinstance(part, ir.ToolUsePart) and part.name == ANSWER_TOOL:
                raw = part.input.get("_raw_arguments")
                if isinstance(raw, str) and len(part.input) == 1:
                    return raw  # what the model produced, unparseable as it is
                return _encode_json(part.input).decode()
    return "".join(p.text for p in response.content if isinstance(p, ir.TextPart))


def error_code(exc: GatewayError) -> str:
    if isinstance(exc, UnknownModel):
        return "MODEL_NOT_FOUND"
    return _CODE_BY_KIND.get(exc.kind, UPSTREAM_ERROR)


def to_error(exc: GatewayError) -> pb.ExecuteError:
    """The client-facing error: code, the gateway's message, and (when an upstream
    answered) which provider and status, as JSON details; never a key or body."""
    error = pb.ExecuteError(error_code=error_code(exc), error_message=exc.message)
    details: dict[str, Any] = {}
    provider = getattr(exc, "provider", None)
    if provider:
        details["provider"] = provider
    if isinstance(exc, UpstreamStatusError):
        details["upstream_status"] = exc.upstream_status
    retry_after = exc.headers.get("retry-after")
    if retry_after:
        details["retry_after_seconds"] = int(retry_after)
    if details:
        error.error_details = _encode_json(details).decode()
    return error


def metrics(
    usage: ir.Usage | None, started: float, attempts: int, cost: float | None = None
) -> pb.ExecutionMetrics:
    """``started`` is a ``time.perf_counter()`` reading; ``timestamp`` is Unix seconds;
    ``cost``: USD (unset when the model has no price)."""
    out = pb.ExecutionMetrics(
        duration_ms=int((time.perf_counter() - started) * 1000),
        retry_count=max(0, attempts - 1),
        timestamp=int(time.time()),
    )
    if usage is not None:
        out.input_tokens = usage.input_tokens
        out.output_tokens = usage.output_tokens
        out.total_tokens = usage.input_tokens + usage.output_tokens
    if cost is not None:
        out.cost_usd = cost
    return out
