"""Retries and fallbacks reach the gRPC door (Gateway.complete runs _serve's rules)."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import upstream_env
from tests.support.fakes import FakeUpstream, JSONReply, SSEReply, anthropic_stream, completion
from tests.support.grpc_server import bearer, execute_request, run_grpc


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
