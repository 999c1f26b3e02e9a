"""The LLMProxy RPCs through the real ``vdm grpc serve`` process to fake upstreams.

The client is built from our .proto; the server runs with JWT auth on
(tests/integration/conftest.py), default model ``fast`` (an alias of
``openai``), a 3 s request timeout and a 5,000-character input limit.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support.fakes import (
    FakeUpstream,
    Hang,
    JSONReply,
    SSEReply,
    anthropic_message,
    anthropic_stream,
    completion,
    stream_of,
    tool_call,
)
from tests.support.grpc_server import GrpcServer, bearer, execute_request
from vdm import __version__
from vdm.grpc import llm_proxy_pb2 as pb

SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "integer"}, "why": {"type": "string"}},
    "required": ["answer", "why"],
    "title": "Answer",
}


def execute(server: GrpcServer, token: str, request: pb.ExecuteRequest) -> pb.ExecuteResponse:
    with server.stub() as stub:
        return stub.Execute(request, metadata=bearer(token), timeout=15)


def stream(server: GrpcServer, token: str, request: pb.ExecuteRequest) -> list[pb.StreamChunk]:
    with server.stub() as stub:
        return list(stub.StreamExecute(request, metadata=bearer(token), timeout=15))


def kinds(chunks: list[pb.StreamChunk]) -> list[str]:
    return [str(c.WhichOneof("chunk_type")) for c in chunks]


# ---------------------------------------------------------------- GetServerInfo


def test_server_info_tells_models_aliases_default_and_limits(
    grpc_server: GrpcServer,
    grpc_token: str,
    fake_openai: FakeUpstream,
    fake_anthropic: FakeUpstream,
) -> None:
    fake_openai.responder = lambda r: JSONReply(
        {"object": "list", "data": [{"id": "gpt-4o", "object": "model"}]}
    )
    fake_anthropic.responder = lambda r: JSONReply(
        {
            "data": [{"id": "claude-x", "display_name": "Claude X", "type": "model"}],
            "has_more": False,
        }
    )
    with grpc_server.stub() as stub:
        info = stub.GetServerInfo(
            pb.GetServerInfoRequest(), metadata=bearer(grpc_token), timeout=15
        )
    assert info.server_name == "vdm-llm-proxy"
    assert info.server_version == __version__
    assert info.default_model == "fast"
    models = {m.model_id: m for m in info.available_models}
    assert models["openai:gpt-4o"].provider == "openai"
    assert models["ant:claude-x"].provider == "ant"
    assert models["ant:claude-x"].display_name == "Claude X"
    assert models["echo:echo"].provider == "echo"
    assert all(m.supports_streaming for m in info.available_models)
    # aliases as they route: user aliases bare and prefixed, package fallbacks of the default
    assert info.model_aliases["fast"] == "openai:gpt-fast"
    assert info.model_aliases["openai:fast"] == "openai:gpt-fast"
    assert info.model_aliases["claude"] == "ant:claude-x"
    assert info.model_aliases["sonnet"] == "openai:gpt-4o"
    assert "sonnet" in models["openai:gpt-4o"].aliases
    assert "claude" in models["ant:claude-x"].aliases
    limits = info.limits
    assert limits.max_input_length == 5000
    assert limits.request_timeout_seconds == 3
    # no RPM or concurrency limit configured here: not claimed
    assert not limits.HasField("max_requests_per_minute")
    assert not limits.HasField("max_concurrent_requests")


# ---------------------------------------------------------------- Execute


def test_execute_sends_fragments_as_system_and_one_user_message(
    grpc_server: GrpcServer,
    grpc_token: str,
    fake_openai: FakeUpstream,
) -> None:
    fake_openai.reply(JSONReply(completion("Pods are the smallest unit.")))
    response = execute(
        grpc_server,
        grpc_token,
        execute_request(
            "explain pods",
            "briefly",
            model="openai:gpt-4o-mini",
            system=["You are a Kubernetes expert.", "Be terse."],
            request_id="req-42",
        ),
    )
    assert response.request_id == "req-42"
    assert response.WhichOneof("result") == "success"
    success = response.success
    assert success.response_text == "Pods are the smallest unit."
    assert success.actual_model_used == "openai:gpt-4o-mini"
    metrics = success.metrics
    assert (metrics.input_tokens, metrics.output_tokens, metrics.total_tokens) == (25, 20, 45)
    assert metrics.retry_count == 0 and metrics.timestamp > 1_600_000_000
    body = fake_openai.last.json
    assert fake_openai.last.path == "/v1/chat/completions"
    assert body["model"] == "gpt-4o-mini" and body.get("stream") is not True
    assert body["messages"][0]["role"] == "system"
    system = body["messages"][0]["content"]
    system_text = system if isinstance(system, str) else "".join(p["text"] for p in system)
    assert "You are a Kubernetes expert." in system_text and "Be terse." in system_text
    users = [m for m in body["messages"] if m["role"] == "user"]
    assert len(users) == 1
    content = users[0]["content"]
    texts = [content] if isinstance(content, str) else [p["text"] for p in content]
    assert "\n\n".join(texts) == "explain pods\n\nbriefly"  # (the adapter joins text blocks)


def test_model_names_resolve_through_aliases_and_the_default(
    grpc_server: GrpcServer,
    grpc_token: str,
    fake_openai: FakeUpstream,
    fake_anthropic: FakeUpstream,
) -> None:
    fake_openai.reply(JSONReply(completion("a")), JSONReply(completion("b")))
    fake_anthropic.reply(JSONReply(anthropic_message("c")))
    by_alias = execute(grpc_server, grpc_token, execute_request("hi", model="fast"))
    assert by_alias.success.actual_model_used == "openai:gpt-fast"
    assert fake_openai.requests[-1].json["model"] == "gpt-fast"
    default = execute(grpc_server, grpc_token, execute_request("hi"))  # no model_name
    assert default.success.actual_model_used == "openai:gpt-fast"
    native = execute(grpc_server, grpc_token, execute_request("hi", model="claude"))
    assert native.success.actual_model_used == "ant:claude-x"
    assert native.success.response_text == "c"
    assert fake_anthropic.last.path == "/v1/messages"
    assert fake_anthropic.last.json["model"] == "claude-x"
    assert fake_anthropic.last.json["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "hi"}]}
    ]


def test_execute_with_a_schema_forces_the_answer_tool_and_returns_its_json(
    grpc_server: GrpcServer,
    grpc_token: str,
    fake_openai: FakeUpstream,
) -> None:
    fake_openai.reply(
        JSONReply(
            completion(
                None,
                finish="tool_calls",
                tool_calls=[tool_call("call_1", "respond", '{"answer": 42, "why": "it is"}')],
            )
        )
    )
    response = execute(
        grpc_server,
        grpc_token,
        execute_request("what is the answer?", model="openai:gpt-4o", schema=json.dumps(SCHEMA)),
    )
    assert json.loads(response.success.response_text) == {"answer": 42, "why": "it is"}
    body = fake_openai.last.json
    assert body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "respond",
                "description": body["tools"][0]["function"]["description"],
                "parameters": SCHEMA,
            },
        }
    ]
    assert body["tool_choice"] == {"type": "function", "function": {"name": "respond"}}


# ---------------------------------------------------------------- StreamExecute


def test_stream_is_text_chunks_then_complete_then_final_metrics(
    grpc_server: GrpcServer,
    grpc_token: str,
    fake_openai: FakeUpstream,
) -> None:
    fake_openai.reply(SSEReply(stream_of(completion("Hello streaming world"), pieces=3)))
    chunks = stream(
        grpc_server, grpc_token, execute_request("hi", model="openai:gpt-4o", request_id="s-1")
    )
    assert kinds(chunks) == ["text_chunk"] * 3 + ["complete", "final_metrics"]
    assert [c.text_chunk for c in chunks[:3]] == ["Hello s", "treamin", "g world"]
    assert chunks[3].complete.actual_model_used == "openai:gpt-4o"
    metrics = chunks[4].final_metrics
    assert (metrics.input_tokens, metrics.output_tokens, metrics.total_tokens) == (25, 20, 45)
    assert metrics.cost_usd == pytest.approx((25 * 2.5 + 20 * 10) / 1e6)  # gpt-4o's prices
    assert {c.request_id for c in chunks} == {"s-1"}
    body = fake_openai.last.json
    assert body["stream"] is True  # real streaming from the provider


def test_stream_from_an_anthropic_native_provider(
    grpc_server: GrpcServer,
    grpc_token: str,
    fake_anthropic: FakeUpstream,
) -> None:
    fake_anthropic.reply(SSEReply(anthropic_stream(["Hel", "lo ", "there"])))
    chunks = stream(grpc_server, grpc_token, execute_request("hi", model="ant:claude-x"))
    assert kinds(chunks) == ["text_chunk"] * 3 + ["complete", "final_metrics"]
    assert "".join(c.text_chunk for c in chunks[:3]) == "Hello there"
    assert chunks[3].complete.actual_model_used == "ant:claude-x"
    assert chunks[4].final_metrics.input_tokens == 25
    assert chunks[4].final_metrics.output_tokens == 20
    assert not chunks[4].final_metrics.HasField("cost_usd")  # (claude-x has no price)
    assert fake_anthropic.last.json["stream"] is True


def _anthropic_tool_stream(pieces: list[str]) -> list[bytes]:
    def ev(name: str, data: dict[str, Any]) -> bytes:
        return f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()

    out = [
        ev(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_1",
                    "type": "message",
                    "role": "assistant",
                    "model": "claude-x",
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": 30, "output_tokens": 1},
                },
            },
        ),
        ev(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {
                    "type": "tool_use",
                    "id": "toolu_1",
                    "name": "respond",
                    "input": {},
                },
            },
        ),
    ]
    out += [
        ev(
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": p},
            },
        )
        for p in pieces
    ]
    out += [
        ev("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ev(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": "tool_use"},
                "usage": {"output_tokens": 12},
            },
        ),
        ev("message_stop", {"type": "message_stop"}),
    ]
    return out


def test_stream_with_a_schema_on_an_anthropic_provider_streams_the_json(
    grpc_server: GrpcServer,
    grpc_token: str,
    fake_anthropic: FakeUpstream,
) -> None:
    pieces = ['{"answer"', ': 7, "why": ', '"lucky"}']
    fake_anthropic.reply(SSEReply(_anthropic_tool_stream(pieces)))
    chunks = stream(
        grpc_server,
        grpc_token,
        execute_request("pick a number", model="claude", schema=json.dumps(SCHEMA)),
    )
    assert kinds(chunks)[-2:] == ["complete", "final_metrics"]
    text = [c.text_chunk for c in chunks if c.WhichOneof("chunk_type") == "text_chunk"]
    assert json.loads("".join(text)) == {"answer": 7, "why": "lucky"}
    assert len(text) == 3  # as the provider streamed it
    body = fake_anthropic.last.json
    assert body["tools"][0]["name"] == "respond"
    assert body["tools"][0]["input_schema"] == SCHEMA
    assert body["tool_choice"]["type"] == "tool" and body["tool_choice"]["name"] == "respond"


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (404, "MODEL_NOT_FOUND"),
        (429, "RATE_LIMITED"),
        (400, "INVALID_REQUEST"),
        (500, "UPSTREAM_ERROR"),
        (401, "UPSTREAM_ERROR"),
    ],
)
def test_upstream_errors_are_mapped_to_error_codes(
    grpc_server: GrpcServer,
    grpc_token: str,
    fake_openai: FakeUpstream,
    status: int,
    code: str,
) -> None:
    upstream = JSONReply({"error": {"message": "upstream says no", "type": "x"}}, status=status)
    fake_openai.reply(upstream, upstream)
    response = execute(grpc_server, grpc_token, execute_request("hi", model="openai:gpt-4o"))
    assert response.WhichOneof("result") == "error"
    assert response.error.error_code == code
    assert json.loads(response.error.error_details)["upstream_status"] == status
    chunks = stream(grpc_server, grpc_token, execute_request("hi", model="openai:gpt-4o"))
    assert kinds(chunks) == ["error"]
    assert chunks[0].error.error_code == code
    assert "sk-test-openai" not in response.error.error_message + response.error.error_details


def test_a_provider_prefix_with_no_model_is_model_not_found(
    grpc_server: GrpcServer, grpc_token: str
) -> None:
    response = execute(grpc_server, grpc_token, execute_request("hi", model="openai:"))
    assert response.error.error_code == "MODEL_NOT_FOUND"
    assert "no model name after 'openai:'" in response.error.error_message


def test_an_upstream_that_never_answers_is_a_timeout(
    grpc_server: GrpcServer,
    grpc_token: str,
    fake_openai: FakeUpstream,
) -> None:
    fake_openai.reply(Hang(10), Hang(10))
    response = execute(grpc_server, grpc_token, execute_request("hi", model="openai:gpt-4o"))
    assert response.error.error_code == "TIMEOUT"
    assert "3 s" in response.error.error_message
    chunks = stream(grpc_server, grpc_token, execute_request("hi", model="openai:gpt-4o"))
    assert kinds(chunks) == ["error"] and chunks[0].error.error_code == "TIMEOUT"


def test_a_stream_the_upstream_breaks_ends_with_an_error_chunk(
    grpc_server: GrpcServer,
    grpc_token: str,
    fake_openai: FakeUpstream,
) -> None:
    full = stream_of(completion("Hello streaming world"), pieces=3)
    fake_openai.reply(SSEReply([*full[:3], b"data: {not json\n\n"]))
    chunks = stream(grpc_server, grpc_token, execute_request("hi", model="openai:gpt-4o"))
    assert kinds(chunks)[0] == "text_chunk"
    assert kinds(chunks)[-1] == "error"
    assert chunks[-1].error.error_code == "UPSTREAM_ERROR"


@pytest.mark.parametrize(
    ("request_", "fragment"),
    [
        (execute_request(model="echo:echo"), "user_fragments"),
        (execute_request("", model="echo:echo"), "user_fragments"),
        (execute_request("x" * 5001, model="echo:echo"), "5000"),
        (execute_request("hi", model="echo:echo", schema="{not json"), "not valid JSON"),
        (execute_request("hi", model="echo:echo", schema='{"type": "string"}'), "object"),
    ],
)
def test_invalid_requests_are_invalid_request(
    grpc_server: GrpcServer,
    grpc_token: str,
    request_: pb.ExecuteRequest,
    fragment: str,
) -> None:
    response = execute(grpc_server, grpc_token, request_)
    assert response.error.error_code == "INVALID_REQUEST"
    assert fragment in response.error.error_message
    chunks = stream(grpc_server, grpc_token, request_)
    assert kinds(chunks) == ["error"] and chunks[0].error.error_code == "INVALID_REQUEST"
