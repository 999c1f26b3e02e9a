"""A gateway process seen from outside: pid files, ports, readiness.

The pid file holds the pid alone (what every tool expects); beside it,
``<pid file>.json`` records what ``status``, ``stop`` and ``restart`` need to
know of the run: URL, host, port, workers, log file, start time, and the
start's other options (gRPC port, systemd), which ``restart`` repeats.  A pid file
whose process is gone (or is no longer a vdm) is *stale*: start replaces it,
status reports it.

Who holds a port is read from ``/proc`` (Linux): the listening socket's inode
in ``/proc/net/tcp{,6}``, then the process with that inode among its fds.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


def state_dir(env: dict[str, str] | os._Environ[str] = os.environ) -> Path:
    """Where logs and (without a runtime dir) the pid file go: $XDG_STATE_HOME/vdm."""
    base = env.get("XDG_STATE_HOME") or str(
        Path(env.get("HOME", "~")).expanduser() / ".local" / "state"
    )
    return Path(base) / "vdm"


def default_pid_file(env: dict[str, str] | os._Environ[str] = os.environ) -> Path:
    """$XDG_RUNTIME_DIR/vdm/vdm.pid, else $XDG_STATE_HOME/vdm/vdm.pid."""
    runtime = env.get("XDG_RUNTIME_DIR")
    return (Path(runtime) / "vdm" if runtime else state_dir(env)) / "vdm.pid"


def default_log_file(env: dict[str, str] | os._Environ[str] = os.environ) -> Path:
    return state_dir(env) / "vdm.log"


@dataclass
class RunInfo:
    """What a running gateway wrote about itself."""

    pid: int
    host: str
    port: int
    workers: int = 1
    log_file: str | None = None
    started: float = 0.0
    # The rest of the start's options, so that `restart` repeats them.
    grpc_port: int | None = None
    systemd: bool = False

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        host = "[::1]" if host == "::" else (f"[{host}]" if ":" in host else host)
        return f"http://{host}:{self.port}"


def _info_path(pid_file: Path) -> Path:
    return pid_file.with_name(pid_file.name + ".json")


def write_pid_file(pid_file: Path, info: RunInfo) -> None:
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    _info_path(pid_file).write_text(json.dumps(asdict(info)))
    pid_file.write_text(f"{info.pid}\n")


def remove_pid_file(pid_file: Path, pid: int | None = None) -> None:
    """Remove the pid file (only if it still names ``pid``, when given)."""
    if pid is not None and read_pid(pid_file) != pid:
        return
    for path in (pid_file, _info_path(pid_file)):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def read_pid(pid_file: Path) -> int | None:
    try:
        text = pid_file.read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return int(text) if text.isdigit() else None


def read_info(pid_file: Path) -> RunInfo | None:
    pid = read_pid(pid_file)
    if pid is None:
        return None
    try:
        data: dict[str, Any] = json.loads(_info_path(pid_file).read_text())
        return RunInfo(**{**data, "pid": pid})
    except (OSError, ValueError, TypeError):
        return RunInfo(pid=pid, host="127.0.0.1", port=0)


def alive(pid: int) -> bool:
    """The process exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc: trust kill(0)
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def command_line(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def is_gateway(pid: int) -> bool:
    """A live process that is a vdm server (where /proc can tell)."""
    if not alive(pid):
        return False
    line = command_line(pid)
    return not line or "vdm" in line


def live_info(pid_file: Path) -> tuple[RunInfo | None, bool]:
    """(the run the pid file names, whether that file is stale)."""
    info = read_info(pid_file)
    if info is None:
        return None, False
    if is_gateway(info.pid):
        return info, False
    return None, True


def port_free(host: str, port: int) -> bool:
    """Whether uvicorn could bind ``host:port`` now (it sets SO_REUSEADDR too)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def port_owner(port: int) -> tuple[int, str] | None:
    """(pid, command line) of the process listening on ``port``, if /proc tells."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if (
                len(fields) > 9
                and fields[3] == "0A"
                and int(fields[1].rsplit(":", 1)[1], 16) == port
            ):
                inodes.add(fields[9])
    if not inodes:
        return None
    targets = {f"socket:[{inode}]" for inode in inodes}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (proc / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in targets:
                        pid = int(proc.name)
                        return pid, command_line(pid)
    return None


def get_json(url: str, *, key: str | None = None, timeout: float = 3.0) -> tuple[int, Any]:
    """(status, decoded JSON) of a GET; raises OSError when nothing answers."""
    request = urllib.request.Request(url, headers={"x-api-key": key} if key else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        with contextlib.suppress(ValueError):
            return exc.code, json.load(exc)
        return exc.code, None


def ready(url: str) -> bool:
    try:
        return get_json(url + "/ready", timeout=1.0)[0] == 200
    except (OSError, ValueError):
        return False


def wait_ready(url: str, pid: int, timeout: float) -> bool:
    """Wait until ``/ready`` answers 200; False if the process died or time ran out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return False
        if ready(url):
            return True
        time.sleep(0.1)  # a CLI waiting for a child process: blocking is the point
    return False


def terminate(pid: int, timeout: float) -> bool:
    """SIGTERM (the graceful drain), then SIGKILL after ``timeout``; True if it
    ended within the drain."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return False
