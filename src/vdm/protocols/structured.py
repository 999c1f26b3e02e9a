"""Structured output across formats: how an upstream is held to a request's
:class:`~vdm.ir.OutputFormat`.  Pure functions, no I/O.

Three ways, best first; a provider's ``structured-output`` setting
(``{NAME}_STRUCTURED_OUTPUT``) says which it can take:

* ``native`` (the default) — the upstream's own constraint, written by its
  family's encoder: OpenAI-compatible upstreams get ``response_format``
  (``json_object``, or ``json_schema`` with its name, description and
  ``strict``), Anthropic-native ones ``output_config.format`` (its schema
  adapted to the subset Anthropic accepts, :func:`anthropic_schema`).
  Anthropic has no format for "any JSON object", so ``json_object`` goes to
  an Anthropic-native upstream as a tool;
* ``tool`` — a tool whose input schema is the format's schema, which the
  model is made to call (:func:`with_output_tool`); its call comes back to the
  client as the answer's text (:class:`OutputToolUnwrapper`): no tool call
  shows, the stop reason is ``end_turn``.  When the client has tools of its
  own the model must call one of them or the output tool;
* ``prompt`` — an instruction quoting the schema, appended to the system
  prompt (:func:`with_instruction`): no guarantee, the last resort for an
  upstream that has neither.

:func:`plan` picks one for a request and a provider.  A body asking for
structured output (:func:`requested`) to a provider set to ``tool`` or
``prompt`` goes through the IR even from a client of the provider's own
protocol, which would otherwise be relayed as it is.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import msgspec

from vdm import ir

_encode = msgspec.json.Encoder().encode

OUTPUT_TOOL = "structured_output"
_OUTPUT_TOOL_DESCRIPTION = (
    "Give your final answer by calling this tool: its input is the answer, "
    "and must match the schema exactly."
)
_ANY_OBJECT: dict[str, Any] = {"type": "object"}


# ---------------------------------------------------------------- choosing


def plan(
    request: ir.ChatRequest,
    mode: str,
    *,
    native_json_object: bool,
    force_with_thinking: bool,
) -> tuple[ir.ChatRequest, str | None]:
    """The request to encode for a provider whose setting is ``mode``
    (``native``, ``tool`` or ``prompt``: ``vdm.config.StructuredOutput``), and
    the output tool's name when the answer comes back through one.

    ``native_json_object``: the family's native constraint can say "any JSON
    object"; ``force_with_thinking``: the upstream lets a request with
    thinking force a tool call (Anthropic does not).
    """
    fmt = request.output_format
    if fmt is None:
        return request, None
    if mode == "prompt":
        return with_instruction(request), None
    if mode == "native" and (fmt.kind == "json_schema" or native_json_object):
        return request, None
    thinking = request.thinking is not None and request.thinking.mode != "disabled"
    return with_output_tool(request, forced=force_with_thinking or not thinking)


def instruction(fmt: ir.OutputFormat) -> str:
    """The sentence that asks for the format in words (the ``prompt`` way)."""
    if fmt.kind == "json_object" or fmt.schema is None:
        return "Respond with a single valid JSON object and nothing else."
    return (
        "Respond with a single valid JSON value that matches this JSON Schema, "
        "and nothing else:\n" + _encode(fmt.schema).decode()
    )


def with_instruction(request: ir.ChatRequest) -> ir.ChatRequest:
    """The request without its format, asking for it in the system prompt."""
    assert request.output_format is not None
    system = [*request.system, ir.TextPart(instruction(request.output_format))]
    return msgspec.structs.replace(request, system=system, output_format=None)


def output_tool_name(tools: list[ir.Tool]) -> str:
    """:data:`OUTPUT_TOOL`, or a variant no client tool is named."""
    names = {t.name for t in tools}
    name = OUTPUT_TOOL
    while name in names:
        name += "_"
    return name


def with_output_tool(request: ir.ChatRequest, *, forced: bool) -> tuple[ir.ChatRequest, str]:
    """The request without its format, with a tool whose input is the answer.

    The model is made to call it (``forced``), or, when the client has tools
    of its own, to call one of its tools or it; unforced (thinking on an
    upstream that refuses forced calls with it), it is asked to in words.
    A tool choice naming one of the client's tools is kept.
    """
    fmt = request.output_format
    assert fmt is not None
    choice = request.tool_choice
    own = request.tools if choice is None or choice.mode != "none" else []
    name = output_tool_name(own)
    description = _OUTPUT_TOOL_DESCRIPTION
    if fmt.description:
        description += "\n\n" + fmt.description
    schema = fmt.schema if fmt.kind == "json_schema" and fmt.schema is not None else _ANY_OBJECT
    system = request.system
    if choice is not None and choice.mode == "tool":
        pass  # the client's own call comes first; the answer follows on a later turn
    elif not forced:
        choice = ir.ToolChoice("auto")
        system = [*system, ir.TextPart(f"Give your final answer by calling the tool {name}.")]
    elif own:
        choice = ir.ToolChoice("any", disable_parallel=choice.disable_parallel if choice else False)
    else:
        choice = ir.ToolChoice("tool", name, disable_parallel=True)
    return (
        msgspec.structs.replace(
            request,
            tools=[*own, ir.Tool(name, description, schema)],
            tool_choice=choice,
            system=system,
            output_format=None,
        ),
        name,
    )


# ---------------------------------------------------------------- the answer back


class OutputToolUnwrapper:
    """Per-stream state: the output tool's call becomes a text block (its
    input, as the model wrote it, is the text) at the same index; when no
    other tool was called the stop reason ``tool_use`` becomes ``end_turn``."""

    __slots__ = ("_blocks", "_name", "_other_calls")

    def __init__(self, name: str) -> None:
        self._name = name
        self._blocks: set[int] = set()  # indices of the output tool's calls
        self._other_calls = False

    def feed(self, event: ir.Event) -> ir.Event:
        match event:
            case ir.ToolUseStart(index=index, name=name):
                if name == self._name:
                    self._blocks.add(index)
                    return ir.TextStart(index)
                self._other_calls = True
            case ir.ToolInputDelta(index=index, partial_json=text) if index in self._blocks:
                return ir.TextDelta(index, text)
            case ir.MessageDelta(stop_reason="tool_use") if self._blocks and not self._other_calls:
                return msgspec.structs.replace(event, stop_reason="end_turn")
            case _:
                pass
        return event


async def unwrap(events: AsyncGenerator[ir.Event], name: str) -> AsyncGenerator[ir.Event]:
    """``events`` with the output tool's calls turned into text."""
    unwrapper = OutputToolUnwrapper(name)
    try:
        async for event in events:
            yield unwrapper.feed(event)
    finally:
        await events.aclose()


