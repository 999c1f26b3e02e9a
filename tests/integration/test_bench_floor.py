"""The benchmark's reference floor is a correct proxy, and its ratios are computed right.

``bench/run.py`` reads the gateway's figures as ratios to ``bench/floor.py``
measured in the same run.  Those ratios mean something only if the floor does
the job the gateway does (its answers pass the same validators) and if the
arithmetic of ``floor_targets`` is what the docs say.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import aiohttp
import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import harness  # noqa: E402
import run  # noqa: E402
import validate  # noqa: E402


@pytest.fixture(scope="module")
def floor_url(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("floor")
    up = harness.start_upstream(tmp, None)
    fl = harness.start_floor(tmp, None, up.port)

    async def ready():
        await harness.wait_http(up.url("/health"), up.proc, 15, up.log)
        await harness.wait_http(fl.url("/health"), fl.proc, 15, fl.log)

    try:
        asyncio.run(ready())
        yield fl.url("/v1/messages")
    finally:
        harness.stop(fl.proc)
        harness.stop(up.proc)


@pytest.mark.parametrize("prefix", ["", "/relay"])  # the converting floor, the bare relay
@pytest.mark.parametrize(
    ("stream", "check"),
    [(False, validate.validate_anthropic_json), (True, validate.validate_anthropic_sse)],
)
def test_the_floors_answers_pass_the_benchmark_validator(floor_url, prefix, stream, check):
    url = floor_url.replace("/v1/messages", prefix + "/v1/messages")

    async def go():
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                url, data=run.request_body("bench-model", stream), headers=run.HEADERS
            ) as resp,
        ):
            return resp.status, resp.headers.get("content-type", ""), await resp.read()

    status, ctype, body = asyncio.run(go())
    assert check(status, ctype, body) == []


def _row(scenario, kind, stream, cpu, *, rps=None, added=None, ttfc=None, target="gateway"):
    return {
        "scenario": scenario,
        "target": target,
        "kind": kind,
        "stream": stream,
        "gateway_cpu_ms_per_req": cpu,
        "rps_c64": rps,
        "added_p50_c1_ms": added,
        "added_ttfc_p50_c1_ms": ttfc,
    }


def test_floor_targets_are_the_issues_targets_divided_by_the_floors_figures():
    rows = [
        _row("floor non-stream", "floor", False, 0.5, rps=2000, added=1.0, target="floor"),
        _row("floor stream", "floor", True, 2.0, ttfc=1.0, target="floor"),
        # 0.7 / 0.5 = 1.4 <= 0.4 / 0.28; 1500 / 2000 = 0.75 >= 0.7; 1.5 / 1.0 > 0.8 / 0.6
        _row("conversion non-stream", "conversion", False, 0.7, rps=1500, added=1.5),
        # 3.0 / 2.0 = 1.5 <= 1.5 / 0.9
        _row("conversion stream", "conversion", True, 3.0, ttfc=1.0),
        # 0.6 / 0.5 = 1.2 > 0.3 / 0.28
        _row("passthrough stream", "passthrough", True, 0.6, ttfc=2.0),
    ]
    checks = run.floor_targets(
        rows, {"cold_start_first_request_s": 1.0}, {"cold_start_first_request_s": 0.6}
    )
    got = {(c["scenario"], c["check"].split(" ≤")[0].split(" ≥")[0]): c for c in checks}
    assert got["conversion non-stream", "CPU/request ÷ floor's"]["value"] == 1.4
    assert got["conversion non-stream", "CPU/request ÷ floor's"]["ok"]
    assert got["conversion non-stream", "req/s@64 ÷ floor's"]["ok"]
    assert not got["conversion non-stream", "added p50@1 ÷ floor's"]["ok"]
    assert got["conversion stream", "CPU/stream ÷ floor's"]["value"] == 1.5
    assert got["conversion stream", "CPU/stream ÷ floor's"]["ok"]
    assert got["conversion stream", "added TTFC ÷ floor's"]["ok"]
    assert not got["passthrough stream", "CPU/request ÷ floor's non-stream"]["ok"]
    assert not got["passthrough stream", "added TTFC ÷ floor's"]["ok"]  # 2.0 > 1 / 0.6
    assert got["gateway", "cold start ÷ floor's"]["value"] == 1.667
    assert got["gateway", "cold start ÷ floor's"]["ok"]
    assert run.machine_factor(rows) == round(0.5 / run.FLOOR_CPU_MS, 3)
    assert run.floor_targets(rows[2:], None, None) == []
