"""Documents cross formats, never dropped: Anthropic ``document`` blocks and
Responses ``input_file`` parts reach an OpenAI-compatible upstream as Chat
Completions ``file`` parts; Chat Completions ``file`` parts reach an
Anthropic-native upstream as ``document`` blocks; what cannot be carried is a
400 in the client's error shape naming the block."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import anthropic
import openai
import pytest

from tests.support.fakes import FakeUpstream, JSONReply, anthropic_message, completion
from tests.support.gateway import Gateway

PDF = base64.b64encode(b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n%%EOF\n").decode()
PDF_URL = f"data:application/pdf;base64,{PDF}"


@pytest.fixture
def oai(gateway: Gateway) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gateway.url + "/v1", api_key="k", max_retries=0, timeout=20) as c:
        yield c


def test_anthropic_documents_reach_an_openai_upstream_as_file_parts(
    client: anthropic.Anthropic, fake_openai: FakeUpstream
) -> None:
    fake_openai.reply(JSONReply(completion("A catalog.")))
    message = client.messages.create(
        model="openai:gpt-test",
        max_tokens=100,
        messages=[
            {
                "role": "user",
                "content": [
                    {
                        "type": "document",
                        "source": {"type": "base64", "media_type": "application/pdf", "data": PDF},
                        "title": "catalog.pdf",
                    },
                    {
                        "type": "document",
                        "source": {"type": "url", "url": "https://example.com/docs/spec.pdf"},
                    },
                    {
                        "type": "document",
                        "source": {"type": "text", "media_type": "text/plain", "data": "Notes."},
                        "title": "notes",
                    },
                    {"type": "text", "text": "Summarise these."},
                ],
            }
        ],
    )
    assert message.content[0].text == "A catalog."  # type: ignore[union-attr]
    (user,) = fake_openai.last.json["messages"]
    assert user["content"] == [
        {"type": "file", "file": {"file_data": PDF_URL, "filename": "catalog.pdf"}},
        {
            "type": "file",
            "file": {"file_data": "https://example.com/docs/spec.pdf", "filename": "spec.pdf"},
        },
        {"type": "text", "text": "notes\n\nNotes."},
        {"type": "text", "text": "Summarise these."},
    ]


def test_a_document_by_file_id_is_a_400_naming_the_block(
    client: anthropic.Anthropic, fake_openai: FakeUpstream
) -> None:
    with pytest.raises(anthropic.BadRequestError) as raised:
        client.messages.create(
            model="openai:gpt-test",
            max_tokens=100,
            messages=[
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello"},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Read"},
                        {"type": "document", "source": {"type": "file", "file_id": "file_011"}},
                    ],
                },
            ],
        )
    assert raised.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert "messages.2.content.1.source: a document given by file_id" in str(raised.value)
    assert fake_openai.requests == []


def test_responses_input_file_reaches_an_openai_upstream_as_a_file_part(
    oai: openai.OpenAI, fake_openai: FakeUpstream
) -> None:
    fake_openai.reply(JSONReply(completion("A catalog.")))
    response = oai.responses.create(
        model="plain:gpt-test",
        input=[
            {
                "role": "user",
                "content": [
                    {"type": "input_file", "file_data": PDF_URL, "filename": "catalog.pdf"},
                    {"type": "input_text", "text": "Summarise."},
                ],
            }
        ],
    )
    assert response.output_text == "A catalog."
    (user,) = fake_openai.last.json["messages"]
    assert user["content"][0] == {
        "type": "file",
        "file": {"file_data": PDF_URL, "filename": "catalog.pdf"},
    }


def test_openai_file_parts_reach_an_anthropic_upstream_as_documents(
    oai: openai.OpenAI, fake_anthropic: FakeUpstream
) -> None:
    fake_anthropic.reply(JSONReply(anthropic_message("A catalog.")))
    notes = base64.b64encode(b"line 1\nline 2\n").decode()
    completion_ = oai.chat.completions.create(
        model="ant:claude-x",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "file", "file": {"file_data": PDF_URL, "filename": "catalog.pdf"}},
                    {
                        "type": "file",
                        "file": {
                            "file_data": f"data:text/plain;base64,{notes}",
                            "filename": "n.txt",
                        },
                    },
                    {"type": "text", "text": "Summarise."},
                ],
            }
        ],
    )
    assert completion_.choices[0].message.content == "A catalog."
    (user,) = fake_anthropic.last.json["messages"]
    assert user["content"] == [
        {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": PDF},
            "title": "catalog.pdf",
        },
        {
            "type": "document",
            "source": {"type": "text", "media_type": "text/plain", "data": "line 1\nline 2\n"},
            "title": "n.txt",
        },
        {"type": "text", "text": "Summarise."},
    ]


@pytest.mark.parametrize(
    ("file", "named"),
    [
        ({"file_id": "file-abc"}, "messages.0.content.0.file.file_id"),
        (
            {"file_data": "data:application/msword;base64,0M8R4KGxGuE=", "filename": "plan.doc"},
            "document 'plan.doc' (application/msword)",
        ),
    ],
)
def test_a_file_an_anthropic_upstream_cannot_take_is_a_400_naming_it(
    oai: openai.OpenAI, fake_anthropic: FakeUpstream, file: dict[str, str], named: str
) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        oai.chat.completions.create(
            model="ant:claude-x",
            messages=[{"role": "user", "content": [{"type": "file", "file": file}]}],  # type: ignore[list-item, misc]
        )
    assert named in str(raised.value)
    assert raised.value.body["type"] == "invalid_request_error"  # type: ignore[index]
    assert fake_anthropic.requests == []
