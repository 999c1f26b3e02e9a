"""Key pools, !PASSTHRU and Redis-shared cooldowns, through the real gateway.

The fake upstream answers by key (a responder reading the auth header), so
each test can say which key is refused and check, from the fake's record,
which keys were tried.
"""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import anthropic
import openai
import pytest

from tests.support.fakes import FakeUpstream, JSONReply, Recorded, completion
from tests.support.gateway import Gateway, run_gateway
from tests.support.redisdb import redis_env as shared_redis_env

ASK = [{"role": "user", "content": "hi"}]


def key_of(recorded: Recorded) -> str:
    return recorded.headers.get("authorization", "").removeprefix(
        "Bearer "
    ) or recorded.headers.get("x-api-key", "")


def by_key(refusals: dict[str, tuple[int, dict[str, str]]]) -> Callable[[Recorded], JSONReply]:
    """A responder: refuse the listed keys with (status, headers), answer the rest."""

    def respond(recorded: Recorded) -> JSONReply:
        refusal = refusals.get(key_of(recorded))
        if refusal is not None:
            status, headers = refusal
            return JSONReply(
                {"error": {"message": f"refused with {status}"}}, status=status, headers=headers
            )
        return JSONReply(completion(f"served by {key_of(recorded)}"))

    return respond


def keys_tried(fake: FakeUpstream) -> list[str]:
    return [key_of(r) for r in fake.requests]


def pool_env(fake: FakeUpstream, keys: list[str], **extra: str) -> dict[str, str]:
    return {
        "POOL_API_KEY": " ".join(keys),
        "POOL_BASE_URL": fake.url + "/v1",
        "VDM_DEFAULT_PROVIDER": "pool",
        "MAX_RETRIES": "0",
        **extra,
    }


def ask(gateway: Gateway) -> anthropic.types.Message:
    with anthropic.Anthropic(
        base_url=gateway.url, api_key="client", max_retries=0, timeout=20
    ) as client:
        return client.messages.create(model="m", max_tokens=10, messages=ASK)  # type: ignore[arg-type]


@pytest.fixture
def keys() -> list[str]:
    tag = uuid.uuid4().hex[:8]
    return [f"k1-{tag}", f"k2-{tag}", f"k3-{tag}"]


def test_round_robin_over_the_pool(
    fake_openai: FakeUpstream, tmp_path: Path, keys: list[str]
) -> None:
    fake_openai.responder = by_key({})
    with run_gateway(pool_env(fake_openai, keys), tmp_path) as gateway:
        texts = [ask(gateway).content[0].text for _ in range(6)]  # type: ignore[union-attr]
    assert keys_tried(fake_openai) == keys * 2
    assert texts == [f"served by {k}" for k in keys * 2]


@pytest.mark.parametrize("status", [401, 403])
def test_refused_key_is_benched_and_the_request_served_by_the_next(
    fake_openai: FakeUpstream, tmp_path: Path, keys: list[str], status: int
) -> None:
    fake_openai.responder = by_key({keys[0]: (status, {})})
    with run_gateway(pool_env(fake_openai, keys), tmp_path) as gateway:
        first = ask(gateway)
        assert first.content[0].text == f"served by {keys[1]}"  # type: ignore[union-attr]
        assert keys_tried(fake_openai) == [keys[0], keys[1]]
        fake_openai.requests.clear()
        for _ in range(4):
            ask(gateway)
        assert keys[0] not in keys_tried(fake_openai)  # benched for KEY_AUTH_COOLDOWN
        assert sorted(set(keys_tried(fake_openai))) == sorted(keys[1:])
        log = gateway.log()
    assert keys[0] not in log and "benched" in log  # logged by hash, never the key


