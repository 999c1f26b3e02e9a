"""JWT authentication, limits and TLS of the real ``vdm grpc serve`` process."""

from __future__ import annotations

import concurrent.futures
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import jwt
import pytest

from tests.conftest import upstream_env
from tests.support.fakes import FakeUpstream, JSONReply, completion
from tests.support.gateway import clean_env
from tests.support.grpc_server import SECRET, GrpcServer, bearer, execute_request, run_grpc
from tests.support.redisdb import redis_env
from tests.support.waiting import eventually
from vdm.grpc import llm_proxy_pb2 as pb
from vdm.grpc import llm_proxy_pb2_grpc as pb_grpc


def info_error(server: GrpcServer, metadata: list[tuple[str, str]]) -> grpc.RpcError:
    with server.stub() as stub, pytest.raises(grpc.RpcError) as caught:
        stub.GetServerInfo(pb.GetServerInfoRequest(), metadata=metadata, timeout=10)
    return caught.value


def stream_error(server: GrpcServer, metadata: list[tuple[str, str]]) -> grpc.RpcError:
    with server.stub() as stub, pytest.raises(grpc.RpcError) as caught:
        list(
            stub.StreamExecute(
                execute_request("hi", model="echo:echo"), metadata=metadata, timeout=10
            )
        )
    return caught.value


def forged(secret: str = SECRET, **changes: object) -> str:
    now = int(time.time())
    claims = {
        "sub": "mallory",
        "iss": "vdm",
        "iat": now - 10,
        "exp": now + 86400,
        "jti": "forged-jti",
        **changes,
    }
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, secret, algorithm="HS256")


@pytest.mark.parametrize(
    ("metadata", "reason"),
    [
        ([], "missing token"),
        ([("authorization", "Basic dXNlcjpwdw==")], "malformed token"),
        ([("authorization", "Bearer not.a.jwt")], "malformed token"),
        ([("authorization", f"Bearer {forged(exp=None)}")], "malformed token: claim 'exp'"),
        ([("authorization", f"Bearer {forged(exp=int(time.time()) - 60)}")], "expired token"),
        (
            [("authorization", f"Bearer {forged('another-secret-that-is-long-enough-000')}")],
            "bad signature token",
        ),
    ],
)
def test_bad_credentials_are_unauthenticated_with_their_reason(
    grpc_server: GrpcServer,
    metadata: list[tuple[str, str]],
    reason: str,
) -> None:
    for error in (info_error(grpc_server, metadata), stream_error(grpc_server, metadata)):
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert reason in error.details()
        assert SECRET not in error.details()


def test_a_token_with_another_algorithm_is_refused(grpc_server: GrpcServer) -> None:
    unsigned = jwt.encode(
        {"sub": "x", "iss": "vdm", "iat": 1, "exp": 2**31, "jti": "j"}, None, algorithm="none"
    )  # type: ignore[arg-type]
    error = info_error(grpc_server, bearer(unsigned))
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "malformed token" in error.details()


def test_a_forged_but_well_signed_token_is_accepted(grpc_server: GrpcServer) -> None:
    with grpc_server.stub() as stub:
        info = stub.GetServerInfo(pb.GetServerInfoRequest(), metadata=bearer(forged()), timeout=10)
    assert info.server_name == "vdm-llm-proxy"  # (the control for the cases above)


def test_a_revoked_token_is_refused_on_the_next_call(grpc_server: GrpcServer) -> None:
    token = grpc_server.token("soon-revoked")
    jti = jwt.decode(token, options={"verify_signature": False})["jti"]
    with grpc_server.stub() as stub:
        assert (
            stub.Execute(
                execute_request("hi", model="echo:echo"), metadata=bearer(token), timeout=10
            ).success.response_text
            == "hi"
        )
    listed = grpc_server.vdm("token", "list")
    assert jti in listed.stdout and "active" in listed.stdout
    assert token not in listed.stdout
    done = grpc_server.vdm("token", "revoke", jti)
    assert done.returncode == 0, done.stderr

    def refused() -> grpc.RpcError | None:
        try:
            with grpc_server.stub() as stub:
                stub.GetServerInfo(pb.GetServerInfoRequest(), metadata=bearer(token), timeout=5)
        except grpc.RpcError as exc:
            return exc
        return None

    exc = eventually(refused, lambda e: e is not None, every=0.1)
    assert exc is not None, "revocation not seen"
    assert exc.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "revoked token" in exc.details()
    assert "revoked" in grpc_server.vdm("token", "list").stdout


def test_token_generate_writes_a_private_file_and_never_prints_the_secret(
    grpc_server: GrpcServer,
    tmp_path: Path,
) -> None:
    out = tmp_path / "client.jwt"
    done = grpc_server.vdm(
        "token", "generate", "file-client", "--expires-in", "2h", "--output", str(out)
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""  # the token went to the file
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    claims = jwt.decode(out.read_text().strip(), SECRET, algorithms=["HS256"], issuer="vdm")
    assert claims["sub"] == "file-client"
    assert 7100 <= claims["exp"] - claims["iat"] <= 7200
    assert SECRET not in done.stdout + done.stderr
    bad = grpc_server.vdm("token", "generate", "x", "--expires-in", "soon")
    assert bad.returncode == 2 and "not a duration" in bad.stderr


def test_a_generated_secret_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    env = {
        **clean_env(),
        "HOME": str(tmp_path),
        "XDG_CONFIG_HOME": str(tmp_path / "cfg"),
        "XDG_STATE_HOME": str(tmp_path / "state"),
    }

    def generate() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "vdm", "token", "generate", "me"],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )

    first, second = generate(), generate()
    assert first.returncode == 0 and second.returncode == 0, first.stderr
    secret_file = tmp_path / "cfg" / "vdm" / "jwt-secret"
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    secret = secret_file.read_text().strip()
    assert len(secret) >= 32 and secret not in first.stdout + first.stderr
    for token in (first.stdout.strip(), second.stdout.strip()):
        assert jwt.decode(token, secret, algorithms=["HS256"], issuer="vdm")["sub"] == "me"


