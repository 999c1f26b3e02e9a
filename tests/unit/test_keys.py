"""Key pool rules: round robin, benches that only order keys, backoff,
(key, model) benches, retry-after, !PASSTHRU."""

from __future__ import annotations

import asyncio
import json
import time

import msgspec
import pytest

from vdm.errors import AuthenticationFailed, RateLimited, UpstreamStatusError
from vdm.events.bus import Event
from vdm.providers.cooldowns import MAX_PAIRS_PER_KEY, Bench, MemoryCooldowns
from vdm.providers.keys import KeyPool

# What a key's use gets: a status (refused, with the "no such model" message
# when it is 403/404 and the message below), "ok", or (status, retry-after).
Answer = int | str | tuple[int, str]


def refused(
    status: int, retry_after: str | None = None, message: str = "refused", code: str | None = None
) -> UpstreamStatusError:
    headers = {"retry-after": retry_after} if retry_after else {}
    body = json.dumps({"error": {"message": message, "code": code}}).encode()
    return UpstreamStatusError(
        f"HTTP {status}: {message}",
        provider="p",
        upstream_status=status,
        headers=headers,
        body=body,
        code=code,
    )


def run(
    pool: KeyPool,
    answers: dict[str, list[Answer]],
    client_key: str | None = None,
    model: str | None = "m",
    message: str = "refused",
) -> tuple[str, list[str]]:
    """Call through the pool; ``answers[key]`` is what each use of that key gets
    (a status or (status, retry-after) refuses, "ok" answers).  Returns
    (result, keys used)."""
    used: list[str] = []

    async def attempt(key: str) -> str:
        used.append(key)
        queue = answers.get(key)
        answer = queue.pop(0) if queue else "ok"
        if isinstance(answer, tuple):
            raise refused(answer[0], answer[1], message)
        if isinstance(answer, int):
            raise refused(answer, None, message)
        return key

    return asyncio.run(pool.call(client_key, attempt, model=model)), used


def failing(
    pool: KeyPool, answers: dict[str, list[Answer]], **kwargs: str
) -> tuple[UpstreamStatusError | RateLimited, list[str]]:
    used: list[str] = []

    async def attempt(key: str) -> str:
        used.append(key)
        queue = answers.get(key)
        answer = queue.pop(0) if queue else "ok"
        if isinstance(answer, tuple):
            raise refused(answer[0], answer[1], kwargs.get("message", "refused"))
        if isinstance(answer, int):
            raise refused(answer, None, kwargs.get("message", "refused"))
        raise AssertionError(f"{key} answered")

    with pytest.raises((UpstreamStatusError, RateLimited)) as raised:
        asyncio.run(pool.call(None, attempt, model=kwargs.get("model", "m")))
    return raised.value, used


def left(cooldowns: MemoryCooldowns, pool: KeyPool, index: int, model: str | None = None) -> float:
    bench = cooldowns.get(pool._ids[index], model)
    return bench.until - time.time() if bench is not None else 0.0


def test_round_robin() -> None:
    pool = KeyPool("p", ("k1", "k2", "k3"))
    assert [run(pool, {})[0] for _ in range(6)] == ["k1", "k2", "k3", "k1", "k2", "k3"]


@pytest.mark.parametrize("status", [401, 403, 429])
def test_refused_key_is_benched_and_the_next_used(status: int) -> None:
    pool = KeyPool("p", ("k1", "k2", "k3"))
    result, used = run(pool, {"k1": [status]})
    assert (result, used) == ("k2", ["k1", "k2"])
    # k1 is skipped while healthy keys remain
    assert [run(pool, {})[0] for _ in range(4)] == ["k3", "k2", "k3", "k2"]


@pytest.mark.parametrize("status", [400, 404, 500, 503])
def test_other_failures_are_not_the_keys_fault(status: int) -> None:
    pool = KeyPool("p", ("k1", "k2"))
    error, used = failing(pool, {"k1": [status]})
    assert used == ["k1"] and isinstance(error, UpstreamStatusError)
    assert run(pool, {})[0] == "k2"
    assert run(pool, {})[0] == "k1"  # not benched


# ---------------------------------------------------------------- a bench only orders keys


