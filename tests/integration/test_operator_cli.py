"""The operator's own CLI against a gateway that asks for credentials
(``MANAGEMENT_TOKEN`` on: the control plane; ``PROXY_API_KEY``): ``server
status``, ``health``, ``test`` and ``wrap`` present ``--token`` / ``VDM_API_KEY``
/ ``PROXY_API_KEY`` / ``MANAGEMENT_TOKEN``; ``wrap`` says so before the child
starts when it has none."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.support.cli import WRAPPED_CLIENT, vdm, wrap
from tests.support.gateway import run_gateway

MANAGEMENT = "mgmt-token-0123456789abcdef"


def test_status_health_and_test_use_the_management_token(tmp_path: Path) -> None:
    pid_file = tmp_path / "vdm.pid"
    env = {"MANAGEMENT_TOKEN": MANAGEMENT}
    with run_gateway(env, tmp_path, args=("--pid-file", str(pid_file))) as gateway:
        status = vdm(tmp_path, "server", "status", "--pid-file", str(pid_file), **env)
        assert status.returncode == 0, status.stdout + status.stderr
        assert "healthy" in status.stdout and "unhealthy" not in status.stdout
        health = vdm(tmp_path, "health", "server", "--url", gateway.url, **env)
        assert health.returncode == 0, health.stderr
        connection = vdm(tmp_path, "test", "connection", "--url", gateway.url, **env)
        assert connection.returncode == 0, connection.stderr
        assert "ok: echo:" in connection.stdout
        models = vdm(tmp_path, "test", "models", "--url", gateway.url, **env)
        assert models.returncode == 0, models.stderr
        # --token, without the variable
        flag = vdm(tmp_path, "health", "server", "--url", gateway.url, "--token", MANAGEMENT)
        assert flag.returncode == 0, flag.stderr
        # none: one line saying what to do, and status says it runs
        bare = vdm(tmp_path, "health", "server", "--url", gateway.url)
        assert bare.returncode == 1 and "--token" in bare.stderr
        assert "Traceback" not in bare.stderr
        unknown = vdm(tmp_path, "server", "status", "--pid-file", str(pid_file))
        assert unknown.returncode == 2 and "requires a token" in unknown.stdout
    assert MANAGEMENT not in gateway.log()


def test_wrap_tells_before_the_child_starts_when_no_token_is_set(tmp_path: Path) -> None:
    (tmp_path / "client.py").write_text(WRAPPED_CLIENT)
    marker = tmp_path / "child-ran"
    with run_gateway({"MANAGEMENT_TOKEN": MANAGEMENT}, tmp_path) as gateway:
        url = gateway.url
        refused = wrap(tmp_path, url, sys.executable, "-c", f"open({str(marker)!r}, 'w')")
        assert refused.returncode == 2
        assert "requires a token" in refused.stderr and "Traceback" not in refused.stderr
        assert not marker.exists()

        wrong = wrap(tmp_path, url, "--token", "sk-vdm-wrong", sys.executable, "-V")
        assert wrong.returncode == 2 and "refused the token" in wrong.stderr

        # With the token, the child gets it as its credential, over a key of its own.
        ok = wrap(
            tmp_path,
            url,
            sys.executable,
            "client.py",
            "0",
            MANAGEMENT_TOKEN=MANAGEMENT,
            ANTHROPIC_API_KEY="sk-ant-someone-elses",
        )
        assert ok.returncode == 0, ok.stderr
        assert "wrapped hello" in ok.stdout


def test_wrap_passes_the_proxy_key(tmp_path: Path) -> None:
    (tmp_path / "client.py").write_text(WRAPPED_CLIENT)
    with run_gateway({"PROXY_API_KEY": "proxy-k"}, tmp_path) as gateway:
        result = wrap(
            tmp_path,
            gateway.url,
            sys.executable,
            "client.py",
            "0",
            VDM_API_KEY="proxy-k",
            ANTHROPIC_API_KEY="sk-ant-real",
        )
        assert result.returncode == 0, result.stderr
        assert "wrapped hello" in result.stdout
