"""Structured output across formats (vdm.protocols.structured): which way an
upstream is held to a schema, the output tool and its answer back as text,
and the schema in each family's dialect."""

from __future__ import annotations

from typing import Any

import pytest

from vdm import ir
from vdm.protocols import structured

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "temp": {"type": "number"}},
    "required": ["city", "temp"],
    "additionalProperties": False,
}
FORMAT = ir.OutputFormat("json_schema", SCHEMA, "weather", "A forecast", True)
WEATHER_TOOL = ir.Tool("get_weather", "Weather", {"type": "object"})


def request(fmt: ir.OutputFormat | None = FORMAT, **fields: Any) -> ir.ChatRequest:
    return ir.ChatRequest(
        "m", [ir.Message("user", [ir.TextPart("Oslo?")])], output_format=fmt, **fields
    )


def plan(req: ir.ChatRequest, mode: str = "native", *, anthropic: bool = False) -> Any:
    return structured.plan(
        req, mode, native_json_object=not anthropic, force_with_thinking=not anthropic
    )


# ---------------------------------------------------------------- plan


def test_without_a_format_the_request_is_the_same_object() -> None:
    req = request(None)
    assert plan(req, "tool") == (req, None)


@pytest.mark.parametrize("anthropic", [False, True])
def test_native_keeps_a_json_schema_for_the_encoder(anthropic: bool) -> None:
    req = request()
    assert plan(req, anthropic=anthropic) == (req, None)


def test_native_json_object_stays_native_for_openai_but_is_a_tool_for_anthropic() -> None:
    req = request(ir.OutputFormat("json_object"))
    assert plan(req) == (req, None)
    sent, tool = plan(req, anthropic=True)
    assert tool == structured.OUTPUT_TOOL
    assert sent.tools == [ir.Tool(tool, sent.tools[0].description, {"type": "object"})]
    assert sent.tool_choice == ir.ToolChoice("tool", tool, disable_parallel=True)
    assert sent.output_format is None


def test_tool_mode_forces_a_tool_whose_schema_is_the_format() -> None:
    sent, tool = plan(request(), "tool")
    assert tool == "structured_output"
    (only,) = sent.tools
    assert only.name == tool and only.input_schema == SCHEMA
    assert only.description is not None and only.description.endswith("A forecast")
    assert sent.tool_choice == ir.ToolChoice("tool", tool, disable_parallel=True)
    assert sent.output_format is None
    assert sent.system == []


def test_with_the_clients_tools_the_model_must_call_one_of_them_or_the_output_tool() -> None:
    sent, tool = plan(request(tools=[WEATHER_TOOL]), "tool")
    assert [t.name for t in sent.tools] == ["get_weather", tool]
    assert sent.tool_choice == ir.ToolChoice("any")


def test_a_tool_choice_naming_a_client_tool_is_kept() -> None:
    choice = ir.ToolChoice("tool", "get_weather")
    sent, _ = plan(request(tools=[WEATHER_TOOL], tool_choice=choice), "tool")
    assert sent.tool_choice == choice
    assert len(sent.tools) == 2


def test_tool_choice_none_hides_the_clients_tools_and_forces_the_output_tool() -> None:
    sent, tool = plan(request(tools=[WEATHER_TOOL], tool_choice=ir.ToolChoice("none")), "tool")
    assert [t.name for t in sent.tools] == [tool]
    assert sent.tool_choice == ir.ToolChoice("tool", tool, disable_parallel=True)


def test_the_output_tool_never_takes_a_client_tools_name() -> None:
    taken = ir.Tool("structured_output", None, {"type": "object"})
    sent, tool = plan(request(tools=[taken]), "tool")
    assert tool == "structured_output_"
    assert [t.name for t in sent.tools] == ["structured_output", "structured_output_"]


def test_thinking_on_anthropic_asks_for_the_tool_in_words_since_it_cannot_be_forced() -> None:
    req = request(thinking=ir.Thinking("enabled", 2048))
    sent, tool = plan(req, "tool", anthropic=True)
    assert sent.tool_choice == ir.ToolChoice("auto")
    assert sent.system[-1].text == f"Give your final answer by calling the tool {tool}."
    # an OpenAI-compatible upstream forces it all the same
    assert plan(req, "tool")[0].tool_choice.mode == "tool"


def test_prompt_mode_is_a_sentence_quoting_the_schema() -> None:
    sent, tool = plan(request(), "prompt")
    assert tool is None and sent.output_format is None and sent.tools == []
    assert sent.system[-1].text.startswith("Respond with a single valid JSON value")
    assert '"required":["city","temp"]' in sent.system[-1].text
    sent, _ = plan(request(ir.OutputFormat("json_object")), "prompt")
    assert sent.system[-1].text == "Respond with a single valid JSON object and nothing else."


# ---------------------------------------------------------------- the answer back


