"""Long-lived streams through one gateway process on one core: how many it holds.

    python bench/streams.py [--streams 1000,5000] [--ramp 0] [--delay-ms 250]
                            [--conversion] [--direct] [--upstream-max-connections N]
                            [--out FILE]

For each count N, a fresh gateway (one process, pinned to CPU 0) gets N Anthropic
Messages streams at once (``--ramp S``: their starts spread evenly over S seconds),
each answered by ``bench/upstream.py`` with its 26 SSE events (20 text deltas)
``--delay-ms`` apart: 250 ms, as a coding agent's model streams, so a stream lasts
about 6.25 s and they all overlap.  The model is ``ant:bench-model`` (passthrough to
the Anthropic-format upstream), or ``openai:bench-model`` with ``--conversion``.
``--direct`` adds a row straight to the upstream: the harness's own floor.

The client is a raw asyncio protocol per stream (no HTTP library: reading 20,000
chunks a second must not be what limits the figures); it runs with the upstream on
CPU 1.  Reported per run:

* completed streams and errors (every body through the strict Anthropic SSE
  validator, after the timed section);
* first-byte delay: from the client's connect to the first byte of the answer's
  body (the first SSE event), p50 and p99; and stream duration p50 / p99;
* the gateway's RSS once warm and idle, its peak during the run (VmRSS sampled every
  100 ms), and the difference per stream;
* the gateway's CPU seconds over the run (utime + stime from ``/proc``), per stream
  and as a share of its one core;
* the requests that waited for an upstream connection (``/metrics``:
  ``vdm_upstream_connection_wait_seconds``);
* the CPU seconds of the harness (upstream and client) and of everything else on
  the machine over the run: on a shared machine, the noise to read the rest against.

The gateway's ``MAX_CONNECTIONS`` is set above N (the default, 2,048, refuses more
client connections); ``UPSTREAM_MAX_CONNECTIONS`` is its default (1,024) unless
``--upstream-max-connections`` says otherwise.  The script raises its own
file-descriptor limit to the hard limit (its children inherit it): N streams need N
descriptors in the client and in the upstream, and 2 N in the gateway.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import resource
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from harness import (
    ANTHROPIC_HEADERS,
    Proc,
    cpu_layout,
    cpu_seconds,
    git_rev,
    machine,
    machine_busy_seconds,
    memory_kb,
    run_async,
    start_gateway,
    start_upstream,
    stop,
    wait_http,
)
from loadgen import percentile
from validate import validate_anthropic_sse

WARMUP_STREAMS = 20


def raise_file_limit() -> int:
    """The soft ``RLIMIT_NOFILE`` raised to the hard one; the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = 1 << 20 if hard == resource.RLIM_INFINITY else hard
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return soft


def stream_request(port: int, model: str) -> bytes:
    body = json.dumps(
        {
            "model": model,
            "max_tokens": 64,
            "stream": True,
            "messages": [{"role": "user", "content": "Say hello."}],
        }
    ).encode()
    head = ["POST /v1/messages HTTP/1.1", f"host: 127.0.0.1:{port}"]
    head += [f"{k}: {v}" for k, v in ANTHROPIC_HEADERS.items()]
    head += [f"content-length: {len(body)}", "connection: close"]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class Stream(asyncio.Protocol):
    """One streamed request on its own connection (``connection: close``): the
    times it was opened, its body's first byte came and its last byte came."""

    def __init__(self, request: bytes, done: asyncio.Future[None], opened: float) -> None:
        self.request = request
        self.done = done
        self.opened = opened
        self.parts: list[bytes] = []
        self.first: float | None = None
        self.last = 0.0
        self._head = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        self.parts.append(data)
        self.last = now
        if self._head:
            whole = b"".join(self.parts)
            end = whole.find(b"\r\n\r\n")
            if end >= 0:
                self._head = False
                if len(whole) > end + 4:
                    self.first = now
        elif self.first is None:
            self.first = now

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)

    def result(self) -> tuple[int, str, bytes]:
        """Status, content type and the (de-chunked) body."""
        whole = b"".join(self.parts)
        head, _, body = whole.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        try:
            status = int(lines[0].split()[1])
        except (IndexError, ValueError):
            return 0, "", whole
        headers = {
            k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])
        }
        if headers.get("transfer-encoding") == "chunked":
            body = dechunk(body)
        return status, headers.get("content-type", ""), body


def dechunk(data: bytes) -> bytes:
    out, at = [], 0
    while True:
        end = data.find(b"\r\n", at)
        if end < 0:
            return b"".join(out)
        size = int(data[at:end].split(b";")[0] or b"0", 16)
        if size == 0:
            return b"".join(out)
        out.append(data[end + 2 : end + 2 + size])
        at = end + 2 + size + 2


