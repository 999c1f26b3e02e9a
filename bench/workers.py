"""Multi-core scaling: throughput at concurrency 64 for ``--workers N``.

    python bench/workers.py [--workers 1,2] [--requests 6000] [--repeats 3] [--stream]
                            [--load wrk [--seconds 8]] [--concurrency 64]

For each N the gateway is started with ``vdm server start --workers N`` (uvicorn's
supervisor and N worker processes on one socket), then the non-streaming
Anthropic->OpenAI conversion request (``--stream``: the 20-chunk stream) is sent
at concurrency 64 (``--concurrency``), ``--repeats`` times; the best req/s is kept,
the CPU of every gateway process is read from ``/proc`` over the same timed sections.

Nothing is pinned here: the gateway's workers must be free to use every core.
On a machine with as many cores as workers, the load generator and the fake
upstream run on the same cores as the gateway, so the speedup is a floor: the
output says so and shows where the CPU went (gateway workers, load generator +
upstream).  CPU ms/request per worker is the figure that stays comparable.

``--load wrk`` drives the same request with wrk (``apt-get install wrk``), a load
generator in C that needs a small part of a core where the Python one needs half of
one, so on a 2-core machine two workers get most of both cores and the curve can be
read.  wrk only counts statuses: the Python load generator, the default, is the one
that validates every answer.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness import (
    Proc,
    StartupFailed,
    cpu_seconds,
    cpu_seconds_of,
    descendants,
    git_rev,
    machine,
    machine_busy_seconds,
    memory_kb,
    run_async,
    start_gateway,
    start_upstream,
    stop,
    tail,
    wait_http,
)
from loadgen import run_load
from run import Scenario, request_body

CONCURRENCY = 64


def scenario(stream: bool) -> Scenario:
    s = "stream" if stream else "non-stream"
    return Scenario(f"conversion {s}", "gateway", "anthropic", "openai:bench-model", stream)


@dataclass
class WrkResult:
    """What ``measure`` reads of a load run, from wrk's report."""

    requests: int
    elapsed: float
    error_count: int
    client_cpu: float
    p50_ms: float
    probes: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict:
        return {"p50_ms": self.p50_ms}


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def run_wrk(
    url: str,
    body: bytes,
    headers: dict[str, str],
    seconds: int,
    probes: dict,
    concurrency: int = CONCURRENCY,
) -> WrkResult:
    """wrk at ``concurrency`` for ``seconds``: requests done, non-2xx answers and
    socket errors (as errors), wrk's own CPU, p50 latency, the probes' deltas."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(f'wrk.method = "POST"\nwrk.body = {json.dumps(body.decode())}\n')
        for name, value in headers.items():
            script.write(f"wrk.headers[{json.dumps(name)}] = {json.dumps(value)}\n")
    argv = ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "--latency", "-s", script.name]
    before = {k: f() for k, f in probes.items()}
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    try:
        out = subprocess.run([*argv, url], capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(script.name)
    elapsed = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    deltas = {k: f() - before[k] for k, f in probes.items()}
    done = re.search(r"(\d+) requests in", out)
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)\b", out)
    if done is None or p50 is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    errors = sum(int(x) for x in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if socket:
        errors += sum(int(x) for x in socket.groups())
    return WrkResult(
        requests=int(done.group(1)),
        elapsed=elapsed,
        error_count=errors,
        client_cpu=(cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime),
        p50_ms=round(float(p50.group(1)) * _UNITS_MS[p50.group(2)], 3),
        probes=deltas,
    )


async def measure(
    gw: Proc,
    up: Proc,
    workers: int,
    sc: Scenario,
    n: int,
    repeats: int,
    wrk_seconds: int | None = None,
    concurrency: int = CONCURRENCY,
) -> dict:
    await wait_http(up.url("/health"), up.proc, 15, up.log)
    await wait_http(gw.url("/ready"), gw.proc, 60, gw.log)
    # /ready answers as soon as one worker is up: wait until all N are.
    for _ in range(600):  # polling /proc: there is nothing to wait on
        if len(worker_pids(gw.pid)) >= workers:
            break
        await asyncio.sleep(0.05)
    body = request_body(sc.model, sc.stream, sc.api)
    url = gw.url(sc.path)
    await run_load(url, body, sc.headers, n=500, concurrency=concurrency, stream=sc.stream)
    runs = []
    errors = 0
    for _ in range(repeats):
        pids = worker_pids(gw.pid)
        probes = {f"w{p}": (lambda p=p: cpu_seconds_of(p)) for p in pids}
        probes["gateway"] = lambda: cpu_seconds(gw.pid)
        probes["upstream"] = lambda: cpu_seconds(up.pid)
        probes["machine"] = machine_busy_seconds
        if wrk_seconds is not None:
            res = await asyncio.to_thread(
                run_wrk, url, body, sc.headers, wrk_seconds, probes, concurrency
            )
            n = res.requests
        else:
            res = await run_load(
                url,
                body,
                sc.headers,
                n=n,
                concurrency=concurrency,
                stream=sc.stream,
                validator=sc.validator,
                warmup=2 * concurrency,
                probes=probes,
            )
        errors += res.error_count
        per_worker = [round(res.probes[f"w{p}"] * 1000 / n, 4) for p in pids]
        runs.append(
            {
                "requests": n,
                "rps": round(n / res.elapsed, 1),
                "elapsed_s": round(res.elapsed, 3),
                "gateway_cpu_ms_per_req": round(res.probes["gateway"] * 1000 / n, 4),
                "gateway_cores_busy": round(res.probes["gateway"] / res.elapsed, 2),
                # each worker's CPU over its share of the requests is unknown; this is
                # its CPU per request of the whole run (they add up to the gateway's)
                "worker_cpu_ms_per_req": per_worker,
                "worker_cpu_share": [
                    round(res.probes[f"w{p}"] / max(res.probes["gateway"], 1e-9), 3) for p in pids
                ],
                "client_plus_upstream_cores_busy": round(
                    (res.client_cpu + res.probes["upstream"]) / res.elapsed, 2
                ),
                "other_cores_busy": round(
                    max(
                        0.0,
                        res.probes["machine"]
                        - res.probes["gateway"]
                        - res.probes["upstream"]
                        - res.client_cpu,
                    )
                    / res.elapsed,
                    2,
                ),
                "p50_ms": res.summary()["p50_ms"],
            }
        )
    best = max(runs, key=lambda r: r["rps"])
    rss = sum(memory_kb(p).get("VmRSS", 0) for p in descendants(gw.pid))
    return {"workers": workers, "best": best, "runs": runs, "errors": errors, "rss_kb": rss}


def worker_pids(root: int) -> list[int]:
    """The gateway's worker processes: the descendants that serve (with one worker
    that is the server process itself; with N, the supervisor's N children that
    run Python, not ``taskset`` or multiprocessing's resource tracker)."""
    procs = [p for p in descendants(root) if p != root]
    if not procs:
        return [root]
    serving = []
    for p in procs:
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if b"resource_tracker" in cmd or b"semaphore_tracker" in cmd:
            continue
        serving.append(p)
    # the supervisor (the `python -m vdm` process) is the parent of the workers
    children = [p for p in serving if not any(q != p and _parent(q) == p for q in serving)]
    return children or [root]


