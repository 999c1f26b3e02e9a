"""Redis unreachable (nothing listens on its port): each feature that uses it
says so once, requests are answered as without it, and nothing is a 500."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.support.gateway import Gateway, free_port, run_gateway

ASK = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    env = {"REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "CACHE_MODELS": "echo:e=60"}
    with run_gateway(env, tmp_path_factory.mktemp("outage")) as gateway:
        yield gateway


def warnings_about(log: str, feature: str) -> list[str]:
    return [line for line in log.splitlines() if "WARNING" in line and feature in line]


def test_the_cache_warns_once_not_twice_per_request(gw: Gateway) -> None:
    for n in range(20):
        reply = httpx.post(
            gw.url + "/v1/messages",
            headers={"x-request-id": f"outage-{n}"},
            json={"model": "echo:e", "max_tokens": 5, "messages": ASK},
            timeout=10,
        )
        assert reply.status_code == 200 and reply.headers["x-vdm-cache"] == "miss"
    log = gw.wait_log("request_id=outage-19")
    lines = [line for line in log.splitlines() if "WARNING" in line and "cache" in line]
    assert len(lines) == 1, "\n".join(lines)
    assert "unavailable for the response cache" in lines[0]


def test_running_totals_are_a_503_not_a_500(gw: Gateway) -> None:
    for n in range(3):
        reply = httpx.get(
            gw.url + "/metrics/running-totals", headers={"x-request-id": f"totals-{n}"}, timeout=30
        )
        assert reply.status_code == 503, reply.text
        assert "Redis" in reply.json()["error"]["message"]
        assert reply.headers["retry-after"]
    log = gw.wait_log("request_id=totals-2")
    assert "Traceback" not in log
    assert len(warnings_about(log, "unavailable for the running totals")) == 1
