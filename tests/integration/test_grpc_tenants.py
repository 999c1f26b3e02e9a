"""Virtual tokens (``sk-vdm-…``) on the gRPC door of ``vdm server start --grpc-port``:
one token through both HTTP doors and gRPC, its project's key upstream, the
same refusals, quotas as ``RATE_LIMITED``, and usage counted for the token."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import anthropic
import grpc
import openai
import pytest

from tests.integration.test_tenants import (
    PROJECT_OPENAI_KEY,
    env_for,
    make_project,
    make_token,
    manage,
)
from tests.support.fakes import FakeUpstream, JSONReply, Recorded, SSEReply, completion, stream_of
from tests.support.gateway import Gateway, clean_env, free_port, run_gateway
from tests.support.grpc_server import GrpcServer, bearer, execute_request
from vdm.grpc import llm_proxy_pb2 as pb

MSG = {"model": "gpt-4o", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}


def openai_reply(request: Recorded) -> JSONReply | SSEReply:
    if request.json.get("stream"):
        return SSEReply(stream_of(completion("streamed ok"), pieces=2))
    return JSONReply(completion("ok"))


@pytest.fixture
def both_doors(
    fake_openai: FakeUpstream, fake_anthropic: FakeUpstream, tmp_path: Path
) -> Iterator[tuple[Gateway, GrpcServer]]:
    fake_openai.responder = openai_reply
    port = free_port()
    env = env_for(fake_openai, fake_anthropic, tmp_path)
    with run_gateway(env, tmp_path, args=["--grpc-port", str(port)]) as gw:
        home = tmp_path / "home"
        server = GrpcServer(
            "127.0.0.1",
            port,
            gw.process,
            gw.log_path,
            {**clean_env(), "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")},
        )
        yield gw, server


def execute(server: GrpcServer, token: str) -> pb.ExecuteResponse:
    with server.stub() as stub:
        return stub.Execute(
            execute_request("hi", model="gpt-4o"), metadata=bearer(token), timeout=10
        )


def refusal(server: GrpcServer, token: str) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        execute(server, token)
    return caught.value


def test_one_token_through_http_and_grpc_with_the_project_key(
    both_doors: tuple[Gateway, GrpcServer], fake_openai: FakeUpstream
) -> None:
    gw, server = both_doors
    url = gw.url
    project_key = f"Bearer {PROJECT_OPENAI_KEY}"
    with manage(gw) as api:
        project = make_project(api)
        created = make_token(api, project["id"], name="grpc", tpm=100000)
        secret = created["token"]

        with anthropic.Anthropic(base_url=url, api_key=secret, max_retries=0) as ant:
            assert ant.messages.create(**MSG).content[0].text == "ok"  # type: ignore[union-attr]
        assert fake_openai.last.headers["authorization"] == project_key
        with openai.OpenAI(base_url=url + "/v1", api_key=secret, max_retries=0) as oai:
            chat = oai.chat.completions.create(
                model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
            )
        assert chat.choices[0].message.content == "ok"
        assert fake_openai.last.headers["authorization"] == project_key

        response = execute(server, secret)
        assert response.success.response_text == "ok", response
        assert fake_openai.last.headers["authorization"] == project_key
        with server.stub() as stub:
            chunks = list(
                stub.StreamExecute(
                    execute_request("hi", model="gpt-4o"), metadata=bearer(secret), timeout=10
                )
            )
        assert "".join(c.text_chunk for c in chunks) == "streamed ok"
        assert chunks[-1].HasField("final_metrics")
        assert fake_openai.last.headers["authorization"] == project_key
        assert fake_openai.last.json["stream"] is True

        with server.stub() as stub:  # GetServerInfo admits the token too
            info = stub.GetServerInfo(
                pb.GetServerInfoRequest(), metadata=bearer(secret), timeout=10
            )
        assert info.server_name == "vdm-llm-proxy"

        listed = api.get("/manage/tokens", params={"project_id": project["id"]}).json()
        assert listed[0]["request_count"] == 5  # 2 HTTP + Execute, StreamExecute, ServerInfo
        assert secret not in server.log()

        # Unknown, revoked, inactive project: statuses with the registry's reasons.
        error = refusal(server, "sk-vdm-not-a-real-token")
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert error.details() == "invalid API token"
        api.patch(f"/manage/projects/{project['id']}", json={"is_active": False})
        error = refusal(server, secret)
        assert error.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "project" in error.details() and "inactive" in error.details()
        api.patch(f"/manage/projects/{project['id']}", json={"is_active": True})
        assert execute(server, secret).HasField("success")
        assert api.delete(f"/manage/tokens/{created['id']}").status_code == 204
        error = refusal(server, secret)
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "revoked" in error.details()
        with server.stub() as stub, pytest.raises(grpc.RpcError) as caught:
            list(stub.StreamExecute(execute_request("hi"), metadata=bearer(secret), timeout=10))
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED

        denied = api.get(
            "/manage/audit", params={"token_id": created["id"], "outcome": "denied"}
        ).json()["events"]
        assert {e["details"]["reason"] for e in denied} == {"project inactive", "token revoked"}
        assert all(
            e["client_ip"] == "127.0.0.1" and e["request_id"].startswith("req_vdm_") for e in denied
        )


def test_a_spent_quota_and_tpm_are_rate_limited(
    both_doors: tuple[Gateway, GrpcServer], fake_openai: FakeUpstream
) -> None:
    gw, server = both_doors
    with manage(gw) as api:
        project = make_project(api)
        two = make_token(api, project["id"], max_requests=2)["token"]
        assert execute(server, two).HasField("success")
        assert execute(server, two).HasField("success")
        third = execute(server, two)
        assert third.error.error_code == "RATE_LIMITED", third
        assert "quota of 2 requests" in third.error.error_message
        with server.stub() as stub:
            chunks = list(
                stub.StreamExecute(execute_request("hi"), metadata=bearer(two), timeout=10)
            )
        assert [c.error.error_code for c in chunks] == ["RATE_LIMITED"]
        with server.stub() as stub, pytest.raises(grpc.RpcError) as caught:
            stub.GetServerInfo(pb.GetServerInfoRequest(), metadata=bearer(two), timeout=10)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert len(fake_openai.requests) == 2  # nothing refused went upstream

        # TPM: the usage a gRPC call reports is counted for its token.
        small = make_token(api, project["id"], tpm=1)["token"]
        assert execute(server, small).HasField("success")  # uses more than 1 token
        limited = execute(server, small)
        assert limited.error.error_code == "RATE_LIMITED"
        assert "tokens per minute" in limited.error.error_message
        assert json.loads(limited.error.error_details)["retry_after_seconds"] >= 1