def test_single_key_rate_limited_without_retry_after_is_used_again_at_once() -> None:
    cooldowns = MemoryCooldowns()
    pool = KeyPool("p", ("k1",), cooldowns)  # the default settings
    error, used = failing(pool, {"k1": [429]})
    assert used == ["k1"] and isinstance(error, UpstreamStatusError)
    assert error.headers["retry-after"] == "1"  # the first backoff step
    # The upstream recovered: the next call goes out on the benched key and succeeds...
    assert run(pool, {}) == ("k1", ["k1"])
    # ... which clears the bench and its backoff.
    assert cooldowns.get(pool._ids[0], "m") is None


def test_backoff_doubles_per_consecutive_429_capped_and_a_success_resets_it() -> None:
    cooldowns = MemoryCooldowns()
    pool = KeyPool("p", ("k1",), cooldowns, rate_limit_cooldown=5)
    seen = []
    for _ in range(5):
        error, _ = failing(pool, {"k1": [429]})
        seen.append(round(left(cooldowns, pool, 0)))
        assert error.headers["retry-after"] == str(seen[-1])
    assert seen == [1, 2, 4, 5, 5]
    run(pool, {})
    failing(pool, {"k1": [429]})
    assert round(left(cooldowns, pool, 0)) == 1


def test_single_key_refused_401_reaches_the_client_on_every_call() -> None:
    pool = KeyPool("p", ("k1",))
    for _ in range(3):
        error, used = failing(pool, {"k1": [401]})
        assert used == ["k1"]
        assert isinstance(error, UpstreamStatusError) and error.upstream_status == 401
        assert "retry-after" not in error.headers


def test_every_key_benched_goes_out_on_the_one_whose_bench_ends_first() -> None:
    cooldowns = MemoryCooldowns()
    pool = KeyPool("p", ("k1", "k2", "k3"), cooldowns, rate_limit_cooldown=30)
    now = time.time()
    cooldowns.bench(Bench(pool._ids[0], now + 300, 401))
    cooldowns.bench(Bench(pool._ids[1], now + 2, 429, strikes=2))
    cooldowns.bench(Bench(pool._ids[2], now + 60, 403))
    assert run(pool, {}) == ("k2", ["k2"])


def test_only_one_benched_key_is_tried_per_request() -> None:
    pool = KeyPool("p", ("k1", "k2", "k3"))
    error, used = failing(pool, {"k1": [401], "k2": [401], "k3": [401]})
    assert used == ["k1", "k2", "k3"]  # each healthy key once
    error, used = failing(pool, {"k1": [401], "k2": [401], "k3": [401]})
    assert len(used) == 1  # then the soonest benched one, alone
    assert isinstance(error, UpstreamStatusError) and error.upstream_status == 401


def test_retry_after_on_every_key_answers_429_without_asking() -> None:
    cooldowns = MemoryCooldowns()
    pool = KeyPool("p", ("k1", "k2"), cooldowns)
    error, used = failing(pool, {"k1": [(429, "40")], "k2": [(429, "20")]})
    assert used == ["k1", "k2"]
    assert isinstance(error, UpstreamStatusError)
    assert 19 <= int(error.headers["retry-after"]) <= 20  # the first key's return
    error, used = failing(pool, {})
    assert used == []
    assert isinstance(error, RateLimited) and 19 <= int(error.headers["retry-after"]) <= 20
    assert "retry-after" in error.message


def test_a_retry_after_bench_is_skipped_for_a_soft_one() -> None:
    cooldowns = MemoryCooldowns()
    pool = KeyPool("p", ("k1", "k2"), cooldowns)
    now = time.time()
    cooldowns.bench(Bench(pool._ids[0], now + 5, 429, hard=True))
    cooldowns.bench(Bench(pool._ids[1], now + 300, 401))
    assert run(pool, {}) == ("k2", ["k2"])


def test_all_keys_refused_raises_the_last_with_the_first_return() -> None:
    pool = KeyPool("p", ("k1", "k2"), MemoryCooldowns(), rate_limit_cooldown=30)
    error, _ = failing(pool, {"k1": [401], "k2": [(429, "5")]})
    assert isinstance(error, UpstreamStatusError) and error.upstream_status == 429
    assert error.headers["retry-after"] == "5"  # k2's own (k1 is out for 300 s)


