"""Key benches never shut a provider, through the real gateway, at the default
cooldown settings, driven by the official SDKs.

A bench only orders keys; when every key is benched the request still goes
out on the key whose bench ends first, so the client gets the upstream's own
answer (a bad key is a 401, never a rate limit).  A refusal naming one model
benches only (key, model).  With Redis, benches and the successes that clear
them are shared.
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from tests.integration.test_key_pools import ASK, key_of, keys_tried, pool_env
from tests.support.fakes import FakeUpstream, JSONReply, Recorded, anthropic_message, completion
from tests.support.gateway import Gateway, run_gateway
from tests.support.redisdb import redis_env as shared_redis_env
from tests.support.waiting import eventually, wait_for


class Upstream:
    """A fake's responder: per key (and model), queued refusals first, then a
    standing one, then an answer naming the key that served it."""

    def __init__(self, fake: FakeUpstream, *, anthropic_native: bool = False) -> None:
        self.queued: dict[tuple[str, str | None], deque[JSONReply]] = {}
        self.standing: dict[tuple[str, str | None], JSONReply] = {}
        self._native = anthropic_native
        fake.responder = self

    def once(self, key: str, reply: JSONReply, model: str | None = None) -> None:
        self.queued.setdefault((key, model), deque()).append(reply)

    def always(self, key: str, reply: JSONReply, model: str | None = None) -> None:
        self.standing[(key, model)] = reply

    def __call__(self, recorded: Recorded) -> JSONReply:
        key = key_of(recorded)
        model = recorded.json.get("model")
        for scope in ((key, model), (key, None)):
            queue = self.queued.get(scope)
            if queue:
                return queue.popleft()
            if scope in self.standing:
                return self.standing[scope]
        if self._native:
            return JSONReply(anthropic_message(f"served by {key}"))
        return JSONReply(completion(f"served by {key}"))


def openai_refusal(
    status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None
) -> JSONReply:
    error = {"message": message, "type": "invalid_request_error", "param": None, "code": code}
    return JSONReply({"error": error}, status=status, headers=headers or {})


def anthropic_refusal(status: int, kind: str, message: str) -> JSONReply:
    return JSONReply({"type": "error", "error": {"type": kind, "message": message}}, status=status)


def tagged(*names: str) -> list[str]:
    tag = uuid.uuid4().hex[:8]
    return [f"{name}-{tag}" for name in names]


def ask_anthropic(gateway: Gateway, model: str = "m") -> str:
    with anthropic.Anthropic(
        base_url=gateway.url, api_key="client", max_retries=0, timeout=20
    ) as client:
        message = client.messages.create(model=model, max_tokens=10, messages=ASK)  # type: ignore[arg-type]
    return message.content[0].text  # type: ignore[union-attr]


def ask_openai(gateway: Gateway, model: str = "m") -> str:
    with openai.OpenAI(
        base_url=gateway.url + "/v1", api_key="client", max_retries=0, timeout=20
    ) as client:
        answer = client.chat.completions.create(model=model, messages=ASK)  # type: ignore[arg-type]
    return answer.choices[0].message.content or ""


ASKS = {"anthropic": ask_anthropic, "openai": ask_openai}
ERRORS: dict[str, dict[int, type[Exception]]] = {
    "anthropic": {
        401: anthropic.AuthenticationError,
        403: anthropic.PermissionDeniedError,
        429: anthropic.RateLimitError,
    },
    "openai": {
        401: openai.AuthenticationError,
        403: openai.PermissionDeniedError,
        429: openai.RateLimitError,
    },
}


def refused_with(door: str, status: int, gateway: Gateway, model: str = "m") -> Any:
    """The SDK exception a request gets (the test fails if it is answered)."""
    with pytest.raises(ERRORS[door][status]) as raised:
        ASKS[door](gateway, model)
    return raised.value


# ---------------------------------------------------------------- the only key


@pytest.mark.parametrize("door", ["anthropic", "openai"])
def test_a_429_without_retry_after_on_the_only_key_does_not_hold_the_next_request(
    fake_openai: FakeUpstream, tmp_path: Path, door: str
) -> None:
    (key,) = tagged("only")
    upstream = Upstream(fake_openai)
    upstream.once(key, openai_refusal(429, "Rate limit exceeded: slow down"))
    with run_gateway(pool_env(fake_openai, [key]), tmp_path) as gateway:
        error = refused_with(door, 429, gateway)
        assert "slow down" in error.message  # the upstream's own refusal
        assert error.response.headers["retry-after"] == "1"  # the first backoff step
        # The upstream recovered: the very next request goes out and is served.
        assert ASKS[door](gateway) == f"served by {key}"
        assert keys_tried(fake_openai) == [key, key]


@pytest.mark.parametrize(
    ("door", "native", "expected"),
    [
        ("anthropic", False, "authentication_error"),
        ("anthropic", True, "authentication_error"),
        ("openai", False, "invalid_api_key"),
        ("openai", True, "invalid_api_key"),
    ],
)
def test_a_bad_only_key_reaches_the_client_as_401_on_every_request(
    fake_openai: FakeUpstream,
    fake_anthropic: FakeUpstream,
    tmp_path: Path,
    door: str,
    native: bool,
    expected: str,
) -> None:
    (key,) = tagged("bad")
    fake = fake_anthropic if native else fake_openai
    upstream = Upstream(fake, anthropic_native=native)
    if native:
        upstream.always(key, anthropic_refusal(401, "authentication_error", "invalid x-api-key"))
    else:
        message = "Incorrect API key provided: sk-bad. You can find your API key at ..."
        upstream.always(key, openai_refusal(401, message, "invalid_api_key"))
    env = pool_env(fake_openai, [key])
    if native:
        env |= {"POOL_BASE_URL": fake_anthropic.url, "POOL_API_FORMAT": "anthropic"}
    with run_gateway(env, tmp_path) as gateway:
        for _ in range(3):
            error = refused_with(door, 401, gateway)
            if door == "anthropic":
                assert error.body["error"]["type"] == expected
            else:
                assert error.code == expected
            assert "retry-after" not in error.response.headers
        assert keys_tried(fake) == [key] * 3  # every request reached the upstream
        assert "rate" not in error.message.lower()


@pytest.mark.parametrize("door", ["anthropic", "openai"])
def test_a_refused_only_key_reaches_the_client_as_403_permission_error(
    fake_openai: FakeUpstream, tmp_path: Path, door: str
) -> None:
    (key,) = tagged("suspended")
    Upstream(fake_openai).always(key, openai_refusal(403, "This account is suspended."))
    with run_gateway(pool_env(fake_openai, [key]), tmp_path) as gateway:
        for _ in range(2):
            error = refused_with(door, 403, gateway)
            assert "suspended" in error.message
            if door == "anthropic":
                assert error.body["error"]["type"] == "permission_error"
            else:
                assert error.body["type"] == "permission_error"
        assert keys_tried(fake_openai) == [key] * 2


# ---------------------------------------------------------------- (key, model)


def test_a_403_naming_a_model_benches_only_that_key_for_that_model(
    fake_openai: FakeUpstream, tmp_path: Path
) -> None:
    k1, k2, solo = tagged("k1", "k2", "solo")
    upstream = Upstream(fake_openai)
    no_access = "Project proj_1 does not have access to model gpt-x"
    upstream.always(k1, openai_refusal(403, no_access, "model_not_found"), model="gpt-x")
    upstream.always(solo, openai_refusal(403, no_access), model="gpt-x")
    env = pool_env(fake_openai, [k1, k2], SOLO_API_KEY=solo, SOLO_BASE_URL=fake_openai.url + "/v1")
    with run_gateway(env, tmp_path) as gateway:
        assert ask_anthropic(gateway, "gpt-x") == f"served by {k2}"
        assert keys_tried(fake_openai) == [k1, k2]
        fake_openai.requests.clear()
        # k1 still serves every other model, round robin with k2 ...
        served = [ask_openai(gateway, "gpt-y") for _ in range(4)]
        assert sorted(served) == sorted([f"served by {k1}", f"served by {k2}"] * 2)
        # ... but not gpt-x.
        fake_openai.requests.clear()
        for _ in range(3):
            assert ask_anthropic(gateway, "gpt-x") == f"served by {k2}"
        assert keys_tried(fake_openai) == [k2] * 3
        # A provider's only key refused for one model: the client sees the
        # upstream's 403 for that model, and the key serves the others.
        fake_openai.requests.clear()
        for _ in range(2):
            error = refused_with("anthropic", 403, gateway, "solo:gpt-x")
            assert "gpt-x" in error.message
            assert ask_anthropic(gateway, "solo:gpt-y") == f"served by {solo}"
        assert keys_tried(fake_openai) == [solo] * 4


# ---------------------------------------------------------------- every key benched


def test_every_key_benched_without_retry_after_still_goes_out_on_the_soonest(
    fake_openai: FakeUpstream, tmp_path: Path
) -> None:
    bad, busy = tagged("bad", "busy")
    upstream = Upstream(fake_openai)
    upstream.always(bad, openai_refusal(401, "Incorrect API key provided", "invalid_api_key"))
    upstream.once(busy, openai_refusal(429, "Too many requests"))
    with run_gateway(pool_env(fake_openai, [bad, busy]), tmp_path) as gateway:
        error = refused_with("anthropic", 429, gateway)
        assert keys_tried(fake_openai) == [bad, busy]
        assert error.response.headers["retry-after"] == "1"  # busy's bench ends first
        # Both keys benched (401 for 300 s, 429 for 1 s): out on the 429's key at once.
        fake_openai.requests.clear()
        assert ask_openai(gateway) == f"served by {busy}"
        assert ask_anthropic(gateway) == f"served by {busy}"
        assert keys_tried(fake_openai) == [busy, busy]


def test_retry_after_on_every_key_is_answered_by_the_gateway_on_the_openai_door(
    fake_openai: FakeUpstream, tmp_path: Path
) -> None:
    k1, k2 = tagged("k1", "k2")
    upstream = Upstream(fake_openai)
    upstream.always(k1, openai_refusal(429, "quota", headers={"retry-after": "50"}))
    upstream.always(k2, openai_refusal(429, "quota", headers={"retry-after": "40"}))
    with run_gateway(pool_env(fake_openai, [k1, k2]), tmp_path) as gateway:
        first = refused_with("openai", 429, gateway)
        assert 38 <= int(first.response.headers["retry-after"]) <= 40
        fake_openai.requests.clear()
        again = refused_with("openai", 429, gateway)
        assert fake_openai.requests == []  # not asked while its retry-after holds
        assert 38 <= int(again.response.headers["retry-after"]) <= 40
        assert again.body["type"] == "rate_limit_error"


# ---------------------------------------------------------------- shared through Redis


@pytest.fixture
def redis_env() -> Iterator[dict[str, str]]:
    yield from shared_redis_env()


def key_rows(gateway: Gateway) -> list[dict[str, Any]]:
    snapshot = httpx.get(gateway.url + "/dashboard/api/snapshot", timeout=10)
    assert snapshot.status_code == 200, snapshot.text
    return snapshot.json()["keys"]  # type: ignore[no-any-return]


def wait_rows(gateway: Gateway, ok: Any) -> list[dict[str, Any]]:
    """Poll the dashboard's key states until ``ok`` (another instance's event
    arrives on its own task)."""
    return eventually(lambda: key_rows(gateway), ok)


def test_a_pair_bench_is_shared_and_only_that_pair(
    fake_openai: FakeUpstream, tmp_path: Path, redis_env: dict[str, str]
) -> None:
    k1, k2 = tagged("k1", "k2")
    upstream = Upstream(fake_openai)
    refusal = openai_refusal(
        404, "The model `gpt-x` does not exist or you do not have access to it."
    )
    upstream.always(k1, refusal, model="gpt-x")
    env = pool_env(fake_openai, [k1, k2], **redis_env)
    with run_gateway(env, tmp_path / "a") as first, run_gateway(env, tmp_path / "b") as second:
        assert ask_anthropic(first, "gpt-x") == f"served by {k2}"
        rows = wait_rows(second, lambda rs: any(r["model"] == "gpt-x" for r in rs))
        (pair,) = [r for r in rows if r["model"] == "gpt-x"]
        assert pair["state"] == "benched" and pair["last_status"] == 404
        assert all(r["state"] == "ok" for r in rows if r["model"] is None)
        fake_openai.requests.clear()
        for _ in range(3):
            assert ask_anthropic(second, "gpt-x") == f"served by {k2}"
        assert keys_tried(fake_openai) == [k2] * 3  # never k1 for gpt-x, here either
        fake_openai.requests.clear()
        for _ in range(2):
            ask_anthropic(second, "gpt-y")
        assert sorted(keys_tried(fake_openai)) == sorted([k1, k2])


def test_a_shared_bench_still_goes_out_and_its_success_clears_it_everywhere(
    fake_openai: FakeUpstream, tmp_path: Path, redis_env: dict[str, str]
) -> None:
    import redis

    (key,) = tagged("only")
    upstream = Upstream(fake_openai)
    upstream.once(key, openai_refusal(401, "Incorrect API key provided", "invalid_api_key"))
    env = pool_env(fake_openai, [key], **redis_env)
    stored = redis.Redis.from_url(redis_env["REDIS_URL"])
    pattern = redis_env["REDIS_NAMESPACE"] + ":cooldown:*"
    try:
        with run_gateway(env, tmp_path / "a") as first, run_gateway(env, tmp_path / "b") as second:
            refused_with("anthropic", 401, first)
            rows = wait_rows(second, lambda rs: rs[0]["state"] == "benched")
            assert rows[0]["last_status"] == 401 and rows[0]["seconds_left"] > 250
            assert list(stored.scan_iter(match=pattern))
            # The key was fixed upstream: the other instance's request goes out
            # on its benched (only) key, is served, and clears the bench for all.
            assert ask_openai(second) == f"served by {key}"
            assert wait_rows(first, lambda rs: rs[0]["state"] == "ok")[0]["state"] == "ok"
            assert key_rows(second)[0]["state"] == "ok"
            assert upstream_cleared(stored, pattern)
            with run_gateway(env, tmp_path / "c") as third:
                assert key_rows(third)[0]["state"] == "ok"  # nothing stale to load
    finally:
        stored.close()


def upstream_cleared(stored: Any, pattern: str) -> bool:
    return wait_for(lambda: not list(stored.scan_iter(match=pattern)))


def test_cooldowns_stored_by_the_previous_release_are_loaded(redis_env: dict[str, str]) -> None:
    import asyncio

    import redis

    from vdm.providers.cooldowns import RedisCooldowns

    until = time.time() + 60
    namespace = redis_env["REDIS_NAMESPACE"]
    stored = redis.Redis.from_url(redis_env["REDIS_URL"])
    stored.set(f"{namespace}:cooldown:pool:0123456789abcdef", repr(until), px=60_000)
    stored.set(f"{namespace}:cooldown:pool:bad", b"{not json", px=60_000)
    stored.close()

    async def load() -> RedisCooldowns:
        cooldowns = RedisCooldowns(redis_env["REDIS_URL"], namespace)
        await cooldowns.start()
        await cooldowns.close()
        return cooldowns

    cooldowns = asyncio.run(load())
    assert cooldowns.until("pool:0123456789abcdef") == until
    assert cooldowns.get("pool:bad") is None