def test_every_key_rate_limited_gives_429_with_the_soonest_return(
    fake_openai: FakeUpstream, tmp_path: Path, keys: list[str]
) -> None:
    fake_openai.responder = by_key(
        {
            keys[0]: (429, {"retry-after": "40"}),
            keys[1]: (429, {"retry-after": "20"}),
            keys[2]: (429, {"retry-after": "30"}),
        }
    )
    with run_gateway(pool_env(fake_openai, keys), tmp_path) as gateway:
        with pytest.raises(anthropic.RateLimitError) as raised:
            ask(gateway)
        assert keys_tried(fake_openai) == keys
        assert 18 <= int(raised.value.response.headers["retry-after"]) <= 20
        # Every key is cooling now: answered at once, without asking the upstream.
        fake_openai.requests.clear()
        with pytest.raises(anthropic.RateLimitError) as again:
            ask(gateway)
        assert fake_openai.requests == []
        assert 18 <= int(again.value.response.headers["retry-after"]) <= 20
        assert "cooling down" in again.value.message
        assert again.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]


def test_rate_limited_key_without_retry_after_backs_off_up_to_the_setting(
    fake_openai: FakeUpstream, tmp_path: Path, keys: list[str]
) -> None:
    fake_openai.responder = by_key({keys[0]: (429, {})})
    env = pool_env(fake_openai, keys[:1], KEY_RATE_LIMIT_COOLDOWN="3")
    seen = []
    with run_gateway(env, tmp_path) as gateway:
        for _ in range(4):
            with pytest.raises(anthropic.RateLimitError) as raised:
                ask(gateway)
            seen.append(raised.value.response.headers["retry-after"])
    assert seen == ["1", "2", "3", "3"]  # 1 s, doubled per consecutive 429, capped
    assert keys_tried(fake_openai) == keys[:1] * 4  # every request went out


# ---------------------------------------------------------------- !PASSTHRU


@pytest.fixture(scope="module")
def passthru_gateway(
    fake_openai: FakeUpstream,
    fake_anthropic: FakeUpstream,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway]:
    env = {
        "MINE_API_KEY": "!PASSTHRU",
        "MINE_BASE_URL": fake_openai.url + "/v1",
        "MYANT_API_KEY": "!PASSTHRU",
        "MYANT_BASE_URL": fake_anthropic.url,
        "MYANT_API_FORMAT": "anthropic",
        "OURS_API_KEY": "sk-ours",
        "OURS_BASE_URL": fake_openai.url + "/v1",
        "VDM_DEFAULT_PROVIDER": "ours",
        "MAX_RETRIES": "0",
        "VDM_FALLBACKS": "mine:m=ours:m2",
    }
    with run_gateway(env, tmp_path_factory.mktemp("passthru")) as gateway:
        yield gateway


def test_passthru_sends_the_clients_key_both_doors(
    passthru_gateway: Gateway, fake_openai: FakeUpstream, fake_anthropic: FakeUpstream
) -> None:
    fake_openai.responder = by_key({})
    with anthropic.Anthropic(
        base_url=passthru_gateway.url, api_key="sk-client-1", max_retries=0
    ) as client:
        client.messages.create(model="mine:m", max_tokens=5, messages=ASK)  # type: ignore[arg-type]
    assert fake_openai.last.headers["authorization"] == "Bearer sk-client-1"
    with openai.OpenAI(
        base_url=passthru_gateway.url + "/v1", api_key="sk-client-2", max_retries=0
    ) as oclient:
        oclient.chat.completions.create(model="mine:m", messages=ASK)  # type: ignore[arg-type]
    assert fake_openai.last.headers["authorization"] == "Bearer sk-client-2"
    fake_anthropic.responder = lambda r: JSONReply(
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "x",
            "content": [],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 1, "output_tokens": 1},
        }
    )
    with anthropic.Anthropic(
        base_url=passthru_gateway.url, api_key="sk-client-3", max_retries=0
    ) as client:
        client.messages.create(model="myant:m", max_tokens=5, messages=ASK)  # type: ignore[arg-type]
    assert fake_anthropic.last.headers["x-api-key"] == "sk-client-3"
    assert "sk-client" not in passthru_gateway.log()


def test_passthru_without_a_client_key_is_a_clear_401(
    passthru_gateway: Gateway, fake_openai: FakeUpstream
) -> None:
    import httpx

    response = httpx.post(
        passthru_gateway.url + "/v1/messages",
        timeout=10,
        json={"model": "mine:m", "max_tokens": 5, "messages": ASK},
    )
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"
    assert "PASSTHRU" in response.json()["error"]["message"]
    assert fake_openai.requests == []