def _parent(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return int(stat[stat.rindex(b")") + 2 :].split()[1])


def main() -> int:
    parser = argparse.ArgumentParser(description="vdm gateway multi-worker scaling")
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--requests", type=int, default=6000, help="per timed run")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per N (best kept)")
    parser.add_argument("--stream", action="store_true", help="the 20-chunk converted stream")
    parser.add_argument("--out", type=Path, help="JSON output (default bench/results/...)")
    parser.add_argument(
        "--load", choices=("python", "wrk"), default="python", help="the load generator"
    )
    parser.add_argument("--seconds", type=int, default=8, help="per timed run (wrk)")
    parser.add_argument(
        "--concurrency", type=int, default=CONCURRENCY, help="requests in flight (default 64)"
    )
    args = parser.parse_args()
    if args.load == "wrk" and shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    wrk_seconds = args.seconds if args.load == "wrk" else None
    counts = [int(x) for x in args.workers.split(",")]
    sc = scenario(args.stream)
    ncpu = len(os.sched_getaffinity(0))
    results = []
    for n_workers in counts:
        tmp = Path(tempfile.mkdtemp(prefix="vdm-bench-workers-"))
        up = gw = None
        try:
            up = start_upstream(tmp, None)
            gw = start_gateway(tmp, None, up.port, workers=n_workers)
            print(f"  workers={n_workers} ...", end="", flush=True, file=sys.stderr)
            try:
                r = run_async(
                    lambda up=up, gw=gw, n_workers=n_workers: measure(
                        gw,
                        up,
                        n_workers,
                        sc,
                        args.requests,
                        args.repeats,
                        wrk_seconds,
                        args.concurrency,
                    )
                )
            except StartupFailed as exc:
                print(f"gateway failed to start: {exc}", file=sys.stderr)
                return 2
            print(f" {r['best']['rps']:.0f} req/s, {r['errors']} errors", file=sys.stderr)
            if r["errors"]:
                print(tail(gw.log, 20), file=sys.stderr)
            results.append(r)
        finally:
            stop(gw.proc if gw else None)
            stop(up.proc if up else None)
            shutil.rmtree(tmp, ignore_errors=True)

    base = results[0]["best"]["rps"]
    print()
    size = f"{args.seconds:g} s" if wrk_seconds is not None else f"{args.requests} requests"
    print(
        f"{sc.name}, concurrency {args.concurrency}, {size} x {args.repeats} "
        f"(best req/s kept), {ncpu} CPUs, load generator: {args.load}"
    )
    print()
    print(
        "| workers | req/s | speedup | gateway CPU ms/req | per worker CPU ms/req "
        "| gateway cores busy | client+upstream cores busy | other processes cores "
        "| p50 ms | errors |"
    )
    print("|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|")
    for r in results:
        b = r["best"]
        r["speedup"] = round(b["rps"] / base, 2)
        per = ", ".join(f"{v:.3f}" for v in b["worker_cpu_ms_per_req"])
        print(
            f"| {r['workers']} | {b['rps']:.0f} | {r['speedup']:.2f} "
            f"| {b['gateway_cpu_ms_per_req']:.3f} | {per} | {b['gateway_cores_busy']:.2f} "
            f"| {b['client_plus_upstream_cores_busy']:.2f} | {b['other_cores_busy']:.2f} "
            f"| {b['p50_ms']:.2f} | {r['errors']} |"
        )
    if max(counts) >= ncpu:
        print(
            f"\nNote: {ncpu} CPUs for the gateway's workers *and* the load generator + fake "
            "upstream (not pinned): the cores are shared, so req/s and the speedup are floors "
            "set by the machine, not the gateway's scaling limit. CPU ms/request (total and per "
            "worker) is the comparable figure; per-worker values are that worker's CPU over "
            "all requests of the run, so they add up to the gateway's."
        )
    report = {
        "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "git": git_rev(),
        "machine": machine(),
        "scenario": sc.name,
        "concurrency": args.concurrency,
        "requests": args.requests if wrk_seconds is None else None,
        "seconds": wrk_seconds,
        "load": args.load,
        "repeats": args.repeats,
        "results": results,
    }
    out = args.out or Path(__file__).resolve().parent / "results" / (
        "workers-" + dt.datetime.now().strftime("%Y%m%d-%H%M%S") + ".json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(f"\nJSON: {out}")
    return 1 if any(r["errors"] for r in results) else 0


if __name__ == "__main__":
    raise SystemExit(main())