# ---------------------------------------------------------------- OpenAI's form


def openai_response_format(fmt: ir.OutputFormat) -> dict[str, Any]:
    """``response_format`` for an OpenAI-compatible upstream (``strict`` only
    when the client's protocol said)."""
    if fmt.kind == "json_object" or fmt.schema is None:
        return {"type": "json_object"}
    spec: dict[str, Any] = {"name": fmt.name or "output", "schema": fmt.schema}
    if fmt.description:
        spec["description"] = fmt.description
    if fmt.strict is not None:
        spec["strict"] = fmt.strict
    return {"type": "json_schema", "json_schema": spec}


def strict_compatible(schema: Any) -> bool:
    """Whether ``schema`` meets OpenAI's strict mode: every object lists all
    its properties as required and forbids others.  (An Anthropic format,
    always enforced, is strict wherever OpenAI can enforce it.)"""
    if isinstance(schema, list):
        return all(strict_compatible(s) for s in schema)
    if not isinstance(schema, dict):
        return True
    properties = schema.get("properties")
    is_object = schema.get("type") == "object" or isinstance(properties, dict)
    if is_object:
        if schema.get("additionalProperties") is not False:
            return False
        names = set(properties) if isinstance(properties, dict) else set()
        required = schema.get("required") or []
        if not isinstance(required, list) or set(required) != names:
            return False
    return all(
        strict_compatible(value)
        for key, value in schema.items()
        if key in _SUBSCHEMAS and isinstance(value, dict | list)
    ) and all(
        strict_compatible(sub)
        for key in _SCHEMA_MAPS
        if isinstance(schema.get(key), dict)
        for sub in schema[key].values()
    )