async def one(
    port: int, request: bytes, start_at: float, results: list[Stream], errors: list[str]
) -> None:
    loop = asyncio.get_running_loop()
    delay = start_at - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)
    done: asyncio.Future[None] = loop.create_future()
    opened = time.perf_counter()
    stream = Stream(request, done, opened)
    try:
        await loop.create_connection(lambda: stream, "127.0.0.1", port)
        await asyncio.wait_for(done, 300)
    except (OSError, TimeoutError) as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
        return
    results.append(stream)


async def run_streams(port: int, model: str, count: int, ramp: float) -> dict[str, Any]:
    request = stream_request(port, model)
    results: list[Stream] = []
    errors: list[str] = []
    t0 = time.perf_counter()
    starts = [t0 + (ramp * i / count if ramp else 0.0) for i in range(count)]
    await asyncio.gather(*(one(port, request, s, results, errors) for s in starts))
    wall = time.perf_counter() - t0
    kinds: dict[str, int] = {}
    for e in errors:
        kinds[e.split(":")[0]] = kinds.get(e.split(":")[0], 0) + 1
    first, duration = [], []
    for s in results:
        status, ctype, body = s.result()
        problems = validate_anthropic_sse(status, ctype, body)
        if problems:
            key = f"HTTP {status}: {problems[0][:80]}"
            kinds[key] = kinds.get(key, 0) + 1
            continue
        assert s.first is not None
        first.append(s.first - s.opened)
        duration.append(s.last - s.opened)
    return {
        "completed": len(first),
        "errors": count - len(first),
        "error_kinds": kinds,
        "wall_s": wall,
        "first_byte_p50_ms": _ms(percentile(first, 50)),
        "first_byte_p99_ms": _ms(percentile(first, 99)),
        "first_byte_max_ms": _ms(max(first, default=None)),
        "duration_p50_s": percentile(duration, 50),
        "duration_p99_s": percentile(duration, 99),
    }


