"""``vdm wrap``, ``vdm health``, ``vdm test`` and the logs (JSON lines, no
secrets), as real subprocesses against the real gateway and fake upstreams."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import anthropic
import openai
import pytest

from tests.support.cli import WRAPPED_CLIENT, vdm, wrap
from tests.support.fakes import FakeUpstream, JSONReply, completion
from tests.support.gateway import free_port, run_gateway


def listening(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_wrap_starts_a_gateway_runs_the_command_and_stops_it(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "client.py").write_text(WRAPPED_CLIENT)
    result = vdm(tmp_path, "wrap", "--port", str(port), sys.executable, "client.py", "7")
    assert result.returncode == 7, result.stderr  # the child's exit code
    url = f"http://127.0.0.1:{port}"
    assert f"BASE {url} {url}/v1 wrapped hello" in result.stdout  # echo answered
    assert "started a gateway" in result.stderr
    assert not listening(port)  # it stopped the gateway it started


def test_wrap_uses_a_running_gateway_and_leaves_it(tmp_path: Path) -> None:
    (tmp_path / "client.py").write_text(WRAPPED_CLIENT)
    with run_gateway({"PROXY_API_KEY": "proxy-k"}, tmp_path) as gateway:
        result = wrap(
            tmp_path, gateway.url, sys.executable, "client.py", "0", PROXY_API_KEY="proxy-k"
        )
        assert result.returncode == 0, result.stderr
        assert "wrapped hello" in result.stdout
        assert "started a gateway" not in result.stderr
        assert gateway.process.poll() is None  # still running


def test_wrap_of_a_missing_command_is_one_line(tmp_path: Path) -> None:
    result = vdm(tmp_path, "wrap", "--port", str(free_port()), "no-such-command-xyz")
    assert result.returncode == 127
    assert "cannot run no-such-command-xyz" in result.stderr and "Traceback" not in result.stderr


def test_health_and_test_commands(fake_openai: FakeUpstream, tmp_path: Path) -> None:
    fake_openai.reset()
    models = {
        "object": "list",
        "data": [{"id": "up-1", "object": "model"}, {"id": "up-2", "object": "model"}],
    }
    fake_openai.responder = lambda r: (
        JSONReply(models) if r.path.endswith("/models") else JSONReply(completion("pong"))
    )
    env = {
        "OA_API_KEY": "k",
        "OA_BASE_URL": fake_openai.url + "/v1",
        "DOWN_API_KEY": "k",
        "DOWN_BASE_URL": f"http://127.0.0.1:{free_port()}/v1",
        "VDM_DEFAULT_PROVIDER": "oa",
    }
    upstream = vdm(tmp_path, "health", "upstream", **env)
    assert upstream.returncode == 1  # one provider is down
    rows = {line.split()[0]: line for line in upstream.stdout.splitlines() if line.strip()}
    assert "ok" in rows["oa"] and "2 models" in rows["oa"]
    assert "error" in rows["down"]
    assert "ok" in rows["echo"]

    with run_gateway(env, tmp_path) as gateway:
        health = vdm(tmp_path, "health", "server", "--url", gateway.url, **env)
        assert health.returncode == 0, health.stderr
        assert "healthy" in health.stdout and "oa" in health.stdout
        connection = vdm(
            tmp_path, "test", "connection", "--url", gateway.url, "--model", "m", **env
        )
        assert connection.returncode == 0, connection.stderr
        assert "ok: oa:m answered" in connection.stdout and "pong" in connection.stdout
        listed = vdm(tmp_path, "test", "models", "--url", gateway.url, **env)
        assert listed.returncode == 0, listed.stderr
        assert "oa:up-1" in listed.stdout and "oa:up-2" in listed.stdout
    gone = vdm(tmp_path, "health", "server", "--url", gateway.url, **env)
    assert gone.returncode == 1 and "no gateway answers" in gone.stderr
    assert "Traceback" not in gone.stderr


@pytest.mark.parametrize("fmt", ["console", "json"])
def test_logs_carry_request_ids_and_never_a_secret(
    fake_openai: FakeUpstream, tmp_path: Path, fmt: str
) -> None:
    keys = ["sk-pool-secret-aaaa1111", "sk-pool-secret-bbbb2222"]
    proxy = "proxy-secret-cccc3333"
    fake_openai.reset()
    fake_openai.reply(
        JSONReply({"error": {"message": "bad key"}}, status=401),
        JSONReply(completion("fine")),
        JSONReply({"error": {"message": "boom"}}, status=500),
    )
    env = {
        "OA_API_KEY": " ".join(keys),
        "OA_BASE_URL": fake_openai.url + "/v1",
        "VDM_DEFAULT_PROVIDER": "oa",
        "PROXY_API_KEY": proxy,
        "LOG_FORMAT": fmt,
        "MAX_RETRIES": "0",
        "MIDDLEWARE": "request-log",
    }
    with run_gateway(env, tmp_path) as gateway:
        client = anthropic.Anthropic(base_url=gateway.url, api_key=proxy, max_retries=0)
        client.messages.create(
            model="m",
            max_tokens=5,
            messages=[{"role": "user", "content": "x"}],
            extra_headers={"x-request-id": "rid-known-1"},
        )
        with pytest.raises(anthropic.APIStatusError):
            client.messages.create(
                model="m", max_tokens=5, messages=[{"role": "user", "content": "x"}]
            )
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(
                base_url=gateway.url + "/v1", api_key="wrong-" + proxy, max_retries=0
            ).chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    log = gateway.log()
    for secret in (*keys, proxy):
        assert secret not in log
    lines = [line for line in log.splitlines() if "rid-known-1" in line]
    assert len(lines) >= 3  # the bench warning, the request log's two lines, the access log
    if fmt == "json":
        records = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
        assert records and all(
            {"ts", "level", "logger", "request_id", "message"} <= r.keys() for r in records
        )
        mine = [r for r in records if r["request_id"] == "rid-known-1"]
        assert {r["logger"] for r in mine} >= {"vdm.access", "vdm.keys", "vdm.requests"}
        assert any(r["request_id"] == "-" for r in records)  # start-up lines
    else:
        assert all("request_id=rid-known-1" in line for line in lines)
