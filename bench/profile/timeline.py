"""When the parts of one streamed answer reach the client: direct, floor, gateway.

    python bench/profile/timeline.py [--stream-delay-ms MS] [-n 300]

For each of the direct call, the floor (bench/floor.py, converting and bare relay) and
the gateway (conversion and passthrough), one stream at a time: the median time from
the request to the response head, the first body byte, the first text delta and the
end, and how many reads the client needed.  It shows whether a first-content figure
is the gateway holding the first event back or the whole stream arriving in one write.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

BENCH = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BENCH))

from harness import (  # noqa: E402
    ANTHROPIC_HEADERS,
    start_floor,
    start_gateway,
    start_upstream,
    stop,
    wait_http,
)
from run import request_body  # noqa: E402


async def probe(session: aiohttp.ClientSession, url: str, body: bytes, n: int) -> dict:
    rows: list[tuple[float, float, float, float, int]] = []
    for _ in range(n):
        t0 = time.perf_counter()
        async with session.post(url, data=body, headers=ANTHROPIC_HEADERS) as resp:
            head = time.perf_counter()
            first = text = None
            reads, seen = 0, b""
            async for chunk in resp.content.iter_any():
                now = time.perf_counter()
                reads += 1
                first = first or now
                seen += chunk
                if text is None and b"text_delta" in seen:
                    text = now
            end = time.perf_counter()
        rows.append((head - t0, first - t0, (text or end) - t0, end - t0, reads))

    def med(i: int) -> float:
        return round(statistics.median(r[i] for r in rows) * 1000, 3)

    return {
        "head": med(0),
        "first byte": med(1),
        "first text": med(2),
        "end": med(3),
        "reads": statistics.median(r[4] for r in rows),
    }


async def main_async(args: argparse.Namespace, up, gw, fl) -> None:
    await wait_http(up.url("/health"), up.proc, 15, up.log)
    await wait_http(gw.url("/ready"), gw.proc, 60, gw.log)
    await wait_http(fl.url("/health"), fl.proc, 60, fl.log)
    targets = [
        ("direct", up.url("/v1/messages"), "bench-model"),
        ("floor", fl.url("/v1/messages"), "bench-model"),
        ("floor relay", fl.url("/relay/v1/messages"), "bench-model"),
        ("conversion", gw.url("/v1/messages"), "openai:bench-model"),
        ("passthrough", gw.url("/v1/messages"), "ant:bench-model"),
    ]
    print("| row | head ms | first byte ms | first text ms | end ms | reads |")
    print("|---|---:|---:|---:|---:|---:|")
    async with aiohttp.ClientSession() as session:
        for name, url, model in targets:
            body = request_body(model, True)
            await probe(session, url, body, 50)  # warm-up
            r = await probe(session, url, body, args.n)
            print(
                f"| {name} | {r['head']} | {r['first byte']} | {r['first text']} "
                f"| {r['end']} | {r['reads']:g} |"
            )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stream-delay-ms", type=float, default=0.0)
    parser.add_argument("-n", type=int, default=300)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="vdm-timeline-"))
    up = start_upstream(tmp, 1, chunk_delay_ms=args.stream_delay_ms)
    gw = start_gateway(tmp, 0, up.port)
    fl = start_floor(tmp, 0, up.port)
    try:
        asyncio.run(main_async(args, up, gw, fl))
    finally:
        for p in (gw, fl, up):
            stop(p.proc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