def test_the_upstreams_own_retry_after_reaches_the_client_even_beyond_the_cap() -> None:
    pool = KeyPool("p", ("k1",), max_cooldown=0.001)
    error, _ = failing(pool, {"k1": [(429, "17")]})
    assert error.headers["retry-after"] == "17"


def test_retry_after_header_sets_the_cooldown_capped() -> None:
    cooldowns = MemoryCooldowns()
    pool = KeyPool("p", ("k1",), cooldowns, max_cooldown=2)
    assert pool.bench(0, refused(429, "100"))
    assert left(cooldowns, pool, 0) == pytest.approx(2, abs=0.2)
    assert cooldowns.get(pool._ids[0]).hard  # type: ignore[union-attr]


def test_a_retry_after_date_counts_as_none() -> None:
    cooldowns = MemoryCooldowns()
    pool = KeyPool("p", ("k1",), cooldowns, rate_limit_cooldown=7)
    pool.bench(0, refused(429, "Wed, 21 Oct 2015 07:28:00 GMT"))
    bench = cooldowns.get(pool._ids[0])
    assert bench is not None and not bench.hard and bench.strikes == 1
    assert left(cooldowns, pool, 0) == pytest.approx(1, abs=0.2)


# ---------------------------------------------------------------- (key, model)


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (403, "Project does not have access to model gpt-x"),
        (404, "The model `gpt-x` does not exist or you do not have access to it."),
        (429, "Rate limit reached for gpt-x in organization org-1 on tokens per min"),
    ],
)
def test_a_refusal_naming_the_model_benches_only_the_pair(status: int, message: str) -> None:
    cooldowns = MemoryCooldowns()
    pool = KeyPool("p", ("k1", "k2"), cooldowns)
    result, used = run(pool, {"k1": [status]}, model="gpt-x", message=message)
    assert (result, used) == ("k2", ["k1", "k2"])
    assert cooldowns.get(pool._ids[0]) is None  # the key itself is fine...
    assert cooldowns.get(pool._ids[0], "gpt-x") is not None  # ... but not for gpt-x
    # other models still go round robin over both keys; gpt-x avoids k1
    assert [run(pool, {}, model="gpt-y")[0] for _ in range(2)] == ["k1", "k2"]
    assert [run(pool, {}, model="gpt-x")[0] for _ in range(2)] == ["k2", "k2"]


def test_openai_model_not_found_code_benches_the_pair() -> None:
    cooldowns = MemoryCooldowns()
    pool = KeyPool("p", ("k1",), cooldowns)
    assert pool.bench(0, refused(404, message="no such thing", code="model_not_found"), "gpt-x")
    assert cooldowns.get(pool._ids[0]) is None and cooldowns.get(pool._ids[0], "gpt-x")


def test_401_naming_the_model_is_still_the_keys() -> None:
    cooldowns = MemoryCooldowns()
    pool = KeyPool("p", ("k1",), cooldowns)
    pool.bench(0, refused(401, message="invalid key for gpt-x"), "gpt-x")
    assert cooldowns.get(pool._ids[0]) is not None


def test_a_403_naming_no_model_benches_the_key() -> None:
    cooldowns = MemoryCooldowns()
    pool = KeyPool("p", ("k1",), cooldowns)
    pool.bench(0, refused(403, message="your account is suspended"), "gpt-x")
    bench = cooldowns.get(pool._ids[0], "other")
    assert bench is not None and bench.model is None


def test_a_success_clears_the_key_and_its_pair_only() -> None:
    cooldowns = MemoryCooldowns()
    pool = KeyPool("p", ("k1",), cooldowns)
    kid = pool._ids[0]
    cooldowns.bench(Bench(kid, time.time() + 60, 403, model="a"))
    cooldowns.bench(Bench(kid, time.time() + 60, 403, model="b"))
    assert run(pool, {}, model="a") == ("k1", ["k1"])  # benched for a: still the only key
    assert cooldowns.get(kid, "a") is None
    assert cooldowns.get(kid, "b") is not None


