"""Asyncio load generator: N requests at concurrency C over one aiohttp session.

Records per-request latency (send to last byte) and, for streams, time to
first content (arrival of the first text delta).  Bodies are kept and run
through a strict validator *after* the timed section, so validation never
slows the client down during measurement.

    python bench/loadgen.py URL --body '{"model": ...}' -n 1000 -c 16 --validator anthropic-sse
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import aiohttp

from validate import VALIDATORS, Validator

# The first text delta of either wire format: an Anthropic text_delta, or an
# OpenAI delta with non-empty "content".
FIRST_CONTENT = re.compile(rb'"text_delta"|"content"\s*:\s*"[^"]')


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of unsorted ``values``."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil(n*q/100), at least 1
    return ordered[int(rank) - 1]


@dataclass
class LoadResult:
    requests: int
    concurrency: int
    elapsed: float = 0.0
    latencies: list[float] = field(default_factory=list)
    ttfc: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    failed: int = 0  # requests with at least one error
    bytes_received: int = 0
    client_cpu: float = 0.0  # this process's CPU seconds during the timed section
    sample_failure: str | None = None  # the first failing body (truncated)
    probes: dict[str, float] = field(default_factory=dict)  # probe deltas over the timed section

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def summary(self) -> dict:
        ms = 1000.0

        def p(values: list[float], q: float) -> float | None:
            v = percentile(values, q)
            return None if v is None else round(v * ms, 4)

        return {
            "requests": self.requests,
            "concurrency": self.concurrency,
            "elapsed_s": round(self.elapsed, 4),
            "rps": round(self.requests / self.elapsed, 1) if self.elapsed else None,
            "p50_ms": p(self.latencies, 50),
            "p90_ms": p(self.latencies, 90),
            "p99_ms": p(self.latencies, 99),
            "max_ms": p(self.latencies, 100),
            "mean_ms": (
                round(sum(self.latencies) / len(self.latencies) * ms, 4) if self.latencies else None
            ),
            "ttfc_p50_ms": p(self.ttfc, 50),
            "ttfc_p99_ms": p(self.ttfc, 99),
            "failed_requests": self.failed,
            "error_count": self.error_count,
            "errors": dict(self.errors.most_common(20)),
            "bytes_received": self.bytes_received,
            "client_cpu_s": round(self.client_cpu, 4),
            "probes": {k: round(v, 4) for k, v in self.probes.items()},
            "sample_failure": self.sample_failure,
        }


_Response = tuple[int, str, bytes] | str  # (status, content-type, body) or a failure message


async def _one(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    stream: bool,
) -> tuple[_Response, float, float | None]:
    t0 = time.perf_counter()
    first: float | None = None
    try:
        async with session.post(url, data=body, headers=headers) as resp:
            ctype = resp.headers.get("content-type", "")
            if stream and resp.status == 200:
                buf = bytearray()
                async for chunk in resp.content.iter_any():
                    if first is None:
                        start = max(0, len(buf) - 32)
                        buf += chunk
                        if FIRST_CONTENT.search(buf, start):
                            first = time.perf_counter() - t0
                    else:
                        buf += chunk
                data = bytes(buf)
            else:
                data = await resp.read()
            status = resp.status
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return f"request failed: {type(exc).__name__}: {exc}", time.perf_counter() - t0, None
    return (status, ctype, data), time.perf_counter() - t0, first


async def run_load(
    url: str,
    body: bytes,
    headers: Mapping[str, str] | None = None,
    *,
    n: int,
    concurrency: int,
    stream: bool = False,
    validator: Validator | None = None,
    warmup: int = 0,
    request_timeout: float = 60.0,
    probes: Mapping[str, Callable[[], float]] | None = None,
) -> LoadResult:
    """Send ``n`` POSTs at ``concurrency``; ``warmup`` untimed requests first
    (they open the connections) are validated too.  Each probe (e.g. a server
    process's CPU seconds) is read right before and after the timed section;
    ``result.probes`` holds the differences."""
    probes = probes or {}
    hdrs = dict(headers or {})
    hdrs.setdefault("content-type", "application/json")
    result = LoadResult(requests=n, concurrency=concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    responses: list[_Response] = []
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=request_timeout)
    ) as session:

        async def batch(count: int, record: bool) -> None:
            remaining = count

            async def worker() -> None:
                nonlocal remaining
                while remaining > 0:
                    remaining -= 1
                    resp, latency, first = await _one(session, url, body, hdrs, stream)
                    responses.append(resp)
                    if record:
                        result.latencies.append(latency)
                        if first is not None:
                            result.ttfc.append(first)

            await asyncio.gather(*(worker() for _ in range(min(concurrency, max(count, 1)))))

        if warmup:
            await batch(warmup, record=False)
        before = {k: f() for k, f in probes.items()}
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        await batch(n, record=True)
        result.elapsed = time.perf_counter() - t0
        result.client_cpu = time.process_time() - cpu0
        result.probes = {k: f() - before[k] for k, f in probes.items()}

    for resp in responses:
        if isinstance(resp, str):
            errs = [resp]
        else:
            result.bytes_received += len(resp[2])
            errs = validator(*resp) if validator else []
            if not validator and resp[0] != 200:
                errs = [f"HTTP {resp[0]}"]
        if errs:
            result.failed += 1
            result.errors.update(errs)
            if result.sample_failure is None:
                result.sample_failure = (
                    resp if isinstance(resp, str) else resp[2][:4000].decode("utf-8", "replace")
                )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description="POST load generator with strict validation")
    parser.add_argument("url")
    parser.add_argument("--body", required=True, help="JSON body, or @file")
    parser.add_argument("-n", type=int, default=1000)
    parser.add_argument("-c", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("-H", "--header", action="append", default=[], help="name: value")
    parser.add_argument("--validator", choices=sorted(VALIDATORS))
    args = parser.parse_args()
    if args.body.startswith("@"):
        with open(args.body[1:], "rb") as f:
            body = f.read()
    else:
        body = args.body.encode()
    headers = dict(h.split(":", 1) for h in args.header)
    headers = {k.strip(): v.strip() for k, v in headers.items()}
    stream = bool(re.search(rb'"stream"\s*:\s*true', body))
    validator = VALIDATORS[args.validator] if args.validator else None
    try:
        import uvloop

        run = uvloop.run
    except ImportError:  # pragma: no cover
        run = asyncio.run
    result = run(
        run_load(
            args.url,
            body,
            headers,
            n=args.n,
            concurrency=args.c,
            stream=stream,
            validator=validator,
            warmup=args.warmup,
        )
    )
    print(json.dumps(result.summary(), indent=2, ensure_ascii=False))
    raise SystemExit(1 if result.error_count else 0)


if __name__ == "__main__":
    main()
