"""Retries and fallbacks reach the gRPC door (Gateway.complete runs _serve's rules)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import upstream_env
from tests.integration.test_key_benches import Upstream, openai_refusal
from tests.integration.test_key_pools import keys_tried
from tests.support.fakes import FakeUpstream, JSONReply, SSEReply, anthropic_stream, completion
from tests.support.grpc_server import bearer, execute_request, run_grpc
from vdm.grpc import llm_proxy_pb2 as pb


def test_retries_and_fallbacks_serve_grpc_calls(
    fake_openai: FakeUpstream, fake_anthropic: FakeUpstream, tmp_path: Path
) -> None:
    env = {
        **upstream_env(fake_openai, fake_anthropic),
        "MAX_RETRIES": "1",
        "RETRY_BACKOFF": "0.01",
        "VDM_FALLBACKS": "openai:gpt-4o=ant:claude-x",
    }
    overloaded = JSONReply({"error": {"message": "busy", "type": "x"}}, status=503)
    with run_grpc(env, tmp_path) as server, server.stub() as stub:
        token = server.token()
        # one 503, retried on the same provider
        fake_openai.reply(overloaded, JSONReply(completion("second try")))
        retried = stub.Execute(
            execute_request("hi", model="openai:gpt-4o-mini"), metadata=bearer(token), timeout=10
        )
        assert retried.success.response_text == "second try"
        assert retried.success.metrics.retry_count == 1
        # two 503s: retries exhausted, the configured fallback (another wire format) serves
        fake_openai.reply(overloaded, overloaded)
        fake_anthropic.reply(SSEReply(anthropic_stream(["from ", "the fallback"])))
        chunks = list(
            stub.StreamExecute(
                execute_request("hi", model="openai:gpt-4o"), metadata=bearer(token), timeout=10
            )
        )
        assert "".join(c.text_chunk for c in chunks) == "from the fallback"
        assert chunks[-2].complete.actual_model_used == "ant:claude-x"
        assert chunks[-1].final_metrics.retry_count == 2
        assert fake_anthropic.last.json["model"] == "claude-x"


def test_key_benches_on_the_grpc_door_never_shut_the_provider(
    fake_openai: FakeUpstream, tmp_path: Path
) -> None:
    """At the default cooldown settings: a 429 without retry-after on the only
    key does not hold the next call; a bad only key is the upstream's 401 on
    every call; retry-after on every key is RATE_LIMITED without asking."""
    upstream = Upstream(fake_openai)
    upstream.once("sk-solo", openai_refusal(429, "Too many requests"))
    upstream.always("sk-bad", openai_refusal(401, "Incorrect API key", "invalid_api_key"))
    upstream.always("sk-waiting", openai_refusal(429, "quota", headers={"retry-after": "30"}))
    env = {
        "SOLO_API_KEY": "sk-solo",
        "SOLO_BASE_URL": fake_openai.url + "/v1",
        "BAD_API_KEY": "sk-bad",
        "BAD_BASE_URL": fake_openai.url + "/v1",
        "WAITING_API_KEY": "sk-waiting",
        "WAITING_BASE_URL": fake_openai.url + "/v1",
        "VDM_DEFAULT_PROVIDER": "solo",
        "MAX_RETRIES": "0",
    }
    with run_grpc(env, tmp_path) as server, server.stub() as stub:
        token = server.token()

        def execute(model: str) -> pb.ExecuteResponse:
            request = execute_request("hi", model=model)
            return stub.Execute(request, metadata=bearer(token), timeout=10)

        limited = execute("solo:m")
        assert limited.error.error_code == "RATE_LIMITED"
        assert json.loads(limited.error.error_details)["retry_after_seconds"] == 1
        assert execute("solo:m").success.response_text == "served by sk-solo"
        for _ in range(2):
            refused = execute("bad:m")
            assert refused.error.error_code == "UPSTREAM_ERROR"
            assert json.loads(refused.error.error_details)["upstream_status"] == 401
            assert "Incorrect API key" in refused.error.error_message
        assert keys_tried(fake_openai) == ["sk-solo", "sk-solo", "sk-bad", "sk-bad"]
        fake_openai.requests.clear()
        for _ in range(2):
            waiting = execute("waiting:m")
            assert waiting.error.error_code == "RATE_LIMITED"
            assert 28 <= json.loads(waiting.error.error_details)["retry_after_seconds"] <= 30
        assert keys_tried(fake_openai) == ["sk-waiting"]  # the second was the gateway's
