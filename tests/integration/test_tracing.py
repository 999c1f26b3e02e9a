"""OpenTelemetry traces, as a collector receives them (issue 25 §3).

The gateway exports to an OTLP/HTTP receiver this test starts on loopback
(:mod:`tests.support.otlp`), every 50 ms (``OTEL_BSP_SCHEDULE_DELAY``); the
tests wait on the receiver's spans, decoded from the protobuf.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from tests.conftest import upstream_env
from tests.support.fakes import (
    FakeUpstream,
    JSONReply,
    SSEReply,
    anthropic_message,
    anthropic_stream,
    completion,
    error_reply,
    stream_of,
)
from tests.support.gateway import Gateway, run_gateway
from tests.support.grpc_server import bearer, execute_request, run_grpc
from tests.support.otlp import Receiver, Span, otlp_receiver, traceparent

CLIENT_KEY = "client-key-for-tracing"


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    with otlp_receiver() as r:
        yield r


def tracing_env(receiver: Receiver, **more: str) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_BSP_SCHEDULE_DELAY": "50",
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test",
        **more,
    }


@pytest.fixture(scope="module")
def traced(
    receiver: Receiver,
    fake_openai: FakeUpstream,
    fake_anthropic: FakeUpstream,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway]:
    env = {
        **upstream_env(fake_openai, fake_anthropic),
        **tracing_env(receiver),
        "VDM_FALLBACKS": "openai:gpt-failing=plain:gpt-4o",
    }
    with run_gateway(env, tmp_path_factory.mktemp("traced")) as gw:
        yield gw


def new_parent() -> tuple[str, str]:
    return secrets.token_hex(16), secrets.token_hex(8)


def request_span(spans: list[Span]) -> Span:
    (span,) = [s for s in spans if s.kind == "server"]
    return span


def upstream_parent(recorded_traceparent: str) -> tuple[str, str]:
    """(trace id, span id) of the traceparent an upstream received."""
    version, trace_id, span_id, flags = recorded_traceparent.split("-")
    assert version == "00" and int(flags, 16) & 1  # sampled
    return trace_id, span_id


def check_request(span: Span, parent: tuple[str, str], door: str, model: str) -> None:
    assert span.name == f"chat {model}"
    assert span.parent_id == parent[1]
    attrs = span.attributes
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.request.model"] == model
    assert attrs["vdm.door"] == door
    assert not span.error and "error.type" not in attrs
    assert "vdm.first_byte" in span.events
    assert span.resource["service.name"] == "vdm"
    assert span.resource["deployment.environment"] == "test"
    # never a prompt or a completion unless the operator opts in
    assert "gen_ai.input.messages" not in attrs and "gen_ai.output.messages" not in attrs


def check_attempt(attempt: Span, request: Span, fake: FakeUpstream, provider: str) -> None:
    assert attempt.kind == "client" and attempt.parent_id == request.span_id
    assert attempt.attributes["gen_ai.provider.name"] == provider
    assert "vdm.first_byte" in attempt.events
    # the upstream's request names the attempt's span, in the client's trace
    assert upstream_parent(fake.last.headers["traceparent"]) == (
        request.trace_id,
        attempt.span_id,
    )


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_an_anthropic_request_is_a_span_in_the_clients_trace_with_its_attempt(
    traced: Gateway, receiver: Receiver, fake_anthropic: FakeUpstream, stream: bool
) -> None:
    parent = new_parent()
    if stream:
        fake_anthropic.reply(SSEReply(anthropic_stream(["Hel", "lo"], model="claude-x")))
    else:
        fake_anthropic.reply(JSONReply(anthropic_message("Hello", model="claude-x")))
    with anthropic.Anthropic(base_url=traced.url, api_key=CLIENT_KEY, max_retries=0) as client:
        create: Any = client.messages.create
        answer = create(
            model="ant:claude",
            max_tokens=64,
            messages=[{"role": "user", "content": "a secret prompt"}],
            stream=stream,
            extra_headers={"traceparent": traceparent(*parent)},
        )
        if stream:
            assert (
                "".join(e.delta.text for e in answer if e.type == "content_block_delta") == "Hello"
            )
    spans = receiver.trace(parent[0], 2)
    request = request_span(spans)
    check_request(request, parent, "anthropic", "ant:claude")
    attrs = request.attributes
    assert attrs["gen_ai.provider.name"] == "ant"
    assert attrs["gen_ai.response.model"] == "claude-x"
    assert attrs["vdm.route"] == "ant:claude-x"
    assert attrs["gen_ai.usage.output_tokens"] > 0
    assert attrs["gen_ai.response.finish_reasons"] == ("end_turn",)
    assert attrs["vdm.stream"] is stream
    assert attrs["http.response.status_code"] == 200
    assert (attrs["vdm.attempts"], attrs["vdm.retries"], attrs["vdm.fallbacks"]) == (1, 0, 0)
    key_hash = attrs["vdm.client.key_hash"]
    assert len(key_hash) == 16 and key_hash not in CLIENT_KEY
    assert all(CLIENT_KEY not in str(v) for s in spans for v in s.attributes.values())
    (attempt,) = receiver.children(request)
    check_attempt(attempt, request, fake_anthropic, "ant")
    assert attempt.attributes["gen_ai.request.model"] == "claude-x"
    assert attempt.end <= request.end
    assert "vdm.cost_usd" not in request.attributes  # claude-x has no price: none, not 0


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_an_openai_chat_request_is_a_span_with_its_usage(
    traced: Gateway, receiver: Receiver, fake_openai: FakeUpstream, stream: bool
) -> None:
    parent = new_parent()
    body = completion(
        "Hi there",
        model="gpt-4o-mini",
        usage={"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
    )
    fake_openai.reply(SSEReply(stream_of(body)) if stream else JSONReply(body))
    with openai.OpenAI(base_url=traced.url + "/v1", api_key=CLIENT_KEY, max_retries=0) as client:
        kwargs: dict[str, Any] = {"stream_options": {"include_usage": True}} if stream else {}
        answer: Any = client.chat.completions.create(
            model="openai:gpt-4o-mini",
            messages=[{"role": "user", "content": "hi"}],
            stream=stream,
            extra_headers={"traceparent": traceparent(*parent)},
            **kwargs,
        )
        if stream:
            assert (
                "".join(c.choices[0].delta.content or "" for c in answer if c.choices) == "Hi there"
            )
    spans = receiver.trace(parent[0], 2)
    request = request_span(spans)
    check_request(request, parent, "openai", "openai:gpt-4o-mini")
    attrs = request.attributes
    assert attrs["gen_ai.provider.name"] == "openai"
    assert (attrs["gen_ai.usage.input_tokens"], attrs["gen_ai.usage.output_tokens"]) == (11, 7)
    assert attrs["gen_ai.response.finish_reasons"] == ("stop",)  # (relayed: the upstream's word)
    # gpt-4o-mini's price list: $0.15 and $0.60 per million input and output tokens
    assert attrs["vdm.cost_usd"] == pytest.approx((11 * 0.15 + 7 * 0.60) / 1e6)
    (attempt,) = receiver.children(request)
    check_attempt(attempt, request, fake_openai, "openai")


def test_a_failed_over_request_shows_both_attempts_the_first_failed(
    traced: Gateway, receiver: Receiver, fake_openai: FakeUpstream
) -> None:
    parent = new_parent()
    fake_openai.reply(error_reply(500, "primary broke"), JSONReply(completion("from the fallback")))
    with openai.OpenAI(base_url=traced.url + "/v1", api_key=CLIENT_KEY, max_retries=0) as client:
        answer = client.chat.completions.create(
            model="openai:gpt-failing",
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"traceparent": traceparent(*parent)},
        )
    assert answer.choices[0].message.content == "from the fallback"
    spans = receiver.trace(parent[0], 3)
    request = request_span(spans)
    attrs = request.attributes
    assert not request.error
    assert attrs["gen_ai.provider.name"] == "plain"
    assert (attrs["vdm.attempts"], attrs["vdm.retries"], attrs["vdm.fallbacks"]) == (2, 0, 1)
    first, second = receiver.children(request)
    assert first.attributes["vdm.route"] == "openai:gpt-failing"
    assert first.error and first.attributes["error.type"] == "api_error"
    assert first.attributes["http.response.status_code"] == 500
    assert "vdm.first_byte" not in first.events
    assert second.attributes["vdm.route"] == "plain:gpt-4o"
    assert not second.error and "vdm.first_byte" in second.events
    assert first.end <= second.start
    # each upstream request named its own attempt
    sent = [upstream_parent(r.headers["traceparent"]) for r in fake_openai.requests]
    assert sent == [(request.trace_id, first.span_id), (request.trace_id, second.span_id)]


def test_a_refused_request_is_an_error_span(
    traced: Gateway, receiver: Receiver, fake_anthropic: FakeUpstream
) -> None:
    parent = new_parent()
    fake_anthropic.reply(error_reply(400, "bad request", style="anthropic"))
    with (
        anthropic.Anthropic(base_url=traced.url, api_key=CLIENT_KEY, max_retries=0) as client,
        pytest.raises(anthropic.BadRequestError),
    ):
        client.messages.create(
            model="ant:claude",
            max_tokens=64,
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"traceparent": traceparent(*parent)},
        )
    request = request_span(receiver.trace(parent[0], 2))
    assert request.error
    assert request.attributes["error.type"] == "invalid_request"
    assert request.attributes["http.response.status_code"] == 400
    (attempt,) = receiver.children(request)
    assert attempt.error and attempt.attributes["error.type"] == "invalid_request"


def test_without_a_traceparent_the_request_starts_a_trace(
    traced: Gateway, receiver: Receiver, fake_openai: FakeUpstream
) -> None:
    fake_openai.reply(JSONReply(completion("fresh")))
    with openai.OpenAI(base_url=traced.url + "/v1", api_key=CLIENT_KEY, max_retries=0) as client:
        client.chat.completions.create(
            model="openai:gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
    trace_id, attempt_id = upstream_parent(fake_openai.last.headers["traceparent"])
    request = request_span(receiver.trace(trace_id, 2))
    assert request.parent_id == ""
    assert [c.span_id for c in receiver.children(request)] == [attempt_id]


def test_grpc_calls_are_spans_in_the_trace_their_metadata_names(
    receiver: Receiver,
    fake_openai: FakeUpstream,
    fake_anthropic: FakeUpstream,
    tmp_path: Path,
) -> None:
    env = {**upstream_env(fake_openai, fake_anthropic), **tracing_env(receiver)}
    fake_openai.reply(
        JSONReply(completion("unary answer")), SSEReply(stream_of(completion("streamed answer")))
    )
    unary, streamed = new_parent(), new_parent()
    with run_grpc(env, tmp_path) as server, server.stub() as stub:
        token = server.token()
        reply = stub.Execute(
            execute_request("hi", model="openai:gpt-4o-mini"),
            metadata=[*bearer(token), ("traceparent", traceparent(*unary))],
            timeout=10,
        )
        assert reply.success.response_text == "unary answer"
        sent_unary = fake_openai.last.headers["traceparent"]
        chunks = list(
            stub.StreamExecute(
                execute_request("hi", model="openai:gpt-4o-mini"),
                metadata=[*bearer(token), ("traceparent", traceparent(*streamed))],
                timeout=10,
            )
        )
        assert "".join(c.text_chunk for c in chunks) == "streamed answer"
        sent_streamed = fake_openai.last.headers["traceparent"]
        for parent, sent in ((unary, sent_unary), (streamed, sent_streamed)):
            spans = receiver.trace(parent[0], 2)
            request = request_span(spans)
            check_request(request, parent, "grpc", "openai:gpt-4o-mini")
            assert request.attributes["gen_ai.usage.input_tokens"] == 25
            assert "vdm.client.key_hash" in request.attributes
            (attempt,) = receiver.children(request)
            assert upstream_parent(sent) == (parent[0], attempt.span_id)
        assert json.loads(fake_openai.last.body)["stream"] is True


def test_prompts_and_answers_are_recorded_only_when_the_operator_opts_in(
    receiver: Receiver,
    fake_openai: FakeUpstream,
    fake_anthropic: FakeUpstream,
    tmp_path: Path,
) -> None:
    env = {
        **upstream_env(fake_openai, fake_anthropic),
        **tracing_env(receiver, VDM_TRACE_CONTENT="true"),
    }
    fake_openai.reply(JSONReply(completion("the answer recorded")))
    parent = new_parent()
    with (
        run_gateway(env, tmp_path) as gw,
        openai.OpenAI(base_url=gw.url + "/v1", api_key=CLIENT_KEY, max_retries=0) as client,
    ):
        client.chat.completions.create(
            model="openai:gpt-4o-mini",
            messages=[{"role": "user", "content": "the prompt recorded"}],
            extra_headers={"traceparent": traceparent(*parent)},
        )
        attrs = request_span(receiver.trace(parent[0], 2)).attributes
    assert json.loads(attrs["gen_ai.input.messages"]) == [
        {"role": "user", "content": "the prompt recorded"}
    ]
    assert "the answer recorded" in attrs["gen_ai.output.messages"]


def test_a_dead_collector_costs_the_spans_not_the_requests(
    fake_openai: FakeUpstream, fake_anthropic: FakeUpstream, tmp_path: Path
) -> None:
    from tests.support.fakes import refused_url

    env = {
        **upstream_env(fake_openai, fake_anthropic),
        "OTEL_EXPORTER_OTLP_ENDPOINT": refused_url(),
        "OTEL_BSP_SCHEDULE_DELAY": "10",
        "OTEL_BSP_MAX_QUEUE_SIZE": "4",
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "2",
    }
    count = 12
    fake_openai.reply(*[JSONReply(completion(f"answer {i}")) for i in range(count)])
    with (
        run_gateway(env, tmp_path) as gw,
        openai.OpenAI(base_url=gw.url + "/v1", api_key=CLIENT_KEY, max_retries=0) as client,
    ):
        for i in range(count):
            answer = client.chat.completions.create(
                model="openai:gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
            )
            assert answer.choices[0].message.content == f"answer {i}"
        log = gw.wait_log("exporting")  # the SDK's first complaint, let through
    # a queue overflowing 8 times over and every batch failing: one line of each kind a minute
    lines = [line for line in log.splitlines() if "opentelemetry" in line or "export" in line]
    assert len(lines) <= 4, lines