def test_static_provider_never_sees_the_clients_key(
    passthru_gateway: Gateway, fake_openai: FakeUpstream
) -> None:
    fake_openai.responder = by_key({})
    with anthropic.Anthropic(
        base_url=passthru_gateway.url, api_key="sk-client-4", max_retries=0
    ) as client:
        client.messages.create(model="m", max_tokens=5, messages=ASK)  # type: ignore[arg-type]
    assert fake_openai.last.headers["authorization"] == "Bearer sk-ours"


def test_a_fallback_gets_its_own_key_not_the_clients(
    passthru_gateway: Gateway, fake_openai: FakeUpstream
) -> None:
    fake_openai.responder = by_key({"sk-client-5": (401, {})})
    with anthropic.Anthropic(
        base_url=passthru_gateway.url, api_key="sk-client-5", max_retries=0
    ) as client:
        message = client.messages.with_raw_response.create(
            model="mine:m", max_tokens=5, messages=ASK
        )  # type: ignore[arg-type]
    assert keys_tried(fake_openai) == ["sk-client-5", "sk-ours"]
    assert fake_openai.requests[1].json["model"] == "m2"
    assert message.headers["x-vdm-provider"] == "ours"
    assert message.headers["x-vdm-model"] == "m2"


# ---------------------------------------------------------------- shared cooldowns


@pytest.fixture
def redis_env() -> Iterator[dict[str, str]]:
    yield from shared_redis_env()


def test_a_429_on_one_instance_benches_the_key_for_every_instance(
    fake_openai: FakeUpstream, tmp_path: Path, keys: list[str], redis_env: dict[str, str]
) -> None:
    import redis

    fake_openai.responder = by_key({keys[0]: (429, {"retry-after": "60"})})
    env = pool_env(fake_openai, keys[:2], **redis_env)
    with run_gateway(env, tmp_path / "a") as first, run_gateway(env, tmp_path / "b") as second:
        assert ask(first).content[0].text == f"served by {keys[1]}"  # type: ignore[union-attr]
        fake_openai.requests.clear()
        for _ in range(4):
            ask(second)
        assert keys_tried(fake_openai) == [keys[1]] * 4
        # An instance started later loads the live cooldowns.
        fake_openai.requests.clear()
        with run_gateway(env, tmp_path / "c") as third:
            for _ in range(3):
                ask(third)
        assert keys_tried(fake_openai) == [keys[1]] * 3
    stored = redis.Redis.from_url(redis_env["REDIS_URL"])
    names = [
        n.decode()
        for n in stored.scan_iter(match=redis_env["REDIS_NAMESPACE"] + ":cooldown:pool:*")
    ]
    mine = [n for n in names if json.loads(stored.get(n) or "{}").get("until", 0) > 0]
    assert mine, "the cooldown is in Redis"
    assert all(k not in n for n in names for k in keys)  # hashes, never keys
    ttl = max(stored.pttl(n) for n in mine)
    assert 50_000 < ttl <= 60_000
    stored.close()


def test_without_redis_each_instance_keeps_its_own_view(
    fake_openai: FakeUpstream, tmp_path: Path, keys: list[str]
) -> None:
    fake_openai.responder = by_key({keys[0]: (429, {"retry-after": "60"})})
    env = pool_env(fake_openai, keys[:2])
    with run_gateway(env, tmp_path / "a") as first, run_gateway(env, tmp_path / "b") as second:
        ask(first)
        fake_openai.requests.clear()
        ask(second)
        assert keys_tried(fake_openai)[0] == keys[0]  # the other instance did not hear of it


def test_redis_down_at_start_still_serves(
    fake_openai: FakeUpstream, tmp_path: Path, keys: list[str]
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    fake_openai.responder = by_key({keys[0]: (401, {})})
    env = pool_env(fake_openai, keys[:2], REDIS_URL=f"redis://127.0.0.1:{dead}/0")
    with run_gateway(env, tmp_path) as gateway:
        assert ask(gateway).content[0].text == f"served by {keys[1]}"  # type: ignore[union-attr]
        assert ask(gateway).content[0].text == f"served by {keys[1]}"  # type: ignore[union-attr]
        log = gateway.log()
    assert log.count("unavailable for key cooldowns") == 1
