"""The response cache through the real gateway process and the official SDKs:
opt-in, whole answers only, replayed streams, tenants kept apart, expiry,
the Redis backend and /manage/cache/purge."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.conftest import upstream_env
from tests.support.fakes import (
    FakeUpstream,
    JSONReply,
    SSEReply,
    anthropic_message,
    anthropic_stream,
    completion,
    error_reply,
    stream_of,
)
from tests.support.gateway import Gateway, run_gateway
from tests.support.redisdb import redis_env as shared_redis_env
from tests.support.waiting import eventually

MGMT = "mgmt-secret-0123456789abcdef"
CACHE = {"Cache-Control": "max-age=60"}
ROUTED_TTL_MODEL = "plain:cached-model"


def unique() -> str:
    """A prompt no other test sent (entries live as long as the gateway)."""
    return "q-" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def gw(
    fake_openai: FakeUpstream,
    fake_anthropic: FakeUpstream,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway]:
    env = {**upstream_env(fake_openai, fake_anthropic), "CACHE_MODELS": f"{ROUTED_TTL_MODEL}=300"}
    with run_gateway(env, tmp_path_factory.mktemp("cache")) as gateway:
        yield gateway


def oai(gw: Gateway, key: str = "client-key") -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0, timeout=30)


def ant(gw: Gateway, key: str = "client-key") -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0, timeout=30)


def chat(
    client: openai.OpenAI, prompt: str, model: str = "gpt-4o", headers: dict[str, str] | None = None
) -> Any:
    return client.chat.completions.with_raw_response.create(
        model=model,
        messages=[{"role": "user", "content": prompt}],
        extra_headers=CACHE if headers is None else headers,
    )


def test_miss_then_hit_the_upstream_sees_one_request(
    gw: Gateway, fake_openai: FakeUpstream
) -> None:
    fake_openai.responder = lambda r: JSONReply(completion("cached answer"))
    prompt = unique()
    with oai(gw) as client:
        first = chat(client, prompt)
        second = chat(client, prompt)
        other = chat(client, prompt + "-other")  # another request: its own entry
    assert first.headers["x-vdm-cache"] == "miss"
    assert second.headers["x-vdm-cache"] == "hit"
    assert other.headers["x-vdm-cache"] == "miss"
    assert second.parse().choices[0].message.content == "cached answer"
    assert second.parse().model_dump() == first.parse().model_dump()
    assert second.headers["x-vdm-provider"] == "openai"
    assert len(fake_openai.requests) == 2


def test_no_cache_header_means_no_cache(gw: Gateway, fake_openai: FakeUpstream) -> None:
    fake_openai.responder = lambda r: JSONReply(completion("fresh"))
    prompt = unique()
    with oai(gw) as client:
        replies = [chat(client, prompt, headers={}) for _ in range(2)]
        stored = chat(client, prompt, headers={"Cache-Control": "no-store, max-age=60"})
    assert all("x-vdm-cache" not in r.headers for r in [*replies, stored])
    assert len(fake_openai.requests) == 3


def test_a_model_ttl_caches_without_a_header(gw: Gateway, fake_openai: FakeUpstream) -> None:
    fake_openai.responder = lambda r: JSONReply(completion("by model"))
    prompt = unique()
    with oai(gw) as client:
        first = chat(client, prompt, model=ROUTED_TTL_MODEL, headers={})
        second = chat(client, prompt, model=ROUTED_TTL_MODEL, headers={})
        fresh = chat(client, prompt, model=ROUTED_TTL_MODEL, headers={"Cache-Control": "no-cache"})
    assert [first.headers["x-vdm-cache"], second.headers["x-vdm-cache"]] == ["miss", "hit"]
    assert fresh.headers["x-vdm-cache"] == "miss"
    assert len(fake_openai.requests) == 2


def test_streamed_hit_replays_a_valid_stream_conversion(
    gw: Gateway, fake_openai: FakeUpstream
) -> None:
    """Anthropic client, OpenAI provider: the converted stream is replayed."""
    fake_openai.responder = lambda r: SSEReply(stream_of(completion("streamed and cached")))
    prompt = unique()
    messages: list[Any] = []
    caches: list[str] = []
    with ant(gw) as client:
        for _ in range(2):
            with client.messages.stream(
                model="gpt-4o",
                max_tokens=50,
                extra_headers=CACHE,
                messages=[{"role": "user", "content": prompt}],
            ) as s:
                caches.append(s.response.headers["x-vdm-cache"])
                messages.append(s.get_final_message())
    assert caches == ["miss", "hit"]
    assert messages[1].content[0].text == "streamed and cached"
    assert messages[1].model_dump() == messages[0].model_dump()
    assert len(fake_openai.requests) == 1


def test_streamed_hit_replays_the_passthrough_bytes(
    gw: Gateway, fake_anthropic: FakeUpstream
) -> None:
    fake_anthropic.responder = lambda r: SSEReply(anthropic_stream(["pass", "through"]))
    prompt = unique()
    texts: list[str] = []
    with ant(gw) as client:
        for _ in range(2):
            with client.messages.stream(
                model="ant:claude-x",
                max_tokens=50,
                extra_headers=CACHE,
                messages=[{"role": "user", "content": prompt}],
            ) as s:
                texts.append(s.get_final_text())
                last = s.response.headers["x-vdm-cache"]
    assert texts == ["passthrough", "passthrough"] and last == "hit"
    assert len(fake_anthropic.requests) == 1


def test_openai_stream_hit(gw: Gateway, fake_openai: FakeUpstream) -> None:
    fake_openai.responder = lambda r: SSEReply(stream_of(completion("chunks")))
    prompt = unique()
    texts = []
    with oai(gw) as client:
        for _ in range(2):
            stream = client.chat.completions.create(
                model="gpt-4o",
                messages=[{"role": "user", "content": prompt}],
                stream=True,
                extra_headers=CACHE,
            )
            texts.append("".join(c.choices[0].delta.content or "" for c in stream if c.choices))
    assert texts == ["chunks", "chunks"]
    assert len(fake_openai.requests) == 1


def test_tenants_by_client_key_are_isolated(gw: Gateway, fake_openai: FakeUpstream) -> None:
    fake_openai.responder = lambda r: JSONReply(completion("mine"))
    prompt = unique()
    with oai(gw, "key-one") as one, oai(gw, "key-two") as two:
        assert chat(one, prompt).headers["x-vdm-cache"] == "miss"
        assert chat(two, prompt).headers["x-vdm-cache"] == "miss"
        assert chat(one, prompt).headers["x-vdm-cache"] == "hit"
    assert len(fake_openai.requests) == 2


def test_an_aborted_stream_is_not_cached(gw: Gateway, fake_openai: FakeUpstream) -> None:
    chunks = stream_of(completion("cut short"))
    prompt = unique()
    fake_openai.reply(SSEReply(chunks, cut_after=2))  # the upstream dies mid-answer
    body = {"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": prompt}]}
    with httpx.Client(timeout=30) as http:
        with http.stream("POST", gw.url + "/v1/chat/completions", json=body, headers=CACHE) as r:
            assert r.headers["x-vdm-cache"] == "miss"
            text = r.read().decode()
        assert '"error"' in text
        # the client leaves after the first chunk, the rest held back meanwhile
        hold = threading.Event()
        fake_openai.reply(SSEReply(chunks, holds={2: hold}))
        try:
            with http.stream(
                "POST", gw.url + "/v1/chat/completions", json=body, headers=CACHE
            ) as r:
                next(r.iter_bytes())
            assert fake_openai.wait_for(lambda: fake_openai.cancelled == 1)  # it was given up
        finally:
            hold.set()
        fake_openai.reply(SSEReply(chunks))
        with http.stream("POST", gw.url + "/v1/chat/completions", json=body, headers=CACHE) as r:
            assert r.headers["x-vdm-cache"] == "miss"
            r.read()
        with http.stream("POST", gw.url + "/v1/chat/completions", json=body, headers=CACHE) as r:
            assert r.headers["x-vdm-cache"] == "hit"
            replayed = r.read().decode()
            assert replayed.rstrip().endswith("data: [DONE]") and '"error"' not in replayed
    assert len(fake_openai.requests) == 3


def test_errors_are_not_cached(gw: Gateway, fake_openai: FakeUpstream) -> None:
    prompt = unique()
    fake_openai.reply(error_reply(400, "bad thing"), JSONReply(completion("good")))
    with oai(gw) as client:
        with pytest.raises(openai.BadRequestError):
            chat(client, prompt)
        assert chat(client, prompt).headers["x-vdm-cache"] == "miss"
        assert chat(client, prompt).headers["x-vdm-cache"] == "hit"
    assert len(fake_openai.requests) == 2


def test_entries_expire(gw: Gateway, fake_openai: FakeUpstream) -> None:
    fake_openai.responder = lambda r: JSONReply(completion("short-lived"))
    prompt = unique()
    short = {"Cache-Control": "max-age=2"}
    with oai(gw) as client:
        started = time.monotonic()
        assert chat(client, prompt, headers=short).headers["x-vdm-cache"] == "miss"
        assert chat(client, prompt, headers=short).headers["x-vdm-cache"] == "hit"
        # Time is the subject (the gateway's own clock): hits until the age passes.
        cached = eventually(
            lambda: chat(client, prompt, headers=short).headers["x-vdm-cache"],
            lambda seen: seen == "miss",
            every=0.1,
        )
        assert cached == "miss" and time.monotonic() - started >= 1.9
    assert len(fake_openai.requests) == 2


def test_a_bad_max_age_is_a_400(gw: Gateway) -> None:
    with oai(gw) as client, pytest.raises(openai.BadRequestError) as info:
        chat(client, unique(), headers={"Cache-Control": "max-age=soon"})
    assert "max-age" in str(info.value)


# ---------------------------------------------------------------- tenants and purge


def tenant_env(
    fake_openai: FakeUpstream, fake_anthropic: FakeUpstream, tmp: Path, **extra: str
) -> dict[str, str]:
    return {
        **upstream_env(fake_openai, fake_anthropic),
        "MANAGEMENT_TOKEN": MGMT,
        "AUDIT_LOG_FILE": str(tmp / "audit.jsonl"),
        "DATABASE_URL": f"sqlite:///{tmp / 'vdm.db'}",
        **extra,
    }


def manage(gw: Gateway) -> httpx.Client:
    return httpx.Client(base_url=gw.url, headers={"authorization": f"Bearer {MGMT}"}, timeout=10)


def token_for(api: httpx.Client, name: str) -> tuple[str, str, str]:
    project = api.post("/manage/projects", json={"name": name, "api_keys": {}}).json()
    token = api.post("/manage/tokens", json={"project_id": project["id"]}).json()
    return project["id"], token["id"], token["token"]


def ask(gw: Gateway, token: str, prompt: str) -> httpx.Response:
    body = {
        "model": "ant:claude-x",
        "max_tokens": 10,
        "messages": [{"role": "user", "content": prompt}],
    }
    return httpx.post(
        gw.url + "/v1/messages", json=body, timeout=10, headers={"x-api-key": token, **CACHE}
    )


def run_tenant_cache(gw: Gateway, fake_anthropic: FakeUpstream) -> None:
    fake_anthropic.responder = lambda r: JSONReply(anthropic_message("tenant answer"))
    prompt = unique()
    with manage(gw) as api:
        project_a, token_a, secret_a = token_for(api, "team-a")
        _, _, secret_b = token_for(api, "team-b")
        assert ask(gw, secret_a, prompt).headers["x-vdm-cache"] == "miss"
        assert ask(gw, secret_b, prompt).headers["x-vdm-cache"] == "miss"
        hit = ask(gw, secret_a, prompt)
        assert hit.headers["x-vdm-cache"] == "hit"
        assert hit.json()["content"][0]["text"] == "tenant answer"
        assert len(fake_anthropic.requests) == 2
        assert api.get(f"/manage/tokens/{token_a}").json()["cache_hit_count"] == 1

        body = {
            "model": "ant:claude-x",
            "max_tokens": 10,
            "messages": [{"role": "user", "content": prompt}],
        }
        exact = {"method": "POST", "url": "/v1/messages", "body": body, "project": project_a}
        assert api.post("/manage/cache/purge", json=exact).json() == {"deleted": True}
        assert api.post("/manage/cache/purge", json=exact).json() == {"deleted": False}
        assert ask(gw, secret_a, prompt).headers["x-vdm-cache"] == "miss"
        assert ask(gw, secret_b, prompt).headers["x-vdm-cache"] == "hit"  # b's entry stayed

        by_model = {"method": "POST", "url": "/v1/", "prefix": "/v1/", "model": "ant:claude-x"}
        assert api.post("/manage/cache/purge", json=by_model).json() == {"deleted": 2}
        assert ask(gw, secret_b, prompt).headers["x-vdm-cache"] == "miss"
        other = {"method": "POST", "url": "/v1/", "prefix": "/v1/", "project": project_a}
        assert api.post("/manage/cache/purge", json=other).json() == {"deleted": 0}
        bad = {"method": "POST", "url": "/v1/messages"}
        assert api.post("/manage/cache/purge", json=bad).status_code == 400


def test_tokens_of_two_projects_hits_counted_and_purge(
    fake_openai: FakeUpstream, fake_anthropic: FakeUpstream, tmp_path: Path
) -> None:
    with run_gateway(tenant_env(fake_openai, fake_anthropic, tmp_path), tmp_path) as gw:
        run_tenant_cache(gw, fake_anthropic)


@pytest.fixture
def redis_env() -> Iterator[dict[str, str]]:
    yield from shared_redis_env()


def test_redis_backend(
    fake_openai: FakeUpstream,
    fake_anthropic: FakeUpstream,
    tmp_path: Path,
    redis_env: dict[str, str],
) -> None:
    import redis

    env = tenant_env(fake_openai, fake_anthropic, tmp_path, **redis_env)
    with run_gateway(env, tmp_path) as gw:
        run_tenant_cache(gw, fake_anthropic)  # the same behaviour, on Redis
        fake_anthropic.reset()
        fake_anthropic.responder = lambda r: JSONReply(anthropic_message("in redis"))
        with manage(gw) as api:
            _, _, secret = token_for(api, "team-c")
        prompt = unique()
        assert ask(gw, secret, prompt).headers["x-vdm-cache"] == "miss"
    client = redis.Redis.from_url(redis_env["REDIS_URL"])
    try:
        pattern = redis_env["REDIS_NAMESPACE"] + ":cache:*:anthropic:ant:claude-x:*"
        keys = list(client.scan_iter(match=pattern))
        assert keys and all(0 < client.ttl(k) <= 60 for k in keys)
    finally:
        client.close()
    with run_gateway(env, tmp_path / "again") as second:  # another instance: the same cache
        assert ask(second, secret, prompt).headers["x-vdm-cache"] == "hit"
    assert len(fake_anthropic.requests) == 1
