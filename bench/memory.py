"""Memory growth: 100,000 mixed requests through one gateway process.

    python bench/memory.py [--requests 100000] [--concurrency 64] [--out FILE]

Every block of 10,000 requests mixes all six gateway paths of ``run.py``
(Anthropic->OpenAI conversion, Anthropic and OpenAI passthrough, each
streaming and not), sent at the same time.  The gateway's ``VmRSS`` is read
from ``/proc`` after every block.  The check is the issue's: RSS at the end is
within 10 % of RSS after the first 10,000 requests (the first block pays for
warm-up: imports, pools, caches filling to their size), so anything that grows
per request (a leak, an unbounded cache) shows.  Exits 1 when over 10 % or when
any response failed validation, 2 when the gateway did not start.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from harness import (
    Proc,
    StartupFailed,
    cpu_layout,
    cpu_seconds,
    git_rev,
    machine,
    memory_kb,
    run_async,
    start_gateway,
    start_upstream,
    stop,
    tail,
    wait_http,
)
from loadgen import run_load
from run import Scenario, request_body, scenarios

BLOCK = 10_000
LIMIT = 0.10  # allowed growth of RSS from the first block to the end


def mix() -> list[tuple[Scenario, float]]:
    """The gateway scenarios of ``run.py`` with their share of each block."""
    rows = [s for s in scenarios() if s.target == "gateway"]
    return [(s, 1 / len(rows)) for s in rows]


async def block(gw: Proc, n: int, concurrency: int) -> tuple[int, dict[str, int]]:
    """``n`` requests, all paths at once; returns (errors, error kinds)."""
    parts = mix()
    per_path = max(1, concurrency // len(parts))
    counts = [int(n * share) for _, share in parts]
    counts[0] += n - sum(counts)
    results = await asyncio.gather(
        *(
            run_load(
                gw.url(sc.path),
                request_body(sc.model, sc.stream, sc.api),
                sc.headers,
                n=count,
                concurrency=per_path,
                stream=sc.stream,
                validator=sc.validator,
            )
            for (sc, _), count in zip(parts, counts, strict=True)
        )
    )
    kinds: dict[str, int] = {}
    for r in results:
        for k, v in r.errors.items():
            kinds[k] = kinds.get(k, 0) + v
    return sum(r.error_count for r in results), kinds


async def measure(gw: Proc, total: int, concurrency: int) -> dict:
    await wait_http(gw.url("/ready"), gw.proc, 60, gw.log)
    await asyncio.sleep(0.3)
    idle = memory_kb(gw.pid).get("VmRSS")
    samples = []
    errors, kinds = 0, {}
    done = 0
    cpu0, t0 = cpu_seconds(gw.pid), time.perf_counter()
    while done < total:
        n = min(BLOCK, total - done)
        tb = time.perf_counter()
        errs, k = await block(gw, n, concurrency)
        done += n
        errors += errs
        for key, v in k.items():
            kinds[key] = kinds.get(key, 0) + v
        mem = memory_kb(gw.pid)
        samples.append(
            {
                "requests": done,
                "rss_kb": mem.get("VmRSS"),
                "hwm_kb": mem.get("VmHWM"),
                "block_s": round(time.perf_counter() - tb, 2),
                "errors": errs,
            }
        )
        s = samples[-1]
        print(
            f"  {done:>7} requests: RSS {s['rss_kb'] / 1024:6.1f} MiB "
            f"(peak {s['hwm_kb'] / 1024:.1f}), block {s['block_s']:.1f} s, {errs} errors",
            file=sys.stderr,
        )
    elapsed = time.perf_counter() - t0
    first, last = samples[0]["rss_kb"], samples[-1]["rss_kb"]
    growth = (last - first) / first
    return {
        "requests": total,
        "concurrency": concurrency,
        "rss_idle_kb": idle,
        "samples": samples,
        "rss_first_block_kb": first,
        "rss_end_kb": last,
        "growth": round(growth, 4),
        "limit": LIMIT,
        "ok": growth <= LIMIT,
        "errors": errors,
        "error_kinds": kinds,
        "elapsed_s": round(elapsed, 1),
        "gateway_cpu_ms_per_req": round((cpu_seconds(gw.pid) - cpu0) * 1000 / total, 4),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description="vdm gateway memory growth over many requests")
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--out", type=Path, help="JSON output (default bench/results/...)")
    args = parser.parse_args()
    if args.requests < BLOCK:
        parser.error(f"--requests must be at least {BLOCK}")

    gw_cpu, client_cpu = cpu_layout()
    if client_cpu is not None:
        os.sched_setaffinity(0, {client_cpu})
    tmp = Path(tempfile.mkdtemp(prefix="vdm-bench-mem-"))
    up = gw = None
    try:
        up = start_upstream(tmp, client_cpu)
        gw = start_gateway(tmp, gw_cpu, up.port)
        print(
            f"memory: {args.requests} mixed requests at concurrency {args.concurrency}, "
            f"gateway on CPU {gw_cpu}",
            file=sys.stderr,
        )
        try:
            result = run_async(lambda: measure(gw, args.requests, args.concurrency))
        except StartupFailed as exc:
            print(f"gateway failed to start: {exc}", file=sys.stderr)
            return 2
    finally:
        stop(gw.proc if gw else None)
        stop(up.proc if up else None)
        gw_tail = tail(gw.log, 40) if gw else ""
        shutil.rmtree(tmp, ignore_errors=True)

    result.update(
        {
            "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "git": git_rev(),
            "machine": machine(),
        }
    )
    mib = 1024
    print()
    print("| requests | RSS MiB | peak MiB |")
    print("|---:|---:|---:|")
    for s in result["samples"]:
        print(f"| {s['requests']} | {s['rss_kb'] / mib:.1f} | {s['hwm_kb'] / mib:.1f} |")
    print()
    print(
        f"RSS idle {result['rss_idle_kb'] / mib:.1f} MiB, after {BLOCK} requests "
        f"{result['rss_first_block_kb'] / mib:.1f} MiB, after {result['requests']} "
        f"{result['rss_end_kb'] / mib:.1f} MiB: growth {result['growth']:+.1%} "
        f"(limit {LIMIT:.0%}) -> {'PASS' if result['ok'] else 'MISS'}"
    )
    print(
        f"{result['elapsed_s']} s, gateway {result['gateway_cpu_ms_per_req']} CPU ms/req, "
        f"{result['errors']} validator errors"
    )
    for kind, n in list(result["error_kinds"].items())[:8]:
        print(f"- {n} x {kind}")
    if result["errors"] and gw_tail:
        print("gateway log tail:\n" + gw_tail)
    out = args.out or Path(__file__).resolve().parent / "results" / (
        "memory-" + dt.datetime.now().strftime("%Y%m%d-%H%M%S") + ".json"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(f"JSON: {out}")
    return 0 if result["ok"] and not result["errors"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
