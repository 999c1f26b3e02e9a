"""Key pool rules: round robin, benching, retry-after, !PASSTHRU."""

from __future__ import annotations

import asyncio
import time

import pytest

from vdm.errors import AuthenticationFailed, RateLimited, UpstreamStatusError
from vdm.providers.cooldowns import MemoryCooldowns
from vdm.providers.keys import KeyPool


def refused(status: int, retry_after: str | None = None) -> UpstreamStatusError:
    headers = {"retry-after": retry_after} if retry_after else {}
    return UpstreamStatusError(
        f"HTTP {status}", provider="p", upstream_status=status, headers=headers
    )


def run(
    pool: KeyPool, answers: dict[str, list[int | str]], client_key: str | None = None
) -> tuple[str, list[str]]:
    """Call through the pool; ``answers[key]`` is what each use of that key gets
    (a status refuses, "ok" answers).  Returns (result, keys used)."""
    used: list[str] = []

    async def attempt(key: str) -> str:
        used.append(key)
        answer = answers.get(key, ["ok"]).pop(0) if answers.get(key) else "ok"
        if isinstance(answer, int):
            raise refused(answer, "5" if answer == 429 else None)
        return key

    return asyncio.run(pool.call(client_key, attempt)), used


def test_round_robin() -> None:
    pool = KeyPool("p", ("k1", "k2", "k3"))
    assert [run(pool, {})[0] for _ in range(6)] == ["k1", "k2", "k3", "k1", "k2", "k3"]


@pytest.mark.parametrize("status", [401, 403, 429])
def test_refused_key_is_benched_and_the_next_used(status: int) -> None:
    pool = KeyPool("p", ("k1", "k2", "k3"))
    result, used = run(pool, {"k1": [status]})
    assert (result, used) == ("k2", ["k1", "k2"])
    # k1 is skipped from now on
    assert [run(pool, {})[0] for _ in range(4)] == ["k3", "k2", "k3", "k2"]


@pytest.mark.parametrize("status", [400, 404, 500, 503])
def test_other_failures_are_not_the_keys_fault(status: int) -> None:
    pool = KeyPool("p", ("k1", "k2"))
    with pytest.raises(UpstreamStatusError):
        run(pool, {"k1": [status]})
    assert run(pool, {})[0] == "k2"
    assert run(pool, {})[0] == "k1"  # not benched


def test_all_keys_refused_raises_the_last_with_soonest_retry_after() -> None:
    cooldowns = MemoryCooldowns()
    pool = KeyPool("p", ("k1", "k2"), cooldowns, rate_limit_cooldown=30)
    with pytest.raises(UpstreamStatusError) as raised:
        run(pool, {"k1": [401], "k2": [429]})
    assert raised.value.upstream_status == 429
    assert raised.value.headers["retry-after"] == "5"  # k2's own (k1 is out for 300 s)
    with pytest.raises(RateLimited) as cooling:
        run(pool, {})
    assert cooling.value.status == 429
    assert 4 <= int(cooling.value.headers["retry-after"]) <= 5


def test_retry_after_header_sets_the_cooldown_capped() -> None:
    cooldowns = MemoryCooldowns()
    pool = KeyPool("p", ("k1",), cooldowns, max_cooldown=2)
    error = refused(429, "100")
    assert pool.bench(0, error)
    (key_id,) = cooldowns._until
    assert cooldowns.until(key_id) - time.time() == pytest.approx(2, abs=0.2)


def test_retry_after_default_when_absent_or_a_date() -> None:
    cooldowns = MemoryCooldowns()
    pool = KeyPool("p", ("k1",), cooldowns, rate_limit_cooldown=7)
    pool.bench(0, refused(429, "Wed, 21 Oct 2015 07:28:00 GMT"))
    (key_id,) = cooldowns._until
    assert cooldowns.until(key_id) - time.time() == pytest.approx(7, abs=0.2)


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
    assert all("sk-very-secret" not in k for k in cooldowns._until)