# ---------------------------------------------------------------- limits


def test_requests_per_minute_hold_across_instances_with_redis(
    fake_openai: FakeUpstream, fake_anthropic: FakeUpstream, tmp_path: Path
) -> None:
    for shared in redis_env():
        env = {
            **upstream_env(fake_openai, fake_anthropic),
            "GRPC_MAX_REQUESTS_PER_MINUTE_PER_TOKEN": "3",
            **shared,
        }
        with run_grpc(env, tmp_path / "a") as one, run_grpc(env, tmp_path / "b") as two:
            alice = one.token("alice")
            with one.stub() as first, two.stub() as second:
                results = [
                    stub.Execute(
                        execute_request("hi", model="echo:echo"), metadata=bearer(alice), timeout=10
                    )
                    for stub in (first, second, first, second, first)
                ]
                bob = second.Execute(
                    execute_request("hi", model="echo:echo"),
                    metadata=bearer(one.token("bob")),
                    timeout=10,
                )
        kinds = [r.WhichOneof("result") for r in results]
        assert kinds == ["success", "success", "success", "error", "error"]
        assert "3 requests per minute" in results[3].error.error_message
        assert results[3].error.error_code == "RATE_LIMITED"
        assert bob.WhichOneof("result") == "success"


def test_requests_per_minute_per_token_and_concurrency_are_enforced(
    fake_openai: FakeUpstream,
    fake_anthropic: FakeUpstream,
    tmp_path: Path,
) -> None:
    env = {
        **upstream_env(fake_openai, fake_anthropic),
        "GRPC_MAX_REQUESTS_PER_MINUTE_PER_TOKEN": "2",
        "GRPC_MAX_CONCURRENT_REQUESTS": "1",
    }
    with run_grpc(env, tmp_path) as server:
        alice, bob = server.token("alice"), server.token("bob")
        with server.stub() as stub:
            info = stub.GetServerInfo(pb.GetServerInfoRequest(), metadata=bearer(alice))
            assert info.limits.max_requests_per_minute == 2
            assert info.limits.max_concurrent_requests == 1

            def run(token: str) -> pb.ExecuteResponse:
                return stub.Execute(
                    execute_request("hi", model="echo:echo"), metadata=bearer(token), timeout=10
                )

            assert run(alice).WhichOneof("result") == "success"
            assert run(alice).WhichOneof("result") == "success"
            third = run(alice)
            assert third.error.error_code == "RATE_LIMITED"
            assert "2 requests per minute" in third.error.error_message
            assert "retry_after_seconds" in third.error.error_details
            chunks = list(
                stub.StreamExecute(
                    execute_request("hi", model="echo:echo"), metadata=bearer(alice), timeout=10
                )
            )
            assert [c.WhichOneof("chunk_type") for c in chunks] == ["error"]
            assert chunks[0].error.error_code == "RATE_LIMITED"
            assert run(bob).WhichOneof("result") == "success"  # per subject: bob has room

            # concurrency: one slow call in flight, the next one is refused
            release = threading.Event()
            fake_openai.reply(JSONReply(completion("slow"), release=release))
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                slow = pool.submit(
                    lambda: stub.Execute(
                        execute_request("hi", model="openai:gpt-4o"),
                        metadata=bearer(bob),
                        timeout=10,
                    )
                )
                assert fake_openai.wait_for(
                    lambda: any(r.path == "/v1/chat/completions" for r in fake_openai.requests)
                )
                try:
                    refused = run(server.token("carol"))
                finally:
                    release.set()
                assert refused.error.error_code == "RATE_LIMITED"
                assert "concurrent" in refused.error.error_message
                assert slow.result().success.response_text == "slow"
            assert run(server.token("dave")).WhichOneof("result") == "success"  # freed


# ---------------------------------------------------------------- TLS


def test_tls_with_a_generated_certificate(tmp_path: Path) -> None:
    with run_grpc({}, tmp_path, tls=True) as server:
        assert "listening on vibectl-server://127.0.0.1:" in server.log()
        token = server.token()
        with server.stub() as stub:
            response = stub.Execute(
                execute_request("over tls", model="echo:echo"), metadata=bearer(token), timeout=10
            )
        assert response.success.response_text == "over tls"
        # plaintext to a TLS port fails
        with grpc.insecure_channel(server.target) as plain, pytest.raises(grpc.RpcError):
            pb_grpc.VibectlLLMProxyStub(plain).GetServerInfo(
                pb.GetServerInfoRequest(), metadata=bearer(token), timeout=3
            )
        cert = tmp_path / "server.crt"
        shown = server.vdm(
            "proxy",
            "test",
            f"vibectl-server://{token}@localhost:{server.port}",
            "--ca-bundle",
            str(cert),
        )
        assert shown.returncode == 0, shown.stderr
        assert "vdm-llm-proxy" in shown.stdout and token not in shown.stdout


def test_no_auth_needs_the_flag_and_warns(tmp_path: Path) -> None:
    with run_grpc({}, tmp_path, args=["--no-auth"]) as server, server.stub() as stub:
        info = stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=10)
        assert info.server_name == "vdm-llm-proxy"
        assert "authentication is OFF" in server.log()
