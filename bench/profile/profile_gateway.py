"""Profile the gateway under load: one scenario, gateway under cProfile.

    python bench/profile/profile_gateway.py conversion [--stream] [-n 3000] [-c 16]
    python bench/profile/profile_gateway.py passthrough --top 40

Starts the bench fake upstream and a gateway (same environment as ``bench/run.py``)
whose ``vdm.cli.main`` runs under cProfile; drives ``n`` requests of the scenario,
stops the gateway with SIGTERM (stats are dumped then) and prints the top functions
by own time.  Stats stay in ``--out`` (default /tmp/vdm-gateway.prof) for pstats/snakeviz.
Not a benchmark: cProfile roughly doubles the cost of every call.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pstats
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(BENCH))

from harness import ANTHROPIC_HEADERS, OPENAI_HEADERS, free_port, gateway_env  # noqa: E402  # noqa: E402
from loadgen import run_load  # noqa: E402
from run import _PATHS, _VALIDATORS, request_body  # noqa: E402

# scenario -> (the client's protocol, model): the gateway rows of bench/run.py
SCENARIOS = {
    "conversion": ("anthropic", "openai:bench-model"),
    "passthrough": ("anthropic", "ant:bench-model"),
    "openai-passthrough": ("openai", "openai:bench-model"),
}


def scenario_request(name: str, stream: bool):
    """``(path, body, headers, validator)`` of one scenario's request."""
    api, model = SCENARIOS[name]
    headers = ANTHROPIC_HEADERS if api == "anthropic" else OPENAI_HEADERS
    return _PATHS[api], request_body(model, stream, api), headers, _VALIDATORS[api, stream]


# Runs inside the gateway process: vdm's CLI under cProfile, stats dumped at exit.
_WRAPPER = """
import cProfile, sys
out = sys.argv[1]
sys.argv = ["vdm", *sys.argv[2:]]
from vdm.cli.main import main
profile = cProfile.Profile()
profile.enable()
try:
    main()
finally:  # uvicorn handles the SIGTERM and returns after its drain
    profile.disable()
    profile.dump_stats(out)
"""


async def wait_ready(url: str) -> None:
    import aiohttp

    async with aiohttp.ClientSession() as session:
        for _ in range(300):
            try:
                async with session.get(url) as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise SystemExit(f"not ready: {url}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario", choices=tuple(SCENARIOS))
    parser.add_argument("--stream", action="store_true")
    parser.add_argument("-n", type=int, default=3000)
    parser.add_argument("-c", type=int, default=16)
    parser.add_argument("--top", type=int, default=45)
    parser.add_argument("--sort", default="tottime")
    parser.add_argument("--out", default="/tmp/vdm-gateway.prof")
    args = parser.parse_args()

    up_port, gw_port = free_port(), free_port()
    tmp = Path(tempfile.mkdtemp(prefix="vdm-prof-"))
    (tmp / "home").mkdir()
    env = gateway_env(tmp / "home", up_port)
    wrapper = tmp / "wrapper.py"
    wrapper.write_text(_WRAPPER)
    os.sched_setaffinity(0, {1})  # as bench/run.py: gateway on CPU 0, the rest on CPU 1
    up = subprocess.Popen(
        [sys.executable, str(BENCH / "upstream.py"), "--port", str(up_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    gw = subprocess.Popen(
        [
            "taskset",
            "-c",
            "0",
            sys.executable,
            str(wrapper),
            args.out,
            "server",
            "start",
            "--port",
            str(gw_port),
        ],
        cwd=tmp,
        env=env,
    )
    try:
        asyncio.run(wait_ready(f"http://127.0.0.1:{gw_port}/ready"))
        path, body, headers, validator = scenario_request(args.scenario, args.stream)
        started = time.perf_counter()
        result = asyncio.run(
            run_load(
                f"http://127.0.0.1:{gw_port}{path}",
                body,
                headers,
                n=args.n,
                concurrency=args.c,
                stream=args.stream,
                validator=validator,
                warmup=50,
            )
        )
        print(f"{args.n} requests in {time.perf_counter() - started:.1f} s, errors {result.errors}")
    finally:
        gw.send_signal(signal.SIGTERM)
        gw.wait(30)
        up.terminate()
        up.wait(10)
    stats = pstats.Stats(args.out)
    stats.sort_stats(args.sort).print_stats(args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
