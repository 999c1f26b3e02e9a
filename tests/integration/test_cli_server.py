"""``vdm server`` start --daemon / status / restart / stop as real subprocesses,
with real exit codes; port taken; stale pid file.  Every run has a private
HOME / XDG state dir and a free port."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.support.cli import run_vdm
from tests.support.gateway import clean_env, free_port


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "home").mkdir()
    (tmp_path / "work").mkdir()
    return tmp_path


def vdm(
    home: Path, *args: str, timeout: float = 60, **extra: str
) -> subprocess.CompletedProcess[str]:
    env = {
        "HOME": str(home / "home"),
        "XDG_CONFIG_HOME": str(home / "home/.config"),
        "XDG_STATE_HOME": str(home / "state"),
        "MODELS_PREFETCH": "false",
        "SHUTDOWN_TIMEOUT": "5",
        **extra,
    }
    return run_vdm(args, env, cwd=home / "work", timeout=timeout)


def pid_of(home: Path) -> int:
    return int((home / "state/vdm/vdm.pid").read_text())


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def test_daemon_round_trip_with_exit_codes(home: Path) -> None:
    port = str(free_port())
    assert vdm(home, "server", "status").returncode == 1  # not running

    started = vdm(home, "server", "start", "--daemon", "--port", port)
    assert started.returncode == 0, started.stderr
    pid = pid_of(home)
    assert alive(pid)
    assert f"pid {pid}" in started.stdout and f"http://127.0.0.1:{port}" in started.stdout
    log = home / "state/vdm/vdm.log"
    assert f"logs: {log}" in started.stdout
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=5) as response:
        assert response.status == 200
    assert "listening on" in log.read_text()  # the summary went to the log

    status = vdm(home, "server", "status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert "healthy" in status.stdout and str(pid) in status.stdout
    assert f"http://127.0.0.1:{port}" in status.stdout

    again = vdm(home, "server", "start", "--daemon", "--port", str(free_port()))
    assert again.returncode == 1
    assert "already running" in again.stderr and str(pid) in again.stderr
    assert "Traceback" not in again.stderr

    restarted = vdm(home, "server", "restart")
    assert restarted.returncode == 0, restarted.stderr
    new_pid = pid_of(home)
    assert new_pid != pid and not alive(pid) and alive(new_pid)
    assert f"http://127.0.0.1:{port}" in restarted.stdout  # same port as before

    stopped = vdm(home, "server", "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert "stopped" in stopped.stdout
    assert not alive(new_pid)
    assert not (home / "state/vdm/vdm.pid").exists()
    assert vdm(home, "server", "status").returncode == 1
    assert "Traceback" not in log.read_text()


def test_status_is_2_when_the_gateway_runs_but_is_not_healthy(home: Path) -> None:
    """A process that owns the pid file but answers /health with an error."""
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import http.server, sys\n"
                "class H(http.server.BaseHTTPRequestHandler):\n"
                "    def do_GET(self):\n"
                "        self.send_response(503); self.end_headers()\n"
                "    def log_message(self, *a): pass\n"
                f"http.server.HTTPServer(('127.0.0.1', {port}), H).serve_forever()  # vdm\n"
            ),
        ],
    )
    try:
        pid_file = home / "state/vdm/vdm.pid"
        pid_file.parent.mkdir(parents=True)
        pid_file.write_text(f"{server.pid}\n")
        (home / "state/vdm/vdm.pid.json").write_text(
            json.dumps({"pid": server.pid, "host": "127.0.0.1", "port": port})
        )
        status = vdm(home, "server", "status")
    finally:
        server.kill()
        server.wait()
    assert status.returncode == 2, status.stdout + status.stderr
    assert "unhealthy" in status.stdout


def test_stale_pid_file_is_reported_and_replaced(home: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    pid_file = home / "state/vdm/vdm.pid"
    pid_file.parent.mkdir(parents=True)
    pid_file.write_text(f"{dead.pid}\n")

    status = vdm(home, "server", "status")
    assert status.returncode == 1 and "stale" in status.stdout

    port = str(free_port())
    started = vdm(home, "server", "start", "--daemon", "--port", port)
    try:
        assert started.returncode == 0, started.stderr
        assert "stale pid file" in started.stderr
        assert pid_of(home) != dead.pid and alive(pid_of(home))
    finally:
        assert vdm(home, "server", "stop").returncode == 0


def test_stop_when_nothing_runs_says_so(home: Path) -> None:
    stopped = vdm(home, "server", "stop")
    assert stopped.returncode == 0 and "not running" in stopped.stdout


@pytest.mark.parametrize("daemon", [False, True])
def test_a_taken_port_is_refused_naming_its_holder(home: Path, daemon: bool) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = str(holder.getsockname()[1])
        args = ["server", "start", "--port", port, *(["--daemon"] if daemon else [])]
        result = vdm(home, *args)
    assert result.returncode == 1
    assert f"port {port}" in result.stderr and "in use" in result.stderr
    assert f"pid {os.getpid()}" in result.stderr  # this test process holds it
    assert "Traceback" not in result.stderr
    assert not (home / "state/vdm/vdm.pid").exists()


def test_a_taken_grpc_port_is_refused_naming_its_holder(home: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = str(holder.getsockname()[1])
        args = ["server", "start", "--port", str(free_port()), "--grpc-port", taken]
        result = vdm(home, *args, "--workers", "2")
    assert result.returncode == 1
    assert f"gRPC port {taken}" in result.stderr and "in use" in result.stderr
    assert f"pid {os.getpid()}" in result.stderr
    assert "--grpc-port" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_start_that_fails_in_the_app_exits_3(home: Path, workers: str) -> None:
    """One process or a supervisor of workers: the same exit status (uvicorn's
    supervisor alone would exit 0 after a worker failed to start), and the
    failure in one line, without a traceback (--debug adds it), and no
    "listening on" line for a gateway that never listened."""
    secret = home / "home/.config/vdm/jwt-secret"
    secret.mkdir(parents=True)  # read at start-up (with a credential): fails in the app
    args = ("server", "start", "--port", str(free_port()), "--workers", workers)
    result = vdm(home, *args, PROXY_API_KEY="operator-key")
    assert result.returncode == 3, result.stderr[-2000:]
    assert "start-up failed: IsADirectoryError" in result.stderr
    assert "--debug" in result.stderr
    assert "Traceback" not in result.stderr
    assert "listening on" not in result.stdout
    debug = vdm(home, "--debug", *args, PROXY_API_KEY="operator-key")
    assert debug.returncode == 3
    assert "Traceback" in debug.stderr and "IsADirectoryError" in debug.stderr


def test_a_start_whose_tls_files_do_not_load_says_so_in_one_line(home: Path) -> None:
    for name in ("cert.pem", "key.pem"):
        (home / name).write_text("not a PEM file\n")  # passes the config check, not TLS's
    result = vdm(
        home,
        *("server", "start", "--port", str(free_port()), "--workers", "2"),
        GRPC_PORT=str(free_port()),
        GRPC_TLS_CERT=str(home / "cert.pem"),
        GRPC_TLS_KEY=str(home / "key.pem"),
    )
    assert result.returncode == 3, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: cannot start: the gRPC TLS certificate")
    assert str(home / "cert.pem") in lines[0] and "GRPC_TLS_KEY" in lines[0]
    assert result.stdout == ""


def test_foreground_pid_file_is_written_and_removed(home: Path) -> None:
    port = str(free_port())
    pid_file = home / "run/gw.pid"
    env = {**clean_env(), "HOME": str(home / "home"), "MODELS_PREFETCH": "false"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vdm",
            "server",
            "start",
            "--port",
            port,
            "--pid-file",
            str(pid_file),
        ],
        env=env,
        cwd=home / "work",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        from tests.support.gateway import Gateway, _wait_ready

        _wait_ready(Gateway(f"http://127.0.0.1:{port}", proc, home / "none.log"), 20)  # type: ignore[arg-type]
        assert int(pid_file.read_text()) == proc.pid
        status = vdm(home, "server", "status", "--pid-file", str(pid_file))
        assert status.returncode == 0, status.stdout
    finally:
        proc.terminate()
        assert proc.wait(15) == 0  # the graceful drain exits 0
    assert not pid_file.exists()


def test_restart_keeps_the_grpc_port_of_the_start_it_replaces(home: Path) -> None:
    port, grpc_port = str(free_port()), free_port()
    started = vdm(
        home, "server", "start", "--daemon", "--port", port, "--grpc-port", str(grpc_port)
    )
    assert started.returncode == 0, started.stderr
    assert f"gRPC LLMProxy on 127.0.0.1:{grpc_port}" in started.stdout
    try:
        restarted = vdm(home, "server", "restart")  # no GRPC_PORT in this environment
        assert restarted.returncode == 0, restarted.stderr
        assert f"gRPC LLMProxy on 127.0.0.1:{grpc_port}" in restarted.stdout
        with socket.create_connection(("127.0.0.1", grpc_port), timeout=5):
            pass  # the restarted gateway serves gRPC again
        record = json.loads((home / "state/vdm/vdm.pid.json").read_text())
        assert record["grpc_port"] == grpc_port and record["port"] == int(port)
    finally:
        assert vdm(home, "server", "stop").returncode == 0