_SUBSCHEMAS = frozenset({"items", "anyOf", "allOf", "oneOf", "not", "prefixItems"})
_SCHEMA_MAPS = ("properties", "$defs", "definitions")


# ---------------------------------------------------------------- Anthropic's form

# What Anthropic's structured outputs accept besides the structural keywords;
# any other keyword moves into the description, so the model still reads it.
_ANTHROPIC_STRING_FORMATS = frozenset(
    {"date-time", "time", "date", "duration", "email", "hostname", "uri", "ipv4", "ipv6", "uuid"}
)
_ANTHROPIC_KEPT = frozenset(
    {"type", "description", "title", "enum", "const", "default", "pattern", "required", "$ref"}
)


def anthropic_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A JSON Schema in the subset Anthropic's ``output_config.format`` takes:
    every object closed (``additionalProperties: false``), ``oneOf`` as
    ``anyOf``, ``minItems`` only 0 or 1, string formats from its list; other
    constraints (``minimum``, ``maxLength``, ...) are appended to the
    description as text rather than refused."""
    out: dict[str, Any] = {}
    moved: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {k: _sub(v) for k, v in value.items()}
        elif key in ("anyOf", "oneOf", "allOf") and isinstance(value, list):
            out["allOf" if key == "allOf" else "anyOf"] = [_sub(v) for v in value]
        elif key == "items" and isinstance(value, dict):
            out[key] = anthropic_schema(value)
        elif key == "additionalProperties":
            pass  # always false, below
        elif key in _ANTHROPIC_KEPT or _ANTHROPIC_VALUES.get(key, _never)(value):
            out[key] = value
        else:
            moved[key] = value
    kind = out.get("type")
    if kind == "object" or (isinstance(kind, list) and "object" in kind) or "properties" in out:
        out.setdefault("properties", {})
        out["additionalProperties"] = False
    if moved:
        note = "{" + ", ".join(f"{k}: {_encode(v).decode()}" for k, v in moved.items()) + "}"
        description = out.get("description")
        out["description"] = f"{description}\n\n{note}" if description else note
    return out


def _sub(value: Any) -> Any:
    return anthropic_schema(value) if isinstance(value, dict) else value


def _never(value: Any) -> bool:
    return False


# Keywords Anthropic takes with some values only.
_ANTHROPIC_VALUES: dict[str, Any] = {
    "minItems": lambda v: v in (0, 1),
    "format": lambda v: v in _ANTHROPIC_STRING_FORMATS,
}


def requested(body: dict[str, Any]) -> bool:
    """Whether a client's body asks for structured output, in any door's words:
    ``response_format`` (Chat Completions), ``text.format`` (Responses),
    ``output_config.format`` or ``output_format`` (Anthropic)."""
    chat = body.get("response_format")
    text = body.get("text")
    config = body.get("output_config")
    return (
        (isinstance(chat, dict) and chat.get("type") in _JSON_KINDS)
        or (
            isinstance(text, dict)
            and isinstance(text.get("format"), dict)
            and text["format"].get("type") in _JSON_KINDS
        )
        or (isinstance(config, dict) and config.get("format") is not None)
        or body.get("output_format") is not None
    )


_JSON_KINDS = ("json_object", "json_schema")
