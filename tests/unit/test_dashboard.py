"""The dashboard snapshot's pure parts: percentiles, per-route merge, key states."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

from vdm import ir
from vdm.config import PASSTHROUGH_KEY, key_id
from vdm.metrics import RECENT_REQUESTS, Metrics
from vdm.providers.cooldowns import Bench, MemoryCooldowns
from vdm.server import dashboard


def app_with(metrics: Metrics, cooldowns: MemoryCooldowns, keys: tuple[str, ...]) -> Any:
    settings = SimpleNamespace(providers={"oa": SimpleNamespace(api_keys=keys)})
    return SimpleNamespace(
        metrics=metrics,
        shared_metrics=None,
        settings=settings,
        plane=None,
        gateway=SimpleNamespace(cooldowns=cooldowns),
    )


def test_percentile_is_nearest_rank() -> None:
    assert dashboard.percentile([], 0.5) is None
    assert dashboard.percentile([1.0], 0.95) == 1.0
    values = [float(i) for i in range(1, 101)]
    assert dashboard.percentile(values, 0.5) == 51.0
    assert dashboard.percentile(values, 0.95) == 96.0


def test_routes_merge_doors_and_split_overhead() -> None:
    m = Metrics()
    usage = ir.Usage(input_tokens=10, output_tokens=5)
    m.finished("anthropic", "oa", "m", 200, 0.100, 0.05, 0.080, usage, None, request_id="r1")
    m.finished("openai", "oa", "m", 200, 0.200, 0.05, 0.150, usage, None, cache_hit=True)
    m.failed("openai", "", 400, "invalid_request", 0.001, "r3")
    rows = dashboard.routes(app_with(m, MemoryCooldowns(), ()))
    by_key = {(r["provider"], r["model"]): r for r in rows}
    route = by_key[("oa", "m")]
    assert (route["requests"], route["input_tokens"], route["cache_hits"]) == (2, 20, 1)
    assert route["cache_hit_rate"] == 0.5
    assert route["p50_ms"] == 200.0 and route["upstream_p50_ms"] == 150.0
    assert route["overhead_p50_ms"] == 50.0 and route["overhead_p95_ms"] == 50.0
    assert by_key[("-", "-")]["errors"] == 1
    assert by_key[("-", "-")]["upstream_p50_ms"] is None
    recent = dashboard.snapshot(app_with(m, MemoryCooldowns(), ()))["recent"]
    assert [r["request_id"] for r in recent] == ["r3", "", "r1"]  # newest first
    assert recent[0]["error"] == "invalid_request" and recent[1]["cache_hit"] is True


def test_the_ring_is_bounded() -> None:
    m = Metrics()
    for _ in range(RECENT_REQUESTS + 10):
        m.failed("openai", "", 400, "invalid_request", 0.001)
    assert len(m.recent) == RECENT_REQUESTS
    assert (
        len(dashboard.snapshot(app_with(m, MemoryCooldowns(), ()))["recent"])
        == dashboard.RECENT_SHOWN
    )


def test_keys_show_hashes_and_states() -> None:
    cooldowns = MemoryCooldowns()
    secrets = ("sk-secret-a", "sk-secret-b", "sk-secret-c", PASSTHROUGH_KEY)
    now = time.time()
    cooldowns.bench(Bench(key_id("oa", "sk-secret-b"), now + 30, 429))
    cooldowns.bench(Bench(key_id("oa", "sk-secret-c"), now + 30, 401))
    cooldowns.bench(Bench(key_id("oa", "sk-secret-a"), now - 1, 429))  # expired
    cooldowns.bench(Bench(key_id("oa", "sk-secret-a"), now + 60, 403, model="gpt-x"))
    cooldowns.bench(Bench(key_id("oa", "sk-secret-a"), now - 1, 403, model="gpt-old"))  # expired
    cooldowns.bench(
        Bench(key_id("other", "sk-gone"), now + 60, 403, model="gpt-x")
    )  # not configured
    rows = dashboard.keys(app_with(Metrics(), cooldowns, secrets))
    assert [(r["state"], r["model"]) for r in rows] == [
        ("ok", None),
        ("cooling", None),
        ("benched", None),
        ("benched", "gpt-x"),
    ]
    assert rows[1]["last_status"] == 429 and 29 < rows[1]["seconds_left"] <= 30
    assert rows[0]["seconds_left"] == 0
    assert rows[3]["key"] == rows[0]["key"] and 59 < rows[3]["seconds_left"] <= 60
    assert all("secret" not in str(r) for r in rows)
    assert rows[0]["key"] == key_id("oa", "sk-secret-a").partition(":")[2]
