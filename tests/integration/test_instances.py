"""Two gateway processes sharing the real PostgreSQL (and Redis) behave as one
gateway: driven alternately, they enforce one set of quotas and limits, what
the management API says holds on both when it returns (a new token works, a
revoked one is refused, on the very next request), every audit event is
written once, and they report the same running totals."""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import time
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

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
from tests.support.slow_link import slow_link
from tests.support.waiting import eventually  # (the other instance's consumers run apart)


def _pair(
    fake_openai: FakeUpstream, fake_anthropic: FakeUpstream, tmp_path: Path, redis: bool
) -> Iterator[tuple[Gateway, Gateway]]:
    answer_everything(fake_openai, fake_anthropic)
    for db in database_env("postgresql", tmp_path):
        for shared in redis_env() if redis else iter([{}]):
            with ExitStack() as stack:
                gateways = []
                for name in ("a", "b"):
                    tmp = tmp_path / name
                    env = env_for(fake_openai, fake_anthropic, tmp, **db, **shared)
                    gateways.append(stack.enter_context(run_gateway(env, tmp)))
                yield gateways[0], gateways[1]


@pytest.fixture
def pair(
    fake_openai: FakeUpstream, fake_anthropic: FakeUpstream, tmp_path: Path
) -> Iterator[tuple[Gateway, Gateway]]:
    """Two instances on PostgreSQL and Redis."""
    yield from _pair(fake_openai, fake_anthropic, tmp_path, redis=True)


@pytest.fixture(params=["redis", "database-only"])
def any_pair(
    request: pytest.FixtureRequest,
    fake_openai: FakeUpstream,
    fake_anthropic: FakeUpstream,
    tmp_path: Path,
) -> Iterator[tuple[Gateway, Gateway]]:
    """Two instances on PostgreSQL, with Redis (its event bus) and without."""
    yield from _pair(fake_openai, fake_anthropic, tmp_path, redis=request.param == "redis")


def test_what_the_management_api_says_holds_on_every_instance_when_it_returns(
    any_pair: tuple[Gateway, Gateway],
) -> None:
    """No polling here: each call is followed at once by a request to the other
    instance, as a script behind a load balancer would."""
    a, b = any_pair
    with manage(a) as api:
        project = make_project(api)
        token = make_token(api, project["id"])
        assert ask(b, token["token"]).status_code == 200  # read through to the database
        assert api.delete(f"/manage/tokens/{token['id']}").status_code == 204
        assert ask(b, token["token"]).status_code == 401

        soon = make_token(api, project["id"])
        assert ask(b, soon["token"]).status_code == 200
        past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
        patched = api.patch(f"/manage/tokens/{soon['id']}", json={"expires_at": past})
        assert patched.status_code == 200, patched.text
        assert ask(b, soon["token"]).status_code == 401

        other = make_token(api, project["id"])
        assert ask(b, other["token"]).status_code == 200
        off = api.patch(f"/manage/projects/{project['id']}", json={"is_active": False})
        assert off.status_code == 200, off.text
        assert ask(b, other["token"]).status_code == 403
        assert ask(a, other["token"]).status_code == 403


def test_a_frozen_instance_refuses_tokens_when_it_wakes_after_a_revocation(
    any_pair: tuple[Gateway, Gateway],
) -> None:
    """The revocation cannot wait for an instance that stopped answering: it
    returns once that one has been silent for a lease, and that one, waking,
    serves no token it could not confirm (its fence: half a lease)."""
    a, b = any_pair
    with manage(a) as api:
        token = make_token(api, make_project(api)["id"])
        assert ask(b, token["token"]).status_code == 200
        os.kill(b.process.pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            revoked = api.delete(f"/manage/tokens/{token['id']}", timeout=60)
            assert revoked.status_code == 204
            waited = time.monotonic() - started
        finally:
            os.kill(b.process.pid, signal.SIGCONT)
        assert 10.0 <= waited < 40.0  # a lease (15 s), not forever
        assert ask(b, token["token"]).status_code in (401, 503)  # never served
        assert eventually(lambda: ask(b, token["token"]).status_code, lambda s: s == 401) == 401
        # Taken as gone once; the next change does not wait for it again (it is back anyway).
        started = time.monotonic()
        second = make_token(api, token["project_id"])
        assert api.delete(f"/manage/tokens/{second['id']}").status_code == 204
        assert time.monotonic() - started < 5.0


def test_quota_and_per_minute_limits_hold_across_instances(pair: tuple[Gateway, Gateway]) -> None:
    a, b = pair
    with manage(a) as api:
        project = make_project(api)
        quota = make_token(api, project["id"], max_requests=10)
        rpm = make_token(api, project["id"], rpm=5)
        tpm = make_token(api, project["id"], tpm=100)  # 45 tokens an answer

    def alternately(token: dict[str, Any], n: int) -> list[int]:
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            return list(
                pool.map(lambda i: ask((a, b)[i % 2], token["token"]).status_code, range(n))
            )

    statuses = alternately(quota, 30)
    assert statuses.count(200) == 10 and statuses.count(429) == 20
    statuses = alternately(rpm, 12)
    assert statuses.count(200) == 5 and statuses.count(429) == 7
    # An answer's tokens are counted in Redis before its last byte goes out: the
    # next request, on either instance, sees them.  One at a time, each instance in turn.
    seen = [ask((a, b)[i % 2], tpm["token"]).status_code for i in range(5)]
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


def test_an_answer_s_tokens_count_everywhere_before_it_ends_even_on_a_slow_redis(
    fake_openai: FakeUpstream, fake_anthropic: FakeUpstream, tmp_path: Path
) -> None:
    """Redis writes of a finished answer's tokens held back 0.5 s: a client
    that asks again at once, on the other instance, is still judged with them
    (they are counted before the answer's last byte, not in the background)."""
    answer_everything(fake_openai, fake_anthropic)
    for db in database_env("postgresql", tmp_path):
        for shared in redis_env():
            with slow_link("127.0.0.1", 6379, b"HINCRBY", 0.5) as port, ExitStack() as stack:
                shared = {**shared, "REDIS_URL": f"redis://127.0.0.1:{port}/0"}
                a, b = (
                    stack.enter_context(
                        run_gateway(env_for(fake_openai, fake_anthropic, tmp, **db, **shared), tmp)
                    )
                    for tmp in (tmp_path / "a", tmp_path / "b")
                )
                with manage(a) as api:
                    tpm = make_token(api, make_project(api)["id"], tpm=100)  # 45 an answer
                seen = [ask((a, b)[i % 2], tpm["token"]).status_code for i in range(5)]
                assert seen == [200, 200, 200, 429, 429]
