"""One benchmark run: fake upstream on CPU 1, gateway on CPU 0, load from CPU 1.

    python bench/run.py [--quick] [--out FILE] [--direct-only] [--stream-delay-ms MS]

Prints a Markdown table and writes JSON to bench/results/<timestamp>.json.
Exits 1 if any response failed validation, 2 if the gateway did not start.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import msgspec

from loadgen import LoadResult, run_load
from validate import Validator, validate_anthropic_json, validate_anthropic_sse

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
CLK_TCK = os.sysconf("SC_CLK_TCK")
HEADERS = {
    "content-type": "application/json",
    "anthropic-version": "2023-06-01",
    "x-api-key": "bench-client-key",
}
TARGET_CPU_JSON_MS = 1.0
TARGET_CPU_STREAM_MS = 3.0
TARGET_ADDED_P50_MS = 1.0


@dataclass(frozen=True)
class Counts:
    warmup: int
    c1: int
    c16: int
    c64: int


QUICK = Counts(warmup=150, c1=400, c16=800, c64=1500)
FULL = Counts(warmup=500, c1=1500, c16=3000, c64=6000)
PHASES = (("c1", 1), ("c16", 16), ("c64", 64))


@dataclass
class Scenario:
    name: str
    target: str  # "upstream" or "gateway"
    model: str
    stream: bool
    baseline: str | None = None
    results: dict[str, LoadResult] = field(default_factory=dict)
    warmup_errors: dict[str, int] = field(default_factory=dict)
    gateway_cpu_s: float = 0.0
    upstream_cpu_s: float = 0.0
    requests_measured: int = 0
    phase_cpu: dict[str, tuple[float, float]] = field(default_factory=dict)  # gateway, upstream

    @property
    def validator(self) -> Validator:
        return validate_anthropic_sse if self.stream else validate_anthropic_json

    @property
    def errors(self) -> int:
        return sum(r.error_count for r in self.results.values()) + sum(self.warmup_errors.values())

    def error_kinds(self) -> dict[str, int]:
        kinds: dict[str, int] = dict(self.warmup_errors)
        for r in self.results.values():
            for k, v in r.errors.items():
                kinds[k] = kinds.get(k, 0) + v
        return dict(sorted(kinds.items(), key=lambda kv: -kv[1]))


def scenarios() -> list[Scenario]:
    return [
        Scenario("direct non-stream", "upstream", "bench-model", False),
        Scenario("direct stream", "upstream", "bench-model", True),
        Scenario(
            "conversion non-stream", "gateway", "openai:bench-model", False, "direct non-stream"
        ),
        Scenario("conversion stream", "gateway", "openai:bench-model", True, "direct stream"),
        Scenario(
            "passthrough non-stream", "gateway", "ant:bench-model", False, "direct non-stream"
        ),
        Scenario("passthrough stream", "gateway", "ant:bench-model", True, "direct stream"),
    ]


def request_body(model: str, stream: bool) -> bytes:
    body: dict = {
        "model": model,
        "max_tokens": 1024,
        "system": "You are a terse assistant used for benchmarking.",
        "messages": [
            {"role": "user", "content": "Summarise the plan in one line."},
            {"role": "assistant", "content": "Measure the gateway against a direct call."},
            {"role": "user", "content": [{"type": "text", "text": "Now say hello."}]},
        ],
        "temperature": 0.2,
        "metadata": {"user_id": "bench"},
    }
    if stream:
        body["stream"] = True
    return msgspec.json.encode(body)


# --- processes and /proc -------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, ()))
    return out


def cpu_seconds(pid: int) -> float:
    """utime+stime of ``pid`` and its live descendants, in seconds."""
    total = 0
    for p in _descendants(pid):
        try:
            with open(f"/proc/{p}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(b")") + 2 :].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / CLK_TCK


def memory_kb(pid: int) -> dict[str, int]:
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


def pinned(cpu: int | None, argv: list[str]) -> list[str]:
    if cpu is None or not shutil.which("taskset"):
        return argv
    return ["taskset", "-c", str(cpu), *argv]


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


# --- async parts --------------------------------------------------------------------


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


async def first_request(url: str) -> tuple[list[str], str]:
    body = request_body("openai:bench-model", False)
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=body, headers=HEADERS) as resp,
    ):
        data = await resp.read()
        ctype = resp.headers.get("content-type", "")
        return validate_anthropic_json(resp.status, ctype, data), data[:2000].decode(
            "utf-8", "replace"
        )


async def run_scenario(
    sc: Scenario, url: str, counts: Counts, gw_pid: int | None, up_pid: int
) -> None:
    body = request_body(sc.model, sc.stream)
    warm = await run_load(
        url,
        body,
        HEADERS,
        n=counts.warmup,
        concurrency=16,
        stream=sc.stream,
        validator=sc.validator,
    )
    sc.warmup_errors = dict(warm.errors)
    if warm.sample_failure:
        sc.results["warmup"] = warm
    probes = {"upstream_cpu_s": lambda: cpu_seconds(up_pid)}
    if gw_pid:
        probes["gateway_cpu_s"] = lambda: cpu_seconds(gw_pid)
    for phase, conc in PHASES:
        n = getattr(counts, phase)
        res = await run_load(
            url,
            body,
            HEADERS,
            n=n,
            concurrency=conc,
            stream=sc.stream,
            validator=sc.validator,
            warmup=2 * conc,
            probes=probes,
        )
        gw_cpu = res.probes.get("gateway_cpu_s", 0.0)
        up_cpu = res.probes["upstream_cpu_s"]
        sc.phase_cpu[phase] = (gw_cpu, up_cpu)
        sc.results[phase] = res
        sc.gateway_cpu_s += gw_cpu
        sc.upstream_cpu_s += up_cpu
        sc.requests_measured += n


# --- report -------------------------------------------------------------------------


def _ms(v: float | None, digits: int = 3) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def scenario_row(sc: Scenario, by_name: dict[str, Scenario]) -> dict:
    s1 = sc.results["c1"].summary()
    s16 = sc.results["c16"].summary()
    r64 = sc.results["c64"]
    s64 = r64.summary()
    added = None
    if sc.baseline and sc.baseline in by_name:
        base = by_name[sc.baseline].results["c1"].summary()["p50_ms"]
        if base is not None and s1["p50_ms"] is not None:
            added = round(s1["p50_ms"] - base, 4)
    cpu_ms = (
        round(sc.gateway_cpu_s * 1000 / sc.requests_measured, 4)
        if sc.target == "gateway" and sc.requests_measured
        else None
    )
    gw64, up64 = sc.phase_cpu.get("c64", (0.0, 0.0))
    gw_util = gw64 / r64.elapsed if r64.elapsed else None
    client_util = (r64.client_cpu + up64) / r64.elapsed if r64.elapsed else None
    return {
        "scenario": sc.name,
        "target": sc.target,
        "model": sc.model,
        "stream": sc.stream,
        "rps_c64": s64["rps"],
        "p50_c1_ms": s1["p50_ms"],
        "p99_c1_ms": s1["p99_ms"],
        "p50_c16_ms": s16["p50_ms"],
        "p99_c16_ms": s16["p99_ms"],
        "added_p50_c1_ms": added,
        "gateway_cpu_ms_per_req": cpu_ms,
        "upstream_cpu_ms_per_req": round(sc.upstream_cpu_s * 1000 / sc.requests_measured, 4),
        "ttfc_p50_c1_ms": s1["ttfc_p50_ms"],
        "ttfc_p50_c16_ms": s16["ttfc_p50_ms"],
        "gateway_cpu_ms_per_req_by_phase": (
            {k: round(g * 1000 / sc.results[k].requests, 4) for k, (g, _) in sc.phase_cpu.items()}
            if sc.target == "gateway"
            else None
        ),
        "c64_gateway_cpu_util": None if gw_util is None else round(gw_util, 3),
        "c64_cpu1_util": None if client_util is None else round(client_util, 3),
        "errors": sc.errors,
        "error_kinds": sc.error_kinds(),
        "phases": {k: r.summary() for k, r in sc.results.items()},
    }


def markdown(rows: list[dict]) -> str:
    out = [
        "| scenario | req/s@64 | p50@1 ms | p99@1 ms | p50@16 ms | added p50@1 ms "
        "| CPU ms/req | TTFC p50 ms | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        rps = "—" if r["rps_c64"] is None else f"{r['rps_c64']:.0f}"
        if (
            r["c64_cpu1_util"] is not None
            and r["c64_cpu1_util"] > 0.9
            and (r["target"] == "upstream" or (r["c64_gateway_cpu_util"] or 0) < 0.9)
        ):
            rps += "†"
        out.append(
            f"| {r['scenario']} | {rps} | {_ms(r['p50_c1_ms'])} | {_ms(r['p99_c1_ms'])} "
            f"| {_ms(r['p50_c16_ms'])} | {_ms(r['added_p50_c1_ms'])} "
            f"| {_ms(r['gateway_cpu_ms_per_req'])} "
            f"| {_ms(r['ttfc_p50_c1_ms']) if r['stream'] else '—'} | {r['errors']} |"
        )
    return "\n".join(out)


def targets(rows: list[dict]) -> list[dict]:
    checks = []
    for r in rows:
        if r["target"] != "gateway":
            continue
        limit = TARGET_CPU_STREAM_MS if r["stream"] else TARGET_CPU_JSON_MS
        what = "20-chunk stream" if r["stream"] else "non-stream request"
        for name, value, lim in (
            (f"CPU ms per {what}", r["gateway_cpu_ms_per_req"], limit),
            ("added p50@1 ms", r["added_p50_c1_ms"], TARGET_ADDED_P50_MS),
        ):
            checks.append(
                {
                    "scenario": r["scenario"],
                    "check": f"{name} ≤ {lim:g}",
                    "value": value,
                    "ok": value is not None and value <= lim,
                }
            )
    return checks


# --- main ---------------------------------------------------------------------------


async def bench(
    args: argparse.Namespace,
    counts: Counts,
    up: tuple[subprocess.Popen, int, Path],
    gw: tuple[subprocess.Popen, int, Path, float] | None,
) -> dict:
    up_proc, up_port, up_log = up
    await wait_http(f"http://127.0.0.1:{up_port}/health", up_proc, 15, up_log)
    report: dict = {"gateway": None}
    gw_pid = None
    if gw is not None:
        gw_proc, gw_port, gw_log, t_spawn = gw
        gw_pid = gw_proc.pid
        await wait_http(f"http://127.0.0.1:{gw_port}/ready", gw_proc, 60, gw_log)
        t_ready = time.perf_counter() - t_spawn
        mem_ready = memory_kb(gw_pid)
        errs, sample = await first_request(f"http://127.0.0.1:{gw_port}/v1/messages")
        t_first = time.perf_counter() - t_spawn
        await asyncio.sleep(0.5)  # settle before the idle figure
        mem_idle = memory_kb(gw_pid)
        report["gateway"] = {
            "pid": gw_pid,
            "cold_start_ready_s": round(t_ready, 3),
            "cold_start_first_request_s": round(t_first, 3),
            "first_request_errors": errs,
            "first_request_sample": sample if errs else None,
            "rss_ready_kb": mem_ready.get("VmRSS"),
            "rss_idle_kb": mem_idle.get("VmRSS"),
        }
    rows_sc = [s for s in scenarios() if gw is not None or s.target == "upstream"]
    for sc in rows_sc:
        port = up_port if sc.target == "upstream" else gw[1]  # type: ignore[index]
        url = f"http://127.0.0.1:{port}/v1/messages"
        print(f"  {sc.name} ...", end="", flush=True, file=sys.stderr)
        t0 = time.perf_counter()
        await run_scenario(sc, url, counts, gw_pid, up_proc.pid)
        print(f" {time.perf_counter() - t0:.1f} s, {sc.errors} errors", file=sys.stderr)
    if gw_pid is not None:
        mem = memory_kb(gw_pid)
        report["gateway"]["rss_after_kb"] = mem.get("VmRSS")
        report["gateway"]["peak_rss_kb"] = mem.get("VmHWM")
    by_name = {s.name: s for s in rows_sc}
    report["scenarios"] = [scenario_row(s, by_name) for s in rows_sc]
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description="vdm gateway benchmark")
    parser.add_argument("--quick", action="store_true", help="small request counts (< 40 s)")
    parser.add_argument("--out", type=Path, help="JSON output (default bench/results/<ts>.json)")
    parser.add_argument("--direct-only", action="store_true", help="benchmark only the upstream")
    parser.add_argument(
        "--stream-delay-ms", type=float, default=0.0, help="upstream delay between stream events"
    )
    args = parser.parse_args()
    counts = QUICK if args.quick else FULL

    ncpu = len(os.sched_getaffinity(0))
    gw_cpu, client_cpu = (0, 1) if ncpu >= 2 and shutil.which("taskset") else (None, None)
    if client_cpu is None:
        print("warning: fewer than 2 CPUs or no taskset: not pinning", file=sys.stderr)
    else:
        os.sched_setaffinity(0, {client_cpu})

    up_port, gw_port = free_port(), free_port()
    tmp = Path(tempfile.mkdtemp(prefix="vdm-bench-"))
    up_log, gw_log = tmp / "upstream.log", tmp / "gateway.log"
    up_proc = gw_proc = None
    report: dict = {}
    exit_code = 0
    try:
        with open(up_log, "wb") as log:
            up_proc = subprocess.Popen(
                pinned(
                    client_cpu,
                    [
                        sys.executable,
                        str(BENCH / "upstream.py"),
                        "--port",
                        str(up_port),
                        "--chunk-delay-ms",
                        str(args.stream_delay_ms),
                    ],
                ),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        gw = None
        if not args.direct_only:
            home = tmp / "home"
            cwd = tmp / "cwd"
            home.mkdir()
            cwd.mkdir()
            env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TZ")}
            env.update(
                HOME=str(home),
                OPENAI_API_KEY="bench-key",
                OPENAI_BASE_URL=f"http://127.0.0.1:{up_port}/v1",
                ANT_API_KEY="bench-key",
                ANT_API_FORMAT="anthropic",
                ANT_BASE_URL=f"http://127.0.0.1:{up_port}",
                VDM_DEFAULT_PROVIDER="openai",
                LOG_LEVEL="WARNING",
                PYTHONUNBUFFERED="1",
            )
            with open(gw_log, "wb") as log:
                t_spawn = time.perf_counter()
                gw_proc = subprocess.Popen(
                    pinned(
                        gw_cpu,
                        [
                            sys.executable,
                            "-m",
                            "vdm",
                            "server",
                            "start",
                            "--host",
                            "127.0.0.1",
                            "--port",
                            str(gw_port),
                        ],
                    ),
                    cwd=cwd,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            gw = (gw_proc, gw_port, gw_log, t_spawn)
        try:
            import uvloop

            runner = uvloop.run
        except ImportError:  # pragma: no cover
            runner = asyncio.run
        print(
            f"bench ({'quick' if args.quick else 'full'}): upstream :{up_port} on CPU {client_cpu}"
            + ("" if gw is None else f", gateway :{gw_port} on CPU {gw_cpu}"),
            file=sys.stderr,
        )
        try:
            report = runner(bench(args, counts, (up_proc, up_port, up_log), gw))
        except StartupFailed as exc:
            print(f"gateway failed to start: {exc}", file=sys.stderr)
            return 2
    finally:
        stop(gw_proc)
        stop(up_proc)
        gw_tail = tail(gw_log, 40)
        shutil.rmtree(tmp, ignore_errors=True)

    rows = report["scenarios"]
    checks = targets(rows)
    total_errors = sum(r["errors"] for r in rows)
    g = report.get("gateway")
    if g:
        total_errors += len(g["first_request_errors"])
    report.update(
        {
            "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "mode": "quick" if args.quick else "full",
            "counts": counts.__dict__,
            "git": git_rev(),
            "machine": {
                "python": platform.python_version(),
                "platform": platform.platform(),
                "cpus": os.cpu_count(),
                "pinned": client_cpu is not None,
                "clk_tck": CLK_TCK,
            },
            "stream_delay_ms": args.stream_delay_ms,
            "targets": checks,
            "total_errors": total_errors,
        }
    )

    print()
    print(markdown(rows))
    print()
    print(
        "Latencies in ms (client-observed, aiohttp client); added = p50@1 minus the direct "
        "call of the same kind; CPU ms/req = gateway utime+stime / requests; TTFC = time to "
        "the first text delta at concurrency 1."
    )
    if any("†" in line for line in markdown(rows).splitlines()):
        print("† req/s limited by CPU 1 (load generator + upstream ≥ 90% busy), not the gateway.")
    if g:
        print(
            f"Gateway cold start: /ready after {g['cold_start_ready_s']:.3f} s, first POST "
            f"/v1/messages served after {g['cold_start_first_request_s']:.3f} s"
        )
        print(
            f"Gateway RSS: {g['rss_idle_kb'] / 1024:.1f} MiB idle (after ready + 1 request), "
            f"{g['rss_after_kb'] / 1024:.1f} MiB after load, "
            f"peak (VmHWM) {g['peak_rss_kb'] / 1024:.1f} MiB"
        )
        if g["first_request_errors"]:
            print(f"First request errors: {g['first_request_errors']}")
    if checks:
        print()
        print("Targets:")
        for c in checks:
            mark = "PASS" if c["ok"] else "FAIL"
            print(f"- {mark} {c['scenario']}: {c['check']} (got {_ms(c['value'])})")
    if total_errors:
        print()
        print(f"VALIDATION ERRORS: {total_errors}")
        for r in rows:
            for kind, n in list(r["error_kinds"].items())[:8]:
                print(f"- {r['scenario']}: {n} x {kind}")
            samples = [p["sample_failure"] for p in r["phases"].values() if p["sample_failure"]]
            if samples:
                print(f"  sample failing body ({r['scenario']}):")
                print("  " + samples[0][:1500].replace("\n", "\n  "))
        if gw_tail:
            print("gateway log tail:")
            print(gw_tail)
        exit_code = 1

    out = args.out
    if out is None:
        RESULTS.mkdir(parents=True, exist_ok=True)
        out = RESULTS / (dt.datetime.now().strftime("%Y%m%d-%H%M%S") + ".json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(f"\nJSON: {out}")
    return exit_code


if __name__ == "__main__":
    raise SystemExit(main())
