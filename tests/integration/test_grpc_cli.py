"""``vdm server start --grpc-port``, graceful shutdown, and the ``vdm proxy`` client."""

from __future__ import annotations

import concurrent.futures
import json
import signal
import stat
import subprocess
import sys
import threading
from pathlib import Path

import anthropic
import grpc

from tests.conftest import upstream_env
from tests.support.fakes import FakeUpstream, JSONReply, completion
from tests.support.gateway import Gateway, clean_env, free_port, run_gateway, worker_pids
from tests.support.grpc_server import GrpcServer, bearer, execute_request, run_grpc, stop
from tests.support.waiting import wait_for
from vdm import __version__
from vdm.grpc import llm_proxy_pb2 as pb
from vdm.grpc import llm_proxy_pb2_grpc as pb_grpc


def grpc_of(gateway: Gateway, port: int, tmp_path: Path) -> GrpcServer:
    """The gRPC door of a gateway started by ``run_gateway`` (its HOME, its secret)."""
    env = {
        **clean_env(),
        "HOME": str(tmp_path / "home"),
        "XDG_CONFIG_HOME": str(tmp_path / "home" / ".config"),
    }
    return GrpcServer("127.0.0.1", port, gateway.process, gateway.log_path, env)


def test_server_start_with_grpc_port_serves_both_doors_from_one_gateway(
    fake_openai: FakeUpstream,
    fake_anthropic: FakeUpstream,
    tmp_path: Path,
) -> None:
    port = free_port()
    env = upstream_env(fake_openai, fake_anthropic)
    with run_gateway(env, tmp_path, args=["--grpc-port", str(port)]) as gateway:
        assert f"gRPC LLMProxy on vibectl-server-insecure://127.0.0.1:{port}" in gateway.log()
        server = grpc_of(gateway, port, tmp_path)
        token = server.token("both-doors")  # the same generated secret as the server's
        fake_openai.reply(JSONReply(completion("via grpc")), JSONReply(completion("via http")))
        with server.stub() as stub:
            response = stub.Execute(
                execute_request("hi", model="fast"), metadata=bearer(token), timeout=10
            )
        assert response.success.response_text == "via grpc"
        assert response.success.actual_model_used == "openai:gpt-fast"
        with anthropic.Anthropic(base_url=gateway.url, api_key="k", max_retries=0) as client:
            message = client.messages.create(
                model="fast", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
            )
        assert message.content[0].text == "via http"  # type: ignore[union-attr]
        with server.stub() as stub:  # auth is on here too
            try:
                stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=5)
                raise AssertionError("a call without a token was served")
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.UNAUTHENTICATED


def test_workers_share_the_grpc_port_and_its_secret(
    fake_openai: FakeUpstream, fake_anthropic: FakeUpstream, tmp_path: Path
) -> None:
    """--workers 2 with a gRPC port: every worker serves it (with one generated
    secret between them), so calls on new connections all succeed."""
    port = free_port()
    env = upstream_env(fake_openai, fake_anthropic)
    fake_openai.responder = lambda request: JSONReply(completion("from a worker"))
    args = ["--grpc-port", str(port), "--workers", "2"]
    with run_gateway(env, tmp_path, args=args) as gateway:
        pids = worker_pids(gateway.process.pid, 2)
        assert len(pids) == 2, pids
        server = grpc_of(gateway, port, tmp_path)
        both = wait_for(lambda: gateway.log().count("gRPC LLMProxy listening") == 2)
        assert both, gateway.log()  # both workers bound it
        token = server.token("workers")
        for _ in range(8):
            with server.stub() as stub:  # a new channel: a new connection
                response = stub.Execute(
                    execute_request("hi", model="fast"), metadata=bearer(token), timeout=10
                )
            assert response.success.response_text == "from a worker", response
        assert "Traceback" not in gateway.log()


def accepting(server: GrpcServer, token: str) -> bool:
    """Whether the server still takes a new call (it stops at once on SIGTERM)."""
    try:
        with server.stub() as stub:
            stub.GetServerInfo(pb.GetServerInfoRequest(), metadata=bearer(token), timeout=5)
    except grpc.RpcError as exc:
        # refused, or cut off as the server stops (which one depends on timing)
        if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
            return False
        raise
    return True


