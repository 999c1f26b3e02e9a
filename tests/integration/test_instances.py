"""Two gateway processes sharing the real PostgreSQL and Redis behave as one
gateway: driven alternately, they enforce one set of quotas and limits, see
each other's token changes at once (over the event bus, not the 30 s safety
poll), write every audit event once, and report the same running totals."""

from __future__ import annotations

import concurrent.futures
import json
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from tests.integration.test_tenants import (
    MGMT,
    answer_everything,
    ask,
    env_for,
    make_project,
    make_token,
    manage,
)
from tests.support.databases import database_env
from tests.support.fakes import FakeUpstream
from tests.support.gateway import Gateway, run_gateway
from tests.support.redisdb import redis_env

T = TypeVar("T")


def eventually(probe: Callable[[], T], ok: Callable[[T], bool], within: float = 5.0) -> T:
    """Poll ``probe`` until ``ok`` (the other instance's consumers run apart)."""
    deadline = time.monotonic() + within
    while True:
        value = probe()
        if ok(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


@pytest.fixture
def pair(
    fake_openai: FakeUpstream, fake_anthropic: FakeUpstream, tmp_path: Path
) -> Iterator[tuple[Gateway, Gateway]]:
    answer_everything(fake_openai, fake_anthropic)
    for db in database_env("postgresql", tmp_path):
        for shared in redis_env():
            with ExitStack() as stack:
                gateways = []
                for name in ("a", "b"):
                    tmp = tmp_path / name
                    env = env_for(fake_openai, fake_anthropic, tmp, **db, **shared)
                    gateways.append(stack.enter_context(run_gateway(env, tmp)))
                yield gateways[0], gateways[1]


def test_a_token_made_on_one_instance_works_and_is_revoked_on_the_other_at_once(
    pair: tuple[Gateway, Gateway],
) -> None:
    a, b = pair
    with manage(a) as api:
        token = make_token(api, make_project(api)["id"])
        made = time.monotonic()
        assert eventually(lambda: ask(b, token["token"]).status_code, lambda s: s == 200) == 200
        assert time.monotonic() - made < 3.0  # the bus, not the 30 s poll
        assert api.delete(f"/manage/tokens/{token['id']}").status_code in (200, 204)
        revoked = time.monotonic()
        assert eventually(lambda: ask(b, token["token"]).status_code, lambda s: s == 401) == 401
        assert time.monotonic() - revoked < 3.0


def test_quota_and_per_minute_limits_hold_across_instances(pair: tuple[Gateway, Gateway]) -> None:
    a, b = pair
    with manage(a) as api:
        project = make_project(api)
        quota = make_token(api, project["id"], max_requests=10)
        rpm = make_token(api, project["id"], rpm=5)
        tpm = make_token(api, project["id"], tpm=100)  # 45 tokens an answer
    time.sleep(1.0)  # b hears of the tokens (in milliseconds: see the test above)

    def alternately(token: dict[str, Any], n: int) -> list[int]:
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            return list(
                pool.map(lambda i: ask((a, b)[i % 2], token["token"]).status_code, range(n))
            )

    statuses = alternately(quota, 30)
    assert statuses.count(200) == 10 and statuses.count(429) == 20
    statuses = alternately(rpm, 12)
    assert statuses.count(200) == 5 and statuses.count(429) == 7
    # Tokens are counted when an answer ends: one request at a time, each instance in turn.
    seen = []
    for i in range(5):
        seen.append(ask((a, b)[i % 2], tpm["token"]).status_code)
        time.sleep(0.2)
    assert seen == [200, 200, 200, 429, 429]  # 0, 45, 90 admitted; 135 >= 100


def test_audit_usage_and_totals_are_the_deployment_s(pair: tuple[Gateway, Gateway]) -> None:
    a, b = pair
    for gw, n in ((a, 3), (b, 2)):
        for _ in range(n):
            assert ask(gw, "vdm-not-a-token").status_code == 401
    with manage(b) as api:
        token = make_token(api, make_project(api, "team-b")["id"])
    # (Until the bus brings the token to ``a``, ``a`` refuses it: one more
    # refusal, audited and counted like the five above.)
    seen: list[int] = []
    eventually(
        lambda: seen.append(ask(a, token["token"]).status_code) or seen[-1], lambda s: s == 200
    )
    refused = 5 + seen.count(401)
    for gw in (a, b, a, b):
        assert ask(gw, token["token"]).status_code == 200

    def denied(api: httpx.Client) -> list[dict[str, Any]]:
        page = api.get("/manage/audit", params={"action": "proxy.authenticate", "page_size": 50})
        return page.json()["events"]

    for gw in (a, b):
        with manage(gw) as api:
            events = eventually(lambda api=api: denied(api), lambda e: len(e) >= refused)
            assert len(events) == refused == len({e["id"] for e in events})  # each once
            count = eventually(
                lambda api=api: api.get(f"/manage/tokens/{token['id']}").json()["request_count"],
                lambda c: c >= 5,
            )
            assert count == 5  # the first successful ask, then four more, on both instances
    # Each instance's JSONL file holds every event (its own consumer), not just its own.
    for gw in (a, b):
        path = gw.log_path.parent / "audit.jsonl"

        def lines(path: Path = path) -> list[dict[str, Any]]:
            text = path.read_text() if path.exists() else ""
            return [json.loads(line) for line in text.splitlines()]

        logged = eventually(
            lines, lambda e: sum(x["action"] == "proxy.authenticate" for x in e) >= refused
        )
        assert sum(x["action"] == "proxy.authenticate" for x in logged) == refused
        assert {"project.create", "token.create"} <= {x["action"] for x in logged}

    def totals(gw: Gateway) -> dict[str, Any]:
        reply = httpx.get(
            gw.url + "/metrics/running-totals", headers={"x-api-key": MGMT}, timeout=5
        )
        return reply.json()["totals"]

    want = refused + 5  # the refused, five answered (all through /v1/messages)
    for gw in (a, b):
        got = eventually(lambda gw=gw: totals(gw), lambda t: t["requests"] >= want)
        assert got["requests"] == want and got["errors"] == refused
        assert got["input_tokens"] > 0
