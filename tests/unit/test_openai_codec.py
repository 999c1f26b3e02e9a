"""Chat Completions both ways: requests from OpenAI clients -> IR
(``openai_door``), and IR -> requests to OpenAI-compatible upstreams
(``openai_upstream``): structured output and documents."""

from __future__ import annotations

from typing import Any

import pytest

from vdm import ir
from vdm.errors import InvalidRequest
from vdm.protocols import openai_door, openai_upstream

PDF_B64 = "JVBERi0xLjQK"
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"a": {"type": "integer"}},
    "required": ["a"],
    "additionalProperties": False,
}
OPTIONS = openai_upstream.RequestOptions()


def client(*content: dict[str, Any], **body: Any) -> ir.ChatRequest:
    request, _ = openai_door.decode_request(
        {"model": "m", "messages": [{"role": "user", "content": list(content)}], **body}
    )
    return request


def upstream(*parts: ir.Part, **fields: Any) -> dict[str, Any]:
    request = ir.ChatRequest("m", [ir.Message("user", list(parts))], **fields)
    return openai_upstream.encode_request(request, "up", OPTIONS)


TEXT = {"type": "text", "text": "Sum up"}


# ---------------------------------------------------------------- response_format


@pytest.mark.parametrize(
    ("response_format", "expected"),
    [
        ({"type": "text"}, None),
        ({"type": "json_object"}, ir.OutputFormat("json_object")),
        (
            {
                "type": "json_schema",
                "json_schema": {"name": "A", "schema": SCHEMA, "strict": True, "description": "d"},
            },
            ir.OutputFormat("json_schema", SCHEMA, "A", "d", True),
        ),
        (
            {"type": "json_schema", "json_schema": {"name": "A", "schema": SCHEMA}},
            ir.OutputFormat("json_schema", SCHEMA, "A"),
        ),
    ],
)
def test_response_format_is_the_irs_output_format(
    response_format: dict[str, Any], expected: ir.OutputFormat | None
) -> None:
    request = client(TEXT, response_format=response_format)
    assert request.output_format == expected
    assert request.system == []  # no longer an instruction


@pytest.mark.parametrize(
    ("response_format", "message"),
    [
        ({"type": "xml"}, "response_format.type"),
        ({"type": "json_schema"}, "response_format.json_schema: expected object"),
        ({"type": "json_schema", "json_schema": {"name": "A"}}, "json_schema.schema"),
        ({"type": "json_schema", "json_schema": {"schema": SCHEMA, "strict": "y"}}, "strict"),
    ],
)
def test_a_bad_response_format_is_a_400_naming_it(
    response_format: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidRequest, match=message):
        client(TEXT, response_format=response_format)


def test_output_format_goes_up_as_response_format() -> None:
    fmt = ir.OutputFormat("json_schema", SCHEMA, "A", None, True)
    assert upstream(ir.TextPart("x"), output_format=fmt)["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "A", "schema": SCHEMA, "strict": True},
    }
    assert upstream(ir.TextPart("x"), output_format=ir.OutputFormat("json_object"))[
        "response_format"
    ] == {"type": "json_object"}
    assert "response_format" not in upstream(ir.TextPart("x"))


# ---------------------------------------------------------------- file parts


def test_file_parts_are_documents() -> None:
    request = client(
        {
            "type": "file",
            "file": {"file_data": f"data:application/pdf;base64,{PDF_B64}", "filename": "r.pdf"},
        },
        {"type": "file", "file": {"file_data": "aGVsbG8=", "filename": "notes.txt"}},
        {"type": "file", "file": {"file_data": "https://x.test/a.pdf"}},
        TEXT,
    )
    assert request.messages[0].content == [
        ir.DocumentPart("application/pdf", data=PDF_B64, filename="r.pdf"),
        ir.DocumentPart("text/plain", data="aGVsbG8=", filename="notes.txt"),
        ir.DocumentPart("application/pdf", url="https://x.test/a.pdf"),
        ir.TextPart("Sum up"),
    ]


@pytest.mark.parametrize(
    ("file", "message"),
    [
        ({"file_id": "file-abc"}, r"messages\.0\.content\.0\.file\.file_id: a file uploaded"),
        ({}, r"messages\.0\.content\.0\.file\.file_data: field required"),
        ({"file_data": "data:application/pdf,%25PDF"}, "must be base64"),
        ({"file_data": "data:application/pdf;base64,!!!!"}, "invalid base64"),
        ({"file_data": PDF_B64, "filename": 3}, r"file\.filename: expected string"),
    ],
)
def test_a_file_part_that_cannot_be_carried_is_a_400_naming_it(
    file: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidRequest, match=message):
        client({"type": "file", "file": file})


def test_documents_go_up_as_file_parts_and_text_documents_as_text() -> None:
    body = upstream(
        ir.DocumentPart("application/pdf", data=PDF_B64, filename="r.pdf"),
        ir.DocumentPart("application/pdf", data=PDF_B64),
        ir.DocumentPart("application/pdf", url="https://x.test/docs/a.pdf?v=2"),
        ir.DocumentPart("text/plain", text="notes", filename="Notes"),
        ir.TextPart("Sum up"),
    )
    assert body["messages"] == [
        {
            "role": "user",
            "content": [
                {
                    "type": "file",
                    "file": {
                        "file_data": f"data:application/pdf;base64,{PDF_B64}",
                        "filename": "r.pdf",
                    },
                },
                {
                    "type": "file",
                    "file": {
                        "file_data": f"data:application/pdf;base64,{PDF_B64}",
                        "filename": "document.pdf",
                    },
                },
                {
                    "type": "file",
                    "file": {"file_data": "https://x.test/docs/a.pdf?v=2", "filename": "a.pdf"},
                },
                {"type": "text", "text": "Notes\n\nnotes"},
                {"type": "text", "text": "Sum up"},
            ],
        }
    ]


def test_a_tool_results_document_follows_in_a_user_message() -> None:
    """(Tool messages carry text only, as for images.)"""
    pdf = ir.DocumentPart("application/pdf", data=PDF_B64, filename="r.pdf")
    body = upstream(ir.ToolResultPart("toolu_call_1", [ir.TextPart("here"), pdf]))
    assert body["messages"] == [
        {"role": "tool", "tool_call_id": "call_1", "content": "here"},
        {
            "role": "user",
            "content": [
                {
                    "type": "file",
                    "file": {
                        "file_data": f"data:application/pdf;base64,{PDF_B64}",
                        "filename": "r.pdf",
                    },
                }
            ],
        },
    ]
