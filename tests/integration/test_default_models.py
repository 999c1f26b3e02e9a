"""Defaults that do not assume Anthropic's names: a zero-config gRPC start
serves a request without ``model_name``; a default provider that is not
Anthropic-native and maps no Claude family is warned of; ``vdm test
connection`` asks a model the provider lists."""

from __future__ import annotations

from pathlib import Path

from tests.integration.test_cli_ops import vdm
from tests.support.fakes import FakeUpstream, JSONReply, completion
from tests.support.gateway import run_gateway
from tests.support.grpc_server import bearer, execute_request, run_grpc
from vdm.grpc import llm_proxy_pb2 as pb


def test_grpc_without_model_on_a_zero_config_start(tmp_path: Path) -> None:
    with run_grpc({}, tmp_path) as server:
        token = server.token()
        with server.stub() as stub:
            answer = stub.Execute(
                execute_request("hello there"), metadata=bearer(token), timeout=15
            )
            info = stub.GetServerInfo(pb.GetServerInfoRequest(), metadata=bearer(token), timeout=15)
    assert answer.WhichOneof("result") == "success", answer
    assert answer.success.response_text == "hello there"
    assert answer.success.actual_model_used == info.default_model == "echo:echo"


def _mycorp(fake_openai: FakeUpstream) -> dict[str, str]:
    fake_openai.reset()
    models = {"object": "list", "data": [{"id": "mc-large", "object": "model"}]}
    fake_openai.responder = lambda r: (
        JSONReply(models) if r.path.endswith("/models") else JSONReply(completion("pong"))
    )
    return {
        "MYCORP_API_KEY": "k",
        "MYCORP_BASE_URL": fake_openai.url + "/v1",
        "VDM_DEFAULT_PROVIDER": "mycorp",
    }


def test_grpc_default_is_a_model_the_default_provider_lists(
    fake_openai: FakeUpstream, tmp_path: Path
) -> None:
    with run_grpc(_mycorp(fake_openai), tmp_path) as server:
        token = server.token()
        with server.stub() as stub:
            answer = stub.Execute(execute_request("hi"), metadata=bearer(token), timeout=15)
            info = stub.GetServerInfo(pb.GetServerInfoRequest(), metadata=bearer(token), timeout=15)
    assert answer.WhichOneof("result") == "success", answer
    assert answer.success.actual_model_used == info.default_model == "mycorp:mc-large"
    chats = [r for r in fake_openai.requests if r.path.endswith("/chat/completions")]
    assert chats and chats[-1].json["model"] == "mc-large"


def test_a_default_provider_without_claude_aliases_is_warned_of_and_tested_with_its_models(
    fake_openai: FakeUpstream, tmp_path: Path
) -> None:
    env = _mycorp(fake_openai)
    validate = vdm(tmp_path, "config", "validate", **env)
    assert validate.returncode == 0, validate.stderr
    assert "warning" in validate.stderr and "MYCORP_ALIAS_HAIKU" in validate.stderr
    with run_gateway(env, tmp_path) as gateway:
        tested = vdm(tmp_path, "test", "connection", "--url", gateway.url, **env)
        assert tested.returncode == 0, tested.stderr
        assert "ok: mycorp:mc-large answered" in tested.stdout
    assert "haiku/sonnet/opus" in gateway.log()
    # With the aliases (or an Anthropic-native default) there is nothing to say.
    mapped = {
        **env,
        "MYCORP_ALIAS_HAIKU": "a",
        "MYCORP_ALIAS_SONNET": "b",
        "MYCORP_ALIAS_OPUS": "c",
    }
    quiet = vdm(tmp_path, "config", "validate", **mapped)
    assert quiet.returncode == 0 and "warning" not in quiet.stderr