def test_the_output_tools_call_comes_back_as_text_and_end_turn() -> None:
    unwrapper = structured.OutputToolUnwrapper("structured_output")
    events: list[ir.Event] = [
        ir.MessageStart("msg_1", "m", ir.Usage()),
        ir.ToolUseStart(0, "toolu_1", "structured_output"),
        ir.ToolInputDelta(0, '{"city":'),
        ir.ToolInputDelta(0, '"Oslo"}'),
        ir.BlockStop(0),
        ir.MessageDelta("tool_use", ir.Usage(1, 2)),
        ir.MessageStop(),
    ]
    out = [unwrapper.feed(e) for e in events]
    assert out[1:5] == [
        ir.TextStart(0),
        ir.TextDelta(0, '{"city":'),
        ir.TextDelta(0, '"Oslo"}'),
        ir.BlockStop(0),
    ]
    assert out[5] == ir.MessageDelta("end_turn", ir.Usage(1, 2))
    folded = ir.fold(out)
    assert folded.content == [ir.TextPart('{"city":"Oslo"}')]
    assert folded.stop_reason == "end_turn"


def test_a_client_tool_called_beside_it_stays_a_tool_call_and_the_turn_tool_use() -> None:
    unwrapper = structured.OutputToolUnwrapper("structured_output")
    out = [
        unwrapper.feed(e)
        for e in [
            ir.ToolUseStart(0, "toolu_1", "get_weather"),
            ir.ToolInputDelta(0, "{}"),
            ir.BlockStop(0),
            ir.MessageDelta("tool_use", ir.Usage()),
        ]
    ]
    assert out[0] == ir.ToolUseStart(0, "toolu_1", "get_weather")
    assert out[1] == ir.ToolInputDelta(0, "{}")
    assert out[3].stop_reason == "tool_use"  # type: ignore[union-attr]


def test_max_tokens_stays_max_tokens() -> None:
    unwrapper = structured.OutputToolUnwrapper("o")
    unwrapper.feed(ir.ToolUseStart(0, "t", "o"))
    assert unwrapper.feed(ir.MessageDelta("max_tokens", ir.Usage())).stop_reason == "max_tokens"  # type: ignore[union-attr]


# ---------------------------------------------------------------- OpenAI's form


def test_response_format_keeps_name_description_and_strict() -> None:
    assert structured.openai_response_format(FORMAT) == {
        "type": "json_schema",
        "json_schema": {
            "name": "weather",
            "schema": SCHEMA,
            "description": "A forecast",
            "strict": True,
        },
    }
    loose = ir.OutputFormat("json_schema", SCHEMA, "w", strict=False)
    assert structured.openai_response_format(loose)["json_schema"]["strict"] is False
    assert structured.openai_response_format(ir.OutputFormat("json_object")) == {
        "type": "json_object"
    }


def test_strict_is_sent_only_when_the_client_said() -> None:
    spec = structured.openai_response_format(ir.OutputFormat("json_schema", SCHEMA))
    assert spec["json_schema"] == {"name": "output", "schema": SCHEMA}


@pytest.mark.parametrize(
    ("schema", "strict"),
    [
        (SCHEMA, True),
        ({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}, False),
        ({**SCHEMA, "required": ["city"]}, False),
        (
            {
                "type": "object",
                "properties": {"items": {"type": "array", "items": {"$ref": "#/$defs/I"}}},
                "required": ["items"],
                "additionalProperties": False,
                "$defs": {"I": {"type": "object", "properties": {"x": {"type": "integer"}}}},
            },
            False,
        ),
        (
            {
                "anyOf": [
                    {"type": "null"},
                    {"type": "object", "properties": {}, "additionalProperties": False},
                ]
            },
            True,
        ),
        ({"type": "string"}, True),
    ],
)
def test_strict_compatible(schema: dict[str, Any], strict: bool) -> None:
    assert structured.strict_compatible(schema) is strict


# ---------------------------------------------------------------- Anthropic's form


def test_anthropic_schema_closes_objects_and_moves_unsupported_constraints_to_descriptions() -> (
    None
):
    schema = {
        "title": "Plan",
        "type": "object",
        "properties": {
            "steps": {
                "type": "array",
                "items": {"$ref": "#/$defs/Step"},
                "minItems": 2,
                "maxItems": 5,
            },
            "when": {"type": "string", "format": "date"},
            "color": {"type": "string", "format": "hex-color", "description": "A color"},
            "choice": {"oneOf": [{"type": "integer", "minimum": 1}, {"type": "null"}]},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        },
        "required": ["steps", "when", "color", "choice", "tags"],
        "$defs": {"Step": {"type": "object", "properties": {"n": {"type": "integer"}}}},
    }
    assert structured.anthropic_schema(schema) == {
        "title": "Plan",
        "type": "object",
        "properties": {
            "steps": {
                "type": "array",
                "items": {"$ref": "#/$defs/Step"},
                "description": "{minItems: 2, maxItems: 5}",
            },
            "when": {"type": "string", "format": "date"},
            "color": {"type": "string", "description": 'A color\n\n{format: "hex-color"}'},
            "choice": {
                "anyOf": [{"type": "integer", "description": "{minimum: 1}"}, {"type": "null"}]
            },
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 1},
        },
        "required": ["steps", "when", "color", "choice", "tags"],
        "$defs": {
            "Step": {
                "type": "object",
                "properties": {"n": {"type": "integer"}},
                "additionalProperties": False,
            }
        },
        "additionalProperties": False,
    }


def test_anthropic_schema_leaves_the_callers_schema_alone() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer", "maximum": 3}}}
    structured.anthropic_schema(schema)
    assert schema == {"type": "object", "properties": {"a": {"type": "integer", "maximum": 3}}}
