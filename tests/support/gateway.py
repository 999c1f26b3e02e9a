"""Start the real gateway process (``python -m vdm server start``) for a test."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.waiting import BOUND, eventually, wait_for, wait_text


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def clean_env() -> dict[str, str]:
    """The test process's environment without anything that configures vdm."""
    keep = ("PATH", "LANG", "LC_ALL", "SYSTEMROOT", "TMPDIR", "PYTHONPATH", "VIRTUAL_ENV")
    return {k: v for k, v in os.environ.items() if k in keep}


@dataclass
class Gateway:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str, timeout: float = BOUND) -> str:
        """The log once it holds ``text`` (fails after ``timeout`` seconds)."""
        return wait_text(self.log, text, timeout)


def spawn_gateway(
    env: Mapping[str, str],
    tmp: Path,
    *,
    cwd: Path | None = None,
    args: Sequence[str] = (),
    new_session: bool = False,
    port: int | None = None,
) -> Gateway:
    """Start the gateway process with exactly ``env`` (plus a private HOME); do
    not wait for it (:func:`run_gateway` does)."""
    port = port or free_port()
    home = tmp / "home"
    home.mkdir(parents=True, exist_ok=True)
    work = cwd or tmp / "work"
    work.mkdir(parents=True, exist_ok=True)
    log_path = tmp / f"gateway-{port}.log"
    full_env = {
        **clean_env(),
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "LOG_LEVEL": "INFO",
        "MODELS_PREFETCH": "false",
        **env,
    }
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "vdm",
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                *args,
            ],
            env=full_env,
            cwd=work,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=new_session,  # its own process group, as a terminal's job
        )
    return Gateway(f"http://127.0.0.1:{port}", process, log_path)


def stop_gateway(gateway: Gateway) -> None:
    gateway.process.terminate()
    try:
        gateway.process.wait(10)
    except subprocess.TimeoutExpired:
        gateway.process.kill()
        gateway.process.wait(5)


@contextmanager
def run_gateway(
    env: Mapping[str, str],
    tmp: Path,
    *,
    cwd: Path | None = None,
    timeout: float = 20.0,
    args: Sequence[str] = (),
    new_session: bool = False,
    port: int | None = None,
) -> Iterator[Gateway]:
    """Run the gateway with exactly ``env`` (plus a private HOME) until the block ends.

    ``MODELS_PREFETCH`` defaults to ``false`` here: a start-up fetch of the
    providers' model lists would race with tests that inspect what a fake
    upstream received.  Tests of the prefetch pass ``MODELS_PREFETCH=true``.
    """
    gateway = spawn_gateway(env, tmp, cwd=cwd, args=args, new_session=new_session, port=port)
    try:
        _wait_ready(gateway, timeout)
        yield gateway
    finally:
        stop_gateway(gateway)


@contextmanager
def run_gateways(
    envs: Sequence[tuple[Mapping[str, str], Path]],
    *,
    timeout: float = 30.0,
    args: Sequence[str] = (),
) -> Iterator[list[Gateway]]:
    """Start one gateway per ``(env, tmp)`` at the same moment (all spawned before
    any is waited for), then wait until every one is ready."""
    gateways: list[Gateway] = []
    try:
        for env, tmp in envs:
            gateways.append(spawn_gateway(env, tmp, args=args))
        for gateway in gateways:
            _wait_ready(gateway, timeout)
        yield gateways
    finally:
        for gateway in gateways:
            stop_gateway(gateway)


def _wait_ready(gateway: Gateway, timeout: float) -> None:
    def ready() -> bool:
        if gateway.process.poll() is not None:
            raise RuntimeError(
                f"gateway exited with {gateway.process.returncode}:\n{gateway.log()}"
            )
        try:
            with urllib.request.urlopen(gateway.url + "/ready", timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    if not wait_for(ready, timeout, every=0.05):
        raise RuntimeError(f"gateway not ready after {timeout}s:\n{gateway.log()}")


def worker_pids(supervisor: int, count: int, timeout: float = 20.0) -> list[int]:
    """The supervisor's worker processes (not multiprocessing's resource tracker),
    once ``count`` of them run."""

    def workers() -> list[int]:
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            parent = int(stat.rpartition(")")[2].split()[1])
            if parent == supervisor and b"spawn_main" in cmdline:
                found.append(int(entry.name))
        return found

    return eventually(workers, lambda found: len(found) >= count, timeout, every=0.05)
