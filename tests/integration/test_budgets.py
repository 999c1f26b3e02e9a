"""Budgets in US dollars for tokens and projects, through the real gateway
process on SQLite and PostgreSQL: set over /manage, spend counted when a
request ends (streams too), a request refused before any upstream call once
the token's or its project's budget is spent (429 in the client's protocol's
shape), audited; GET shows the spend and the period's start."""

from __future__ import annotations

import concurrent.futures
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.support.databases import database_env
from tests.support.fakes import FakeUpstream, JSONReply, SSEReply, completion, stream_of
from tests.support.gateway import Gateway, run_gateway, run_gateways
from tests.support.waiting import eventually

MGMT = "mgmt-secret-0123456789abcdef"
ASK: Any = [{"role": "user", "content": "hi"}]
# gpt-4o: $2.50 input, $10 output per million tokens: 1000 in + 500 out = $0.0075.
USAGE = {"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500}
COST = (1000 * 2.5 + 500 * 10) / 1e6


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    yield from database_env(request.param, tmp_path)


def env_for(fake: FakeUpstream, tmp: Path, db: dict[str, str]) -> dict[str, str]:
    return {
        "OPENAI_API_KEY": "sk-gateway",
        "OPENAI_BASE_URL": fake.url + "/v1",
        "VDM_DEFAULT_PROVIDER": "openai",
        "MANAGEMENT_TOKEN": MGMT,
        "AUDIT_LOG_FILE": str(tmp / "audit.jsonl"),
        "MAX_RETRIES": "0",
        **db,
    }


@pytest.fixture
def gw(fake_openai: FakeUpstream, tmp_path: Path, db: dict[str, str]) -> Iterator[Gateway]:
    fake_openai.responder = lambda r: (
        SSEReply(stream_of(completion("ok", usage=USAGE, model="gpt-4o")))
        if r.json.get("stream")
        else JSONReply(completion("ok", usage=USAGE, model="gpt-4o"))
    )
    with run_gateway(env_for(fake_openai, tmp_path, db), tmp_path) as gateway:
        yield gateway


def manage(gw: Gateway) -> httpx.Client:
    return httpx.Client(base_url=gw.url, headers={"authorization": f"Bearer {MGMT}"}, timeout=10)


def made(api: httpx.Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
    r = api.post(path, json=body)
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()
    return out


def sdk(gw: Gateway, token: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=token, max_retries=0, timeout=30)


def test_a_token_budget_refuses_once_spent_with_openais_insufficient_quota(
    gw: Gateway, fake_openai: FakeUpstream, tmp_path: Path
) -> None:
    with manage(gw) as api:
        project = made(api, "/manage/projects", {"name": "p"})
        token = made(
            api,
            "/manage/tokens",
            {"project_id": project["id"], "max_budget_usd": COST * 1.5, "budget_period": "daily"},
        )
        assert token["spend_usd"] == 0 and token["budget_period"] == "daily"
        with sdk(gw, token["token"]) as client:
            client.chat.completions.create(model="gpt-4o", messages=ASK)  # $0.0075 of $0.01125
            # A stream's cost is counted at its end too (the client asked no usage).
            chunks = list(client.chat.completions.create(model="gpt-4o", messages=ASK, stream=True))
            assert chunks
            # (counted as the stream ends: the client has [DONE] a moment before)
            eventually(
                lambda: api.get(f"/manage/tokens/{token['id']}").json()["spend_usd"],
                lambda spend: spend >= 2 * COST * 0.999,
            )
            sent = len(fake_openai.requests)
            with pytest.raises(openai.RateLimitError) as refused:
                client.chat.completions.create(model="gpt-4o", messages=ASK)
        assert len(fake_openai.requests) == sent  # refused before any upstream call
        error = refused.value.body
        assert isinstance(error, dict) and error["code"] == "insufficient_quota"
        today = datetime.now(UTC).date()
        tomorrow = (today + timedelta(days=1)).isoformat()
        assert "budget" in error["message"] and tomorrow in error["message"], error["message"]
        shown = api.get(f"/manage/tokens/{token['id']}").json()
        assert shown["spend_usd"] == pytest.approx(2 * COST)
        assert shown["budget_started_at"].startswith(today.isoformat())
    audit = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    denied = [e for e in audit if e.get("outcome") == "denied"]
    assert denied and denied[-1]["details"]["reason"] == "budget spent"


def test_a_project_budget_refuses_its_tokens_in_anthropics_shape(gw: Gateway) -> None:
    with manage(gw) as api:
        project = made(api, "/manage/projects", {"name": "q", "max_budget_usd": COST / 2})
        assert project["max_budget_usd"] == COST / 2 and project["budget_period"] is None
        one = made(api, "/manage/tokens", {"project_id": project["id"]})
        two = made(api, "/manage/tokens", {"project_id": project["id"]})
        with sdk(gw, one["token"]) as client:
            client.chat.completions.create(model="gpt-4o", messages=ASK)
        with (
            anthropic.Anthropic(base_url=gw.url, api_key=two["token"], max_retries=0) as claude,
            pytest.raises(anthropic.RateLimitError) as refused,
        ):
            claude.messages.create(model="gpt-4o", max_tokens=10, messages=ASK)
        body = refused.value.body
        assert isinstance(body, dict) and body["error"]["type"] == "rate_limit_error"
        assert "project" in body["error"]["message"] and "lifetime" in body["error"]["message"]
        shown = api.get(f"/manage/projects/{project['id']}").json()
        assert shown["spend_usd"] == pytest.approx(COST)
        # Raising the budget lets the project's tokens in again.
        raised = api.patch(f"/manage/projects/{project['id']}", json={"max_budget_usd": 1.0})
        assert raised.status_code == 200, raised.text
        with sdk(gw, two["token"]) as client:
            client.chat.completions.create(model="gpt-4o", messages=ASK)


def test_a_token_without_a_budget_still_shows_its_spend(gw: Gateway) -> None:
    with manage(gw) as api:
        project = made(api, "/manage/projects", {"name": "r"})
        token = made(api, "/manage/tokens", {"project_id": project["id"]})
        with sdk(gw, token["token"]) as client:
            client.chat.completions.create(model="gpt-4o", messages=ASK)
        shown = eventually(
            lambda: api.get(f"/manage/tokens/{token['id']}").json(), lambda t: t["spend_usd"] > 0
        )
        assert shown["spend_usd"] == pytest.approx(COST) and shown["max_budget_usd"] is None


def test_bad_budgets_are_422s(gw: Gateway) -> None:
    with manage(gw) as api:
        project = made(api, "/manage/projects", {"name": "s"})
        for bad in ({"max_budget_usd": -1}, {"budget_period": "hourly"}):
            r = api.post("/manage/tokens", json={"project_id": project["id"], **bad})
            assert r.status_code == 422, r.text


def test_two_instances_count_every_cost_once_and_refuse_together(
    fake_openai: FakeUpstream, tmp_path: Path
) -> None:
    """Concurrent requests on two instances sharing PostgreSQL: no cost lost
    (each addition is one atomic statement), and once the project's budget
    is spent both instances refuse."""
    fake_openai.responder = lambda r: JSONReply(completion("ok", usage=USAGE, model="gpt-4o"))
    for db in database_env("postgresql", tmp_path):
        envs = [(env_for(fake_openai, tmp_path / n, db), tmp_path / n) for n in ("a", "b")]
        for _, tmp in envs:
            tmp.mkdir()
        with run_gateways(envs) as (a, b), manage(a) as api:
            project = made(api, "/manage/projects", {"name": "shared", "max_budget_usd": 1.0})
            token = made(api, "/manage/tokens", {"project_id": project["id"]})

            def one(gw: Gateway, secret: str = token["token"]) -> int:
                r = httpx.post(
                    gw.url + "/v1/chat/completions",
                    json={"model": "gpt-4o", "messages": ASK},
                    headers={"authorization": f"Bearer {secret}"},
                    timeout=30,
                )
                return r.status_code

            with concurrent.futures.ThreadPoolExecutor(16) as pool:
                statuses = list(pool.map(one, [a, b] * 20))
            assert statuses == [200] * 40
            shown = api.get(f"/manage/projects/{project['id']}").json()
            assert shown["spend_usd"] == pytest.approx(40 * COST)  # (0.30 of 1.00)
            # Spend the rest: the budget lowered below what is spent refuses on both.
            assert api.patch(
                f"/manage/projects/{project['id']}", json={"max_budget_usd": 0.25}
            ).is_success
            assert one(a) == 429 and one(b) == 429
