"""What every benchmark script shares: the processes, /proc readings, pinning.

``run.py``, ``memory.py`` and ``workers.py`` start the same fake upstream and
the same gateway the same way, so their numbers are comparable; this module is
the one place that knows how (environment, CPU pinning, readiness polling).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

BENCH = Path(__file__).resolve().parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
ANTHROPIC_HEADERS = {
    "content-type": "application/json",
    "anthropic-version": "2023-06-01",
    "x-api-key": "bench-client-key",
}
OPENAI_HEADERS = {
    "content-type": "application/json",
    "authorization": "Bearer bench-client-key",
}


# --- /proc ------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[bytes] | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # The command name may contain spaces and parentheses: split after the last ")".
    return stat[stat.rindex(b")") + 2 :].split()


def descendants(pid: int) -> list[int]:
    """``pid`` and all its live descendants (uvicorn workers, spawned helpers)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, ()))
    return out


def cpu_seconds_of(pid: int) -> float:
    """utime+stime of one process, in seconds (10 ms resolution at CLK_TCK=100)."""
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (stat fields 14, 15)


def cpu_seconds(pid: int) -> float:
    """utime+stime of ``pid`` and its live descendants, in seconds."""
    return sum(cpu_seconds_of(p) for p in descendants(pid))


def _machine_jiffies() -> list[int]:
    with open("/proc/stat", "rb") as f:
        # cpu  user nice system idle iowait irq softirq steal ...
        return [int(x) for x in f.readline().split()[1:9]]


def machine_busy_seconds() -> float:
    """CPU seconds spent by everything on the machine (all CPUs, not idle or iowait).
    Minus the benchmark's own processes, it is the other load that makes a run noisy."""
    user, nice, system, _idle, _iowait, irq, softirq, _steal = _machine_jiffies()
    return (user + nice + system + irq + softirq) / CLK_TCK


def steal_seconds() -> float:
    """CPU seconds the hypervisor gave to other guests while ours wanted to run."""
    return _machine_jiffies()[7] / CLK_TCK


def memory_kb(pid: int) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` (peak RSS) of one process, in KiB."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    name, value = line.split(":", 1)
                    out[name] = int(value.split()[0])
    except OSError:
        pass
    return out


def machine() -> dict[str, Any]:
    """What the numbers were measured on (for the JSON and docs/performance.md)."""
    model = None
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "clk_tck": CLK_TCK,
    }


# --- processes ----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pinned(cpu: int | None, argv: list[str]) -> list[str]:
    if cpu is None or not shutil.which("taskset"):
        return argv
    return ["taskset", "-c", str(cpu), *argv]


def cpu_layout() -> tuple[int | None, int | None]:
    """``(gateway_cpu, client_cpu)``: CPU 0 and CPU 1, or ``(None, None)`` when
    there are fewer than two CPUs or no ``taskset`` (then nothing is pinned)."""
    ncpu = len(os.sched_getaffinity(0))
    if ncpu >= 2 and shutil.which("taskset"):
        return 0, 1
    print("warning: fewer than 2 CPUs or no taskset: not pinning", file=sys.stderr)
    return None, None


def stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def git_rev() -> str | None:
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=BENCH, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"], cwd=BENCH, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return None
    return f"{rev}{'+dirty' if dirty else ''}" if rev else None


@dataclass
class Proc:
    proc: subprocess.Popen
    port: int
    log: Path
    t_spawn: float  # perf_counter() right before the spawn

    @property
    def pid(self) -> int:
        return self.proc.pid

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


def start_upstream(tmp: Path, cpu: int | None, *, chunk_delay_ms: float = 0.0) -> Proc:
    port, log_path = free_port(), tmp / "upstream.log"
    argv = [sys.executable, str(BENCH / "upstream.py"), "--port", str(port)]
    argv += ["--chunk-delay-ms", str(chunk_delay_ms)]
    with open(log_path, "wb") as log:
        t = time.perf_counter()
        proc = subprocess.Popen(
            pinned(cpu, argv), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    return Proc(proc, port, log_path, t)


def gateway_env(home: Path, upstream_port: int) -> dict[str, str]:
    """A clean environment: two providers on the fake upstream, ``openai``
    (OpenAI format) and ``ant`` (Anthropic format), nothing from the user's
    but ``PYTHONPATH`` (``PYTHONPATH=/tmp/old/src`` benchmarks another tree)."""
    keep = ("PATH", "LANG", "LC_ALL", "TZ", "PYTHONPATH")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env.update(
        HOME=str(home),
        OPENAI_API_KEY="bench-key",
        OPENAI_BASE_URL=f"http://127.0.0.1:{upstream_port}/v1",
        ANT_API_KEY="bench-key",
        ANT_API_FORMAT="anthropic",
        ANT_BASE_URL=f"http://127.0.0.1:{upstream_port}",
        VDM_DEFAULT_PROVIDER="openai",
        LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
    )
    return env


def start_gateway(
    tmp: Path,
    cpu: int | None,
    upstream_port: int,
    *,
    workers: int = 1,
    extra_env: dict[str, str] | None = None,
) -> Proc:
    """``python -m vdm server start`` with its own temp ``HOME`` and cwd.  With
    ``cpu`` set, the gateway (all its workers) is confined to that one CPU;
    ``extra_env`` adds settings (``MAX_CONNECTIONS``, ...)."""
    home, cwd = tmp / "home", tmp / "cwd"
    home.mkdir(exist_ok=True)
    cwd.mkdir(exist_ok=True)
    port, log_path = free_port(), tmp / "gateway.log"
    argv = [sys.executable, "-m", "vdm", "server", "start", "--host", "127.0.0.1"]
    argv += ["--port", str(port)]
    if workers != 1:
        argv += ["--workers", str(workers)]
    with open(log_path, "wb") as log:
        t = time.perf_counter()
        proc = subprocess.Popen(
            pinned(cpu, argv),
            cwd=cwd,
            env={**gateway_env(home, upstream_port), **(extra_env or {})},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Proc(proc, port, log_path, t)


def start_floor(tmp: Path, cpu: int | None, upstream_port: int) -> Proc:
    """``bench/floor.py``, the reference floor proxy, on the gateway's CPU."""
    port, log_path = free_port(), tmp / "floor.log"
    argv = [sys.executable, str(BENCH / "floor.py"), "--port", str(port)]
    argv += ["--upstream", f"http://127.0.0.1:{upstream_port}/v1"]
    argv += ["--anthropic", f"http://127.0.0.1:{upstream_port}"]
    with open(log_path, "wb") as log:
        t = time.perf_counter()
        proc = subprocess.Popen(
            pinned(cpu, argv), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    return Proc(proc, port, log_path, t)


class StartupFailed(Exception):
    pass


async def wait_http(url: str, proc: subprocess.Popen, limit_s: float, log: Path) -> float:
    """Poll ``GET url`` until 200; return the time it took (monotonic clock)."""
    t0 = time.perf_counter()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while True:
            if proc.poll() is not None:
                raise StartupFailed(f"exited with {proc.returncode}:\n{tail(log)}")
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                async with session.get(url) as resp:
                    await resp.read()
                    if resp.status == 200:
                        return time.perf_counter() - t0
            if time.perf_counter() - t0 > limit_s:
                raise StartupFailed(f"{url} not ready after {limit_s:.0f} s:\n{tail(log)}")
            await asyncio.sleep(0.005)


def run_async(main: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """Run ``main()`` on uvloop when it is installed (as the gateway does)."""
    try:
        import uvloop

        return uvloop.run(main())
    except ImportError:  # pragma: no cover
        return asyncio.run(main())
