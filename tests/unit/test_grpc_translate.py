"""LLMProxy messages <-> IR and error codes (vdm.grpc.translate)."""

from __future__ import annotations

import json

import pytest

from vdm import ir
from vdm.errors import (
    AuthenticationFailed,
    GatewayError,
    InvalidRequest,
    PayloadTooLarge,
    RateLimited,
    UnknownModel,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from vdm.grpc import llm_proxy_pb2 as pb
from vdm.grpc import translate


def build(
    message: pb.ExecuteRequest, default: str | None = "fast", limit: int = 100, stream: bool = False
) -> ir.ChatRequest:
    return translate.to_chat_request(
        message, default_model=default, max_input_length=limit, stream=stream
    )


def test_fragments_become_system_and_one_user_message() -> None:
    request = build(
        pb.ExecuteRequest(
            system_fragments=["a", "", "b"], user_fragments=["c", "d"], model_name="m"
        ),
        stream=True,
    )
    assert request.model == "m" and request.stream
    assert request.system == [ir.TextPart("a"), ir.TextPart("b")]
    assert request.messages == [ir.Message("user", [ir.TextPart("c"), ir.TextPart("d")])]
    assert request.tools == [] and request.tool_choice is None


def test_the_default_model_applies_when_none_is_named() -> None:
    assert build(pb.ExecuteRequest(user_fragments=["x"])).model == "fast"
    assert build(pb.ExecuteRequest(user_fragments=["x"], model_name="  ")).model == "fast"
    with pytest.raises(InvalidRequest, match="GRPC_DEFAULT_MODEL"):
        build(pb.ExecuteRequest(user_fragments=["x"]), default=None)


def test_input_length_counts_every_fragment() -> None:
    build(pb.ExecuteRequest(system_fragments=["x" * 50], user_fragments=["y" * 50]))
    with pytest.raises(InvalidRequest, match="101 characters"):
        build(pb.ExecuteRequest(system_fragments=["x" * 50], user_fragments=["y" * 51]))


def test_a_schema_becomes_one_forced_tool() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    request = build(
        pb.ExecuteRequest(user_fragments=["x"], response_model_schema=json.dumps(schema))
    )
    assert [(t.name, t.input_schema) for t in request.tools] == [("respond", schema)]
    assert request.tool_choice == ir.ToolChoice("tool", "respond")
    # a schema with properties and no type is an object schema too
    assert translate.parse_schema('{"properties": {}}') == {"properties": {}}


@pytest.mark.parametrize("text", ["[", "[1]", '{"type": "array"}', "{}"])
def test_bad_schemas_are_invalid_requests(text: str) -> None:
    with pytest.raises(InvalidRequest, match="response_model_schema"):
        translate.parse_schema(text)


def test_answer_text() -> None:
    tool = ir.ToolUsePart("t", "respond", {"a": 1})
    text = ir.TextPart("hello")
    response = ir.ChatResponse("id", "m", [text, tool], "tool_use", ir.Usage())
    assert translate.answer_text(response, structured=True) == '{"a":1}'
    assert translate.answer_text(response, structured=False) == "hello"
    raw = ir.ToolUsePart("t", "respond", {"_raw_arguments": "{bad"})
    assert (
        translate.answer_text(ir.ChatResponse("id", "m", [raw], None, ir.Usage()), structured=True)
        == "{bad"
    )
    only_text = ir.ChatResponse("id", "m", [text], "end_turn", ir.Usage())
    assert translate.answer_text(only_text, structured=True) == "hello"


def status(code: int) -> UpstreamStatusError:
    return UpstreamStatusError("no", provider="p", upstream_status=code)


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (UnknownModel("x"), "MODEL_NOT_FOUND"),
        (status(404), "MODEL_NOT_FOUND"),
        (InvalidRequest("x"), "INVALID_REQUEST"),
        (PayloadTooLarge("x"), "INVALID_REQUEST"),
        (status(400), "INVALID_REQUEST"),
        (status(422), "INVALID_REQUEST"),
        (RateLimited("x", provider="p", retry_after=3), "RATE_LIMITED"),
        (status(429), "RATE_LIMITED"),
        (UpstreamTimeout("x", provider="p"), "TIMEOUT"),
        (status(408), "TIMEOUT"),
        (status(500), "UPSTREAM_ERROR"),
        (status(529), "UPSTREAM_ERROR"),
        (status(401), "UPSTREAM_ERROR"),
        (UpstreamUnreachable("x", provider="p"), "UPSTREAM_ERROR"),
        (UpstreamProtocolError("x", provider="p"), "UPSTREAM_ERROR"),
        (AuthenticationFailed("x"), "UPSTREAM_ERROR"),
        (GatewayError("x"), "UPSTREAM_ERROR"),
    ],
)
def test_error_codes(error: GatewayError, code: str) -> None:
    assert translate.error_code(error) == code


def test_error_details_name_provider_status_and_retry() -> None:
    error = translate.to_error(RateLimited("slow down", provider="p", retry_after=2.2))
    assert error.error_message == "slow down"
    assert json.loads(error.error_details) == {"provider": "p", "retry_after_seconds": 3}
    assert json.loads(translate.to_error(status(503)).error_details) == {
        "provider": "p",
        "upstream_status": 503,
    }
    assert not translate.to_error(InvalidRequest("x")).HasField("error_details")


def test_metrics() -> None:
    out = translate.metrics(ir.Usage(3, 4), started=0.0, attempts=3)
    assert (out.input_tokens, out.output_tokens, out.total_tokens, out.retry_count) == (3, 4, 7, 2)
    bare = translate.metrics(None, started=0.0, attempts=1)
    assert not bare.HasField("input_tokens") and bare.retry_count == 0