def test_sigterm_lets_a_call_in_flight_finish(
    fake_openai: FakeUpstream,
    fake_anthropic: FakeUpstream,
    tmp_path: Path,
) -> None:
    env = upstream_env(fake_openai, fake_anthropic)
    with run_grpc(env, tmp_path) as server:
        token = server.token()
        release = threading.Event()  # the answer waits until the drain has begun
        fake_openai.reply(JSONReply(completion("finished anyway"), release=release))
        channel = grpc.insecure_channel(server.target)
        stub = pb_grpc.VibectlLLMProxyStub(channel)
        with channel, concurrent.futures.ThreadPoolExecutor(1) as pool:
            call = pool.submit(
                lambda: stub.Execute(
                    execute_request("hi", model="openai:gpt-4o"), metadata=bearer(token), timeout=30
                )
            )
            try:
                assert fake_openai.wait_for(lambda: bool(fake_openai.requests))
                server.process.send_signal(signal.SIGTERM)
                server.wait_log("shutting down: calls in flight have")
                assert wait_for(lambda: not accepting(server, token)), "still taking new calls"
            finally:
                release.set()
            assert call.result().success.response_text == "finished anyway"
        assert server.process.wait(10) == 0
        stop(server.process)


def test_proxy_configure_test_and_status(
    grpc_server: GrpcServer,
    grpc_token: str,
    tmp_path: Path,
) -> None:
    home = tmp_path / "client-home"
    client_env = {**grpc_server.env, "HOME": str(home), "XDG_CONFIG_HOME": str(home / "cfg")}
    url = f"vibectl-server-insecure://{grpc_token}@127.0.0.1:{grpc_server.port}"

    def vdm(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "vdm", *args],
            env=client_env,
            capture_output=True,
            text=True,
            timeout=30,
        )

    configured = vdm("proxy", "configure", url)
    assert configured.returncode == 0, configured.stderr
    saved = home / "cfg" / "vdm" / "proxy.json"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert json.loads(saved.read_text())["url"] == url
    tested = vdm("proxy", "test")
    assert tested.returncode == 0, tested.stderr
    out = tested.stdout
    for expected in (
        "vdm-llm-proxy",
        __version__,
        "echo:echo",
        "fast → openai:gpt-fast",
        "5000",
        "connection OK",
    ):
        assert expected in out
    assert grpc_token not in out
    status = vdm("proxy", "status")
    assert status.returncode == 0
    assert f"vibectl-server-insecure://***@127.0.0.1:{grpc_server.port}" in status.stdout
    assert grpc_token not in status.stdout
    # without the token, and with a bad URL
    refused = vdm("proxy", "test", f"vibectl-server-insecure://127.0.0.1:{grpc_server.port}")
    assert refused.returncode == 1 and "missing token" in refused.stderr
    bad = vdm("proxy", "test", "http://127.0.0.1:1")
    assert bad.returncode == 2 and "vibectl-server://" in bad.stderr


def test_middleware_see_grpc_calls_from_start_to_end(tmp_path: Path) -> None:
    with run_grpc({"MIDDLEWARE": "request-log"}, tmp_path) as server:
        token = server.token()
        with server.stub() as stub:
            list(
                stub.StreamExecute(
                    execute_request("hello there", model="echo:echo", request_id="mw-1"),
                    metadata=bearer(token),
                    timeout=10,
                )
            )
        assert server.process.poll() is None
        log = server.wait_log(" end ")
    start = next(line for line in log.splitlines() if "start grpc" in line)
    assert "request_id=mw-1" in start and "echo:echo" in start and "stream=true" in start
    end = next(line for line in log.splitlines() if " end " in line and "mw-1" in line)
    assert "ok" in end and "in=" in end


class _OtherVersion(pb_grpc.VibectlLLMProxyServicer):
    def __init__(self, version: str) -> None:
        self.version = version

    def GetServerInfo(self, request: pb.GetServerInfoRequest, context: object) -> object:
        return pb.GetServerInfoResponse(server_name="vdm-llm-proxy", server_version=self.version)


def test_proxy_test_warns_on_minor_skew_and_refuses_another_major(tmp_path: Path) -> None:
    major, minor, _ = (int(n) for n in __version__.split("+")[0].split(".")[:3])
    env = {**clean_env(), "HOME": str(tmp_path)}
    for version, code, said in (
        (f"{major}.{minor + 1}.0", 0, "warning: version skew"),
        (f"{major + 1}.0.0", 1, "incompatible versions"),
    ):
        server = grpc.server(concurrent.futures.ThreadPoolExecutor(2))
        pb_grpc.add_VibectlLLMProxyServicer_to_server(_OtherVersion(version), server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        try:
            done = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "vdm",
                    "proxy",
                    "test",
                    f"vibectl-server-insecure://127.0.0.1:{port}",
                ],
                env=env,
                capture_output=True,
                text=True,
                timeout=30,
            )
        finally:
            server.stop(0)
        assert done.returncode == code, done.stderr
        assert said in done.stderr
        if code:
            assert "upgrade the client" in done.stderr
