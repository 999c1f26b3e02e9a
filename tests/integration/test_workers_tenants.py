"""``--workers N`` keeps the control plane's promises a single process keeps,
on SQLite too: a lifetime quota is exact across the workers, what the
management API changes holds in every worker when it returns, and where a
promise cannot hold (per-minute limits without Redis to share them) the
gateway says so instead of breaking it quietly."""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

import pytest

from tests.integration.test_tenants import (
    answer_everything,
    ask,
    env_for,
    make_project,
    make_token,
    manage,
)
from tests.support.fakes import FakeUpstream
from tests.support.gateway import run_gateway, spawn_gateway, stop_gateway

WORKERS = ["--workers", "2"]


def _many(url_ask: object, n: int) -> list[int]:
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        return list(pool.map(lambda _: url_ask(), range(n)))  # type: ignore[operator]


def test_quota_and_revocation_hold_in_every_worker_on_sqlite(
    fake_openai: FakeUpstream, fake_anthropic: FakeUpstream, tmp_path: Path
) -> None:
    answer_everything(fake_openai, fake_anthropic)
    env = env_for(fake_openai, fake_anthropic, tmp_path)
    with run_gateway(env, tmp_path, args=WORKERS) as gw, manage(gw) as api:
        project = make_project(api)
        quota = make_token(api, project["id"], max_requests=20)
        # New connections each time: the kernel spreads them over both workers.
        statuses = _many(lambda: ask(gw, quota["token"]).status_code, 80)
        assert statuses.count(200) == 20 and statuses.count(429) == 60  # was 38 admitted

        token = make_token(api, project["id"])
        assert all(s == 200 for s in _many(lambda: ask(gw, token["token"]).status_code, 12))
        assert api.delete(f"/manage/tokens/{token['id']}").status_code == 204
        after = _many(lambda: ask(gw, token["token"]).status_code, 12)
        assert after == [401] * 12  # was 5 of 12 served for about a second


def test_per_minute_limits_without_redis_are_refused_not_broken(
    fake_openai: FakeUpstream, fake_anthropic: FakeUpstream, tmp_path: Path
) -> None:
    answer_everything(fake_openai, fake_anthropic)
    env = env_for(fake_openai, fake_anthropic, tmp_path)
    with run_gateway(env, tmp_path, args=WORKERS) as gw, manage(gw) as api:
        project = make_project(api)
        refused = api.post("/manage/tokens", json={"project_id": project["id"], "rpm": 5})
        assert refused.status_code == 409
        assert "REDIS_URL" in refused.json()["detail"]
        assert make_token(api, project["id"], max_requests=5)["id"]  # other limits are fine
    # A token with a per-minute limit made by a single process: --workers refuses to start.
    with run_gateway(env, tmp_path) as gw, manage(gw) as api:
        make_token(api, api.get("/manage/projects").json()[0]["id"], tpm=1000)
    gateway = spawn_gateway(env, tmp_path, args=WORKERS)
    try:
        code = gateway.process.wait(60)
    finally:
        if gateway.process.poll() is None:
            stop_gateway(gateway)
    assert code != 0
    lines = [line for line in gateway.log().splitlines() if "per-minute limits" in line]
    assert lines and "REDIS_URL" in lines[0], gateway.log()


@pytest.mark.parametrize("n", [2])
def test_workers_serve_a_token_made_in_another_worker_at_once(
    n: int, fake_openai: FakeUpstream, fake_anthropic: FakeUpstream, tmp_path: Path
) -> None:
    answer_everything(fake_openai, fake_anthropic)
    env = env_for(fake_openai, fake_anthropic, tmp_path)
    with run_gateway(env, tmp_path, args=["--workers", str(n)]) as gw, manage(gw) as api:
        project = make_project(api)
        for _ in range(5):  # each made by whichever worker took the call
            token = make_token(api, project["id"])
            assert ask(gw, token["token"]).status_code == 200