def harness(upstream: Proc) -> float:
    """CPU seconds of the upstream and this client so far."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    return cpu_seconds(upstream.pid) + own.ru_utime + own.ru_stime


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


async def sample_rss(pid: int, stop_event: asyncio.Event, peak: list[int]) -> None:
    while not stop_event.is_set():
        peak[0] = max(peak[0], memory_kb(pid).get("VmRSS", 0))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop_event.wait(), 0.1)


async def pool_waits(url: str) -> tuple[float, float]:
    """(count, sum) of ``vdm_upstream_connection_wait_seconds`` over every provider."""
    import aiohttp
    from prometheus_client.parser import text_string_to_metric_families

    async with aiohttp.ClientSession() as session, session.get(url) as response:
        text = await response.text()
    count = total = 0.0
    for family in text_string_to_metric_families(text):
        if family.name == "vdm_upstream_connection_wait_seconds":
            for s in family.samples:
                if s.name.endswith("_count"):
                    count += s.value
                elif s.name.endswith("_sum"):
                    total += s.value
    return count, total


@dataclass
class Row:
    target: str
    streams: int
    ramp_s: float
    upstream_max_connections: int | None
    figures: dict[str, Any] = field(default_factory=dict)


async def measure_gateway(
    tmp: Path, upstream: Proc, cpu: int | None, args: argparse.Namespace, count: int
) -> Row:
    env = {"MAX_CONNECTIONS": str(count + 256)}
    if args.upstream_max_connections:
        env["UPSTREAM_MAX_CONNECTIONS"] = str(args.upstream_max_connections)
    run_dir = tmp / f"gateway-{count}"
    run_dir.mkdir()
    gateway = start_gateway(run_dir, cpu, upstream.port, extra_env=env)
    row = Row("gateway", count, args.ramp, args.upstream_max_connections)
    model = "openai:bench-model" if args.conversion else "ant:bench-model"
    try:
        await wait_http(gateway.url("/ready"), gateway.proc, 30, gateway.log)
        warm = await run_streams(gateway.port, model, WARMUP_STREAMS, 0)
        if warm["errors"]:
            raise SystemExit(f"warm-up failed: {warm['error_kinds']}")
        idle_kb = memory_kb(gateway.pid).get("VmRSS", 0)
        waits_before = await pool_waits(gateway.url("/metrics"))
        peak = [idle_kb]
        stop_sampling = asyncio.Event()
        sampler = asyncio.create_task(sample_rss(gateway.pid, stop_sampling, peak))
        cpu0, busy0, harness0 = cpu_seconds(gateway.pid), machine_busy_seconds(), harness(upstream)
        figures = await run_streams(gateway.port, model, count, args.ramp)
        cpu1, busy1, harness1 = cpu_seconds(gateway.pid), machine_busy_seconds(), harness(upstream)
        stop_sampling.set()
        await sampler
        waits_after = await pool_waits(gateway.url("/metrics"))
        gateway_cpu = cpu1 - cpu0
        figures.update(
            rss_idle_mb=idle_kb / 1024,
            rss_peak_mb=peak[0] / 1024,
            rss_per_stream_kb=(peak[0] - idle_kb) / count,
            gateway_cpu_s=gateway_cpu,
            gateway_cpu_ms_per_stream=gateway_cpu * 1000 / count,
            gateway_core_share=gateway_cpu / figures["wall_s"],
            harness_cpu_s=harness1 - harness0,
            other_cpu_s=(busy1 - busy0) - gateway_cpu - (harness1 - harness0),
            connection_waits=waits_after[0] - waits_before[0],
            connection_wait_s=waits_after[1] - waits_before[1],
        )
        row.figures = figures
    finally:
        stop(gateway.proc)
    return row


async def measure_direct(upstream: Proc, args: argparse.Namespace, count: int) -> Row:
    row = Row("direct", count, args.ramp, None)
    row.figures = await run_streams(upstream.port, "bench-model", count, args.ramp)
    return row


def table(rows: list[Row]) -> str:
    out = [
        "| target | streams | ramp | upstream max-conn | done / errors | first byte p50 / p99 "
        "| duration p50 / p99 | RSS idle → peak | per stream | CPU | CPU / stream "
        "| core busy | conn. waits | harness / other CPU |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        f = r.figures

        def num(key: str, fmt: str, f: dict[str, Any] = f) -> str:
            return "-" if f.get(key) is None else format(f[key], fmt)

        out.append(
            f"| {r.target} | {r.streams:,} | {r.ramp_s:g} s "
            f"| {r.upstream_max_connections or ('default' if r.target == 'gateway' else '-')} "
            f"| {f['completed']:,} / {f['errors']:,} "
            f"| {num('first_byte_p50_ms', '.1f')} / {num('first_byte_p99_ms', '.1f')} ms "
            f"| {num('duration_p50_s', '.2f')} / {num('duration_p99_s', '.2f')} s "
            f"| {num('rss_idle_mb', '.0f')} → {num('rss_peak_mb', '.0f')} MB "
            f"| {num('rss_per_stream_kb', '.0f')} KB "
            f"| {num('gateway_cpu_s', '.2f')} s | {num('gateway_cpu_ms_per_stream', '.2f')} ms "
            f"| {num('gateway_core_share', '.0%')} "
            f"| {num('connection_waits', '.0f')} "
            f"| {num('harness_cpu_s', '.1f')} / {num('other_cpu_s', '.1f')} s |"
        )
    return "\n".join(out)


async def main_async(args: argparse.Namespace) -> list[Row]:
    counts = [int(c) for c in args.streams.split(",")]
    gateway_cpu, client_cpu = cpu_layout()
    if client_cpu is not None:
        os.sched_setaffinity(0, {client_cpu})
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="vdm-streams-") as name:
        tmp = Path(name)
        upstream = start_upstream(tmp, client_cpu, chunk_delay_ms=args.delay_ms)
        try:
            await wait_http(upstream.url("/health"), upstream.proc, 10, upstream.log)
            for count in counts:
                if args.direct:
                    rows.append(await measure_direct(upstream, args, count))
                    print(table(rows[-1:]).splitlines()[-1], flush=True)
                rows.append(await measure_gateway(tmp, upstream, gateway_cpu, args, count))
                print(table(rows[-1:]).splitlines()[-1], flush=True)
        finally:
            stop(upstream.proc)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", default="1000,5000", help="comma-separated counts")
    parser.add_argument("--ramp", type=float, default=0.0, help="seconds to spread starts over")
    parser.add_argument("--delay-ms", type=float, default=250.0, help="between SSE events")
    parser.add_argument("--conversion", action="store_true", help="openai:bench-model")
    parser.add_argument("--direct", action="store_true", help="also straight to the upstream")
    parser.add_argument("--upstream-max-connections", type=int, default=None)
    parser.add_argument("--out", type=Path, default=None, help="JSON results")
    args = parser.parse_args()
    limit = raise_file_limit()
    most = max(int(c) for c in args.streams.split(","))
    if limit < 2 * most + 2048:
        print(
            f"warning: open files limited to {limit}; the gateway needs about "
            f"{2 * most + 2048} for {most} streams",
            file=sys.stderr,
        )
    started = dt.datetime.now(dt.UTC)
    load = os.getloadavg()
    rows = run_async(lambda: main_async(args))
    print()
    print(table(rows))
    print(
        f"\nload average before the run: {load[0]:.2f}; {started:%Y-%m-%d %H:%M} UTC; "
        f"git {git_rev()}"
    )
    if args.out:
        args.out.write_text(
            json.dumps(
                {
                    "started": started.isoformat(),
                    "git": git_rev(),
                    "machine": machine(),
                    "load_average": load,
                    "args": {k: str(v) for k, v in vars(args).items()},
                    "rows": [asdict(r) for r in rows],
                },
                indent=2,
            )
        )
    if any(r.figures["errors"] for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