def test_pairs_per_key_are_bounded() -> None:
    cooldowns = MemoryCooldowns()
    pool = KeyPool("p", ("k1",), cooldowns)
    for n in range(MAX_PAIRS_PER_KEY + 20):
        pool.bench(0, refused(404, message=f"model m{n} does not exist"), f"m{n}")
    assert sum(1 for _ in cooldowns.benches()) == MAX_PAIRS_PER_KEY
    assert cooldowns.get(pool._ids[0], f"m{MAX_PAIRS_PER_KEY + 19}") is not None


def test_a_huge_model_name_is_never_benched_by_name() -> None:
    pool = KeyPool("p", ("k1",))
    model = "x" * 5000
    assert not pool.bench(0, refused(404, message=f"model {model} does not exist"), model)


# ---------------------------------------------------------------- shared view


def wire(data: dict[str, object]) -> Event:
    """An event as another instance reads it (through JSON, as over Redis)."""
    event = Event("key.cooldown", data, "elsewhere", time.time())
    return msgspec.json.decode(msgspec.json.encode(event), type=Event)


def test_benches_and_clears_travel_as_events() -> None:
    here, there = MemoryCooldowns(), MemoryCooldowns()
    published: list[dict[str, object]] = []

    class Bus:
        def publish(self, kind: str, data: dict[str, object]) -> None:
            published.append(data)

    here.bus = Bus()  # type: ignore[assignment]
    pool = KeyPool("p", ("k1",), here)
    pool.bench(0, refused(429))
    pool.bench(0, refused(403, message="no access to gpt-x"), "gpt-x")
    asyncio.run(there._learn([wire(d) for d in published]))
    kid = pool._ids[0]
    assert there.get(kid) == here.get(kid) and there.get(kid).strikes == 1  # type: ignore[union-attr]
    assert there.get(kid, "gpt-x") == here.get(kid, "gpt-x")
    published.clear()
    here.clear(kid, "gpt-x")
    assert [(d["key"], d["model"], d["clear"]) for d in published] == [(kid, "gpt-x", True)]
    asyncio.run(there._learn([wire(published[0])]))
    assert there.get(kid, "gpt-x") is None


def test_events_of_the_previous_release_apply_and_malformed_ones_are_skipped() -> None:
    cooldowns = MemoryCooldowns()
    until = time.time() + 60
    old = {"key": "p:abc", "until": until, "status": 429}
    asyncio.run(cooldowns._learn([wire({"key": 1}), wire("nonsense"), wire(old)]))  # type: ignore[arg-type]
    assert cooldowns.get("p:abc") == Bench("p:abc", until, 429)


def test_a_success_on_a_key_never_benched_publishes_nothing() -> None:
    cooldowns = MemoryCooldowns()
    published: list[object] = []
    cooldowns.bus = type("B", (), {"publish": lambda *a: published.append(a)})()  # type: ignore[assignment]
    pool = KeyPool("p", ("k1", "k2"), cooldowns)
    for _ in range(4):
        run(pool, {})
    assert published == []


# ---------------------------------------------------------------- !PASSTHRU, hashes


def test_passthrough_uses_the_client_key_and_never_benches_it() -> None:
    pool = KeyPool("p", ("!PASSTHRU",))
    assert run(pool, {}, client_key="client-key") == ("client-key", ["client-key"])
    with pytest.raises(UpstreamStatusError):
        run(pool, {"client-key": [401]}, client_key="client-key")
    assert run(pool, {}, client_key="client-key")[0] == "client-key"
    with pytest.raises(AuthenticationFailed, match="PASSTHRU"):
        run(pool, {})


def test_passthrough_beside_static_keys_falls_back_to_them_without_a_client_key() -> None:
    pool = KeyPool("p", ("!PASSTHRU", "static"))
    assert run(pool, {}, client_key="mine")[0] == "mine"
    assert run(pool, {})[0] == "static"


def test_keys_are_known_by_hash_only() -> None:
    cooldowns = MemoryCooldowns()
    pool = KeyPool("p", ("sk-very-secret",), cooldowns)
    pool.bench(0, refused(401))
    assert all("sk-very-secret" not in str(b) for b in cooldowns.benches())
