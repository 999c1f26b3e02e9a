"""The upstream connection pool: its limit is a setting, and the requests that
wait for a free connection are a gauge and their waits a histogram.

A provider limited to 2 connections gets 5 concurrent requests whose answers
the fake upstream holds (an event, not a delay): 2 reach it, 3 wait in the
gateway, and ``/metrics`` says so; once the answers are released all 5
succeed, and the histogram has counted the 3 waits.
"""

from __future__ import annotations

import asyncio
import threading
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.fakes import FakeUpstream, JSONReply, completion
from tests.support.gateway import Gateway, run_gateway
from tests.support.waiting import wait_for

AT_ONCE = 5
LIMIT = 2
WAITING = "vdm_upstream_connections_waiting"
WAITS = "vdm_upstream_connection_wait_seconds"


def pool_samples(gateway: Gateway, provider: str) -> dict[str, float]:
    """The pool's samples of ``provider`` (name, with ``le`` for buckets)."""
    with urllib.request.urlopen(gateway.url + "/metrics", timeout=5) as response:
        text = response.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.startswith("vdm_upstream_connection") and s.labels["provider"] == provider:
                le = s.labels.get("le")
                out[s.name if le is None else f"{s.name}[{le}]"] = s.value
    return out


def poll(predicate, timeout: float = 20.0) -> bool:  # type: ignore[no-untyped-def]
    return wait_for(predicate, timeout, every=0.05)


@pytest.mark.parametrize(
    "limit_env",
    [
        {"OA_MAX_CONNECTIONS": str(LIMIT)},  # the provider's own
        {"UPSTREAM_MAX_CONNECTIONS": str(LIMIT)},  # server-wide
    ],
    ids=["provider", "server"],
)
def test_requests_beyond_the_limit_wait_and_are_counted(
    fake_openai: FakeUpstream, tmp_path: Path, limit_env: dict[str, str]
) -> None:
    release = threading.Event()
    fake_openai.reply(
        *(JSONReply(completion(f"answer {i}"), release=release) for i in range(AT_ONCE))
    )
    env = {
        "OA_API_KEY": "k",
        "OA_BASE_URL": fake_openai.url + "/v1",
        "VDM_DEFAULT_PROVIDER": "oa",
        "CONNECT_TIMEOUT": "60",  # the wait for a free connection counts against it
        "MAX_RETRIES": "0",
        **limit_env,
    }
    with run_gateway(env, tmp_path) as gateway:
        before = pool_samples(gateway, "oa")
        assert before[WAITING] == 0 and before[f"{WAITS}_count"] == 0
        client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0)

        def ask(i: int) -> str:
            reply = client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": f"q{i}"}], timeout=60
            )
            return reply.choices[0].message.content or ""

        with ThreadPoolExecutor(AT_ONCE) as pool:
            try:
                futures = [pool.submit(ask, i) for i in range(AT_ONCE)]
                waiting = AT_ONCE - LIMIT
                assert poll(lambda: pool_samples(gateway, "oa")[WAITING] == waiting), (
                    pool_samples(gateway, "oa"),
                    len(fake_openai.requests),
                )
                # The limit holds: LIMIT requests reach the upstream (the last of them
                # may still be on its way when the others are counted waiting), no more.
                assert fake_openai.wait_for(lambda: len(fake_openai.requests) >= LIMIT)
                assert len(fake_openai.requests) == LIMIT
                assert pool_samples(gateway, "oa")[f"{WAITS}_count"] == 0  # still waiting
            finally:
                release.set()
            answers = sorted(f.result(timeout=60) for f in futures)
        assert answers == sorted(f"answer {i}" for i in range(AT_ONCE))
        after = pool_samples(gateway, "oa")
        assert after[WAITING] == 0
        assert after[f"{WAITS}_count"] == AT_ONCE - LIMIT
        assert after[f"{WAITS}_sum"] > 0
        assert after[f"{WAITS}_bucket[+Inf]"] == AT_ONCE - LIMIT
        # Only providers with connections are counted (echo has none).
        assert pool_samples(gateway, "echo") == {}


# ------------------------------------------------ in process: a wait that times out


def test_a_wait_cut_short_by_connect_timeout_is_counted_and_leaves_nobody_waiting() -> None:
    """The wait for a free connection counts against ``CONNECT_TIMEOUT``: one
    that times out is observed, and the gauge goes back down; the next
    waits are counted as before."""
    from aiohttp import web

    from vdm.config import ServerSettings
    from vdm.metrics import UpstreamPool
    from vdm.providers.http import make_session

    async def main() -> tuple[int, int, int, int, list[int]]:
        held = asyncio.Event()
        arrived = asyncio.Event()

        async def handler(request: web.Request) -> web.Response:
            arrived.set()
            await held.wait()
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_get("/", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        pool = UpstreamPool()
        session = make_session(
            ServerSettings(request_timeout=10.0, connect_timeout=0.3), limit=1, pool=pool
        )

        async def get() -> int:
            async with session.get(f"http://127.0.0.1:{port}/") as response:
                await response.read()
                return response.status

        try:
            first = asyncio.ensure_future(get())
            await arrived.wait()
            with pytest.raises(TimeoutError):
                await get()  # the one connection stays busy past CONNECT_TIMEOUT
            timed_out = sum(pool.waits.counts)
            left_waiting = pool.waiting
            others = [asyncio.ensure_future(get()) for _ in range(2)]
            for _ in range(100):  # two loop turns suffice; a bound, not a delay
                if pool.waiting == 2:
                    break
                await asyncio.sleep(0)
            waiting = pool.waiting
            held.set()
            statuses = [await first, *[await o for o in others]]
        finally:
            await session.close()
            await runner.cleanup()
        return timed_out, left_waiting, waiting, sum(pool.waits.counts), statuses

    timed_out, left_waiting, waiting, waits, statuses = asyncio.run(asyncio.wait_for(main(), 30))
    assert (timed_out, left_waiting) == (1, 0)
    assert waiting == 2
    assert waits == 3
    assert statuses == [200, 200, 200]
