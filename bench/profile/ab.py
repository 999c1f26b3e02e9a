"""A/B the gateway's CPU per request: two source trees, runs interleaved.

    python bench/profile/ab.py /tmp/base/src src --scenario passthrough [--stream] [-n 3000]
    (scenarios: conversion, passthrough, openai-passthrough)
    python bench/profile/ab.py src src+OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:9
    (a tree followed by ``+KEY=VALUE`` settings: the same tree configured otherwise)

Each round starts a gateway per source tree (``PYTHONPATH`` first, pinned to CPU 0,
the bench's environment), warms it up, drives ``n`` requests at concurrency ``-c`` and
reads the gateway's utime+stime from /proc.  Interleaving the trees, and taking the
minimum over rounds, keeps a busy machine's noise out of the comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BENCH))

from profile_gateway import SCENARIOS, scenario_request, wait_ready  # noqa: E402

from harness import cpu_seconds, free_port, gateway_env  # noqa: E402
from loadgen import run_load  # noqa: E402


def start_gateway(src: str, up_port: int, tmp: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    home = Path(tempfile.mkdtemp(prefix="home", dir=tmp))  # (a port can come round again)
    src, *settings = src.split("+")
    env = gateway_env(home, up_port)
    env.update(pair.split("=", 1) for pair in settings)
    env["PYTHONPATH"] = str(Path(src).resolve())
    cmd = ["taskset", "-c", "0", sys.executable, "-m", "vdm", "server", "start"]
    proc = subprocess.Popen(
        [*cmd, "--host", "127.0.0.1", "--port", str(port)],
        cwd=home,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return proc, port


async def measure(port: int, pid: int, args: argparse.Namespace) -> tuple[float, int]:
    path, body, headers, validator = scenario_request(args.scenario, args.stream)
    url = f"http://127.0.0.1:{port}{path}"
    await run_load(url, body, headers, n=args.warmup, concurrency=args.c, stream=args.stream)
    before = cpu_seconds(pid)
    result = await run_load(
        url, body, headers, n=args.n, concurrency=args.c, stream=args.stream, validator=validator
    )
    return (cpu_seconds(pid) - before) * 1000 / args.n, result.error_count


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("trees", nargs="+", help="source directories (the one holding vdm/)")
    parser.add_argument("--scenario", choices=tuple(SCENARIOS), default="conversion")
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("-n", type=int, default=3000)
    parser.add_argument("-c", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=300, help="untimed requests first")
    args = parser.parse_args()
    os.sched_setaffinity(0, {1})
    tmp = Path(tempfile.mkdtemp(prefix="vdm-ab-"))
    up_port = free_port()
    up = subprocess.Popen(
        ["taskset", "-c", "1", sys.executable, str(BENCH / "upstream.py"), "--port", str(up_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    results: dict[str, list[float]] = {t: [] for t in args.trees}
    try:
        time.sleep(0.5)
        for _ in range(args.rounds):
            for tree in args.trees:
                proc, port = start_gateway(tree, up_port, tmp)
                try:
                    asyncio.run(wait_ready(f"http://127.0.0.1:{port}/ready"))
                    ms, errors = asyncio.run(measure(port, proc.pid, args))
                finally:
                    proc.terminate()
                    proc.wait(30)
                results[tree].append(ms)
                print(f"{tree}: {ms:.3f} ms/req, {errors} errors", flush=True)
    finally:
        up.terminate()
        up.wait(10)
    what = f"{args.scenario}{' stream' if args.stream else ''} c{args.c}"
    for tree, values in results.items():
        print(f"{what} {tree}: min {min(values):.3f} median {statistics.median(values):.3f} ms/req")
    return 0


if __name__ == "__main__":
    sys.exit(main())
