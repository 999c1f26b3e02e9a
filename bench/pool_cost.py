"""What counting the waits for an upstream connection costs a request.

    python bench/pool_cost.py [--requests 20000] [--concurrency 32] [--repeats 5]

Sends ``--requests`` non-streaming requests at ``--concurrency`` to the fake upstream
(``bench/upstream.py``, on the other CPU) through one aiohttp session, in three ways:

* ``plain``: ``aiohttp.TCPConnector`` (nothing counted);
* ``hook``: the gateway's connector (``vdm.providers.http._PoolConnector``), which
  counts only in aiohttp's wait for a free connection;
* ``trace``: a ``TraceConfig`` with ``on_connection_queued_start`` / ``_end``
  callbacks, aiohttp's public way to see the same wait (they fire once per turn
  of aiohttp's wait loop: a request whose free connection another took first
  waits again and is counted again).

each with a pool large enough that no request waits (``--limit``, 1,024) and with
one a quarter of the concurrency (every request but the first few waits).  The
figure is this process's CPU time (``process_time``) per request, the minimum over
``--repeats`` runs, the variants interleaved so that the machine's noise falls on
each alike.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from harness import cpu_layout, run_async, start_upstream, stop, wait_http
from vdm.metrics import UpstreamPool
from vdm.providers.http import _PoolConnector

BODY = b'{"model":"bench-model","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}'
HEADERS = {"content-type": "application/json", "anthropic-version": "2023-06-01"}


def trace_config(pool: UpstreamPool) -> aiohttp.TraceConfig:
    trace = aiohttp.TraceConfig()

    async def queued(session: Any, ctx: Any, params: Any) -> None:
        pool.waiting += 1
        ctx.queued = asyncio.get_running_loop().time()

    async def dequeued(session: Any, ctx: Any, params: Any) -> None:
        pool.waiting -= 1
        pool.waits.observe(asyncio.get_running_loop().time() - ctx.queued)

    trace.on_connection_queued_start.append(queued)
    trace.on_connection_queued_end.append(dequeued)
    return trace


def session_for(variant: str, limit: int) -> tuple[aiohttp.ClientSession, UpstreamPool]:
    pool = UpstreamPool()
    options: dict[str, Any] = {"limit": limit, "limit_per_host": limit}
    traces = []
    if variant == "hook":
        connector: aiohttp.TCPConnector = _PoolConnector(pool, **options)
    else:
        connector = aiohttp.TCPConnector(**options)
        if variant == "trace":
            traces.append(trace_config(pool))
    return aiohttp.ClientSession(connector=connector, trace_configs=traces or None), pool


async def run(
    url: str, variant: str, limit: int, requests: int, concurrency: int
) -> tuple[float, int]:
    """(CPU seconds per request, waits counted)."""
    session, pool = session_for(variant, limit)
    left = requests

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            async with session.post(url, data=BODY, headers=HEADERS) as response:
                await response.read()
                assert response.status == 200, response.status

    async with session:
        left = concurrency * 4  # open the connections, untimed
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        pool.waits.counts[:] = [0] * len(pool.waits.counts)
        left = requests
        start = time.process_time()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        cpu = time.process_time() - start
    return cpu / requests, sum(pool.waits.counts)


def shown(variant: str, best: dict[str, float], waits: dict[str, int]) -> str:
    cost, extra = best[variant] * 1e6, (best[variant] - best["plain"]) * 1e6
    return f"{variant} {cost:.1f} us ({extra:+.1f}; {waits[variant]} waits counted)"


async def main_async(args: argparse.Namespace) -> None:
    gateway_cpu, client_cpu = cpu_layout()
    if gateway_cpu is not None:
        os.sched_setaffinity(0, {gateway_cpu})
    with tempfile.TemporaryDirectory(prefix="vdm-pool-") as name:
        upstream = start_upstream(Path(name), client_cpu)
        try:
            await wait_http(upstream.url("/health"), upstream.proc, 10, upstream.log)
            url = upstream.url("/v1/messages")
            for label, limit in (
                (f"limit {args.limit} (no waits)", args.limit),
                (f"limit {args.concurrency // 4} (waits)", args.concurrency // 4),
            ):
                best: dict[str, float] = {}
                waits: dict[str, int] = {}
                for _ in range(args.repeats):
                    for variant in ("plain", "hook", "trace"):
                        cost, counted = await run(
                            url, variant, limit, args.requests, args.concurrency
                        )
                        best[variant] = min(best.get(variant, cost), cost)
                        waits[variant] = counted
                print(f"{label}: " + ", ".join(shown(v, best, waits) for v in best))
        finally:
            stop(upstream.proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--limit", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f}")
    run_async(lambda: main_async(args))


if __name__ == "__main__":
    main()
