"""Pure parts of the response cache: Cache-Control, keys, the memory store."""

from __future__ import annotations

import asyncio
import logging

import pytest

from vdm import doors
from vdm.cache import keys
from vdm.cache.keys import Ask, cache_control
from vdm.cache.settings import cache_settings
from vdm.cache.store import MemoryStore
from vdm.errors import InvalidRequest


def test_cache_control() -> None:
    assert cache_control(None, None, 100) is None
    assert cache_control(None, 30, 100) == Ask(None, 30)
    assert cache_control("max-age=60", None, 100) == Ask(60, 60)
    assert cache_control("max-age=999", None, 100) == Ask(999, 100)  # stored at most max_ttl
    assert cache_control("no-cache", 30, 100) == Ask(0, 30)
    assert cache_control("no-store, max-age=5", 30, 100) is None
    assert cache_control("private", None, 100) is None
    with pytest.raises(InvalidRequest):
        cache_control("max-age=-1", None, 100)


def test_keys_quote_parts_and_tenants_differ() -> None:
    chat = doors.CHAT.cache
    d = keys.digest(chat, {"model": "m", "messages": [], "user": "x"}, {})
    assert d == keys.digest(chat, {"messages": [], "model": "m"}, {})  # "user" is not a field
    k = keys.key(keys.tenant(None, "secret", False), "openai", "ollama", "llama3:8b", d)
    assert "secret" not in k and "llama3%3A8b" in k
    assert keys.tenant("p1", None, False) != keys.tenant(None, None, False)
    assert keys.tenant("p1", None, True) == keys.tenant("p2", None, True) == keys.SHARED


def test_memory_store_lru_and_expiry() -> None:
    now = [0.0]
    store = MemoryStore(max_bytes=25, clock=lambda: now[0])

    async def run() -> None:
        await store.put("a", b"x" * 10, 5)
        await store.put("b", b"x" * 10, 5)
        assert await store.get("a") is not None  # "a" used: "b" is now the oldest
        await store.put("c", b"x" * 10, 5)
        assert await store.get("b") is None and await store.get("a") is not None
        now[0] = 6.0
        assert await store.get("a") is None  # expired
        await store.put("big", b"x" * 100, 5)  # larger than the whole store
        assert await store.get("big") is None
        assert await store.purge("*") == 1 and store.size == 0

    asyncio.run(run())


def test_settings_problems_name_the_source() -> None:
    problems: list[str] = []
    s = cache_settings(
        {}, {"CACHE_MODELS": "openai:gpt-4o-mini=300,bad=1,x:y=soon"}, {}, problems, None
    )
    assert s.models == {"openai:gpt-4o-mini": 300}
    assert len(problems) == 2 and all("CACHE_MODELS" in p for p in problems)
    problems = []
    cache_settings({"backend": "redis"}, {}, {}, problems, None)
    assert problems and "REDIS_URL" in problems[0]


class _FlakyRedis:
    """A Redis client that fails while ``down`` is set."""

    def __init__(self) -> None:
        self.down = True
        self.calls = 0
        self.data: dict[str, bytes] = {}

    async def get(self, key: str) -> bytes | None:
        self.calls += 1
        if self.down:
            raise ConnectionError("connection refused")
        return self.data.get(key)

    async def set(self, key: str, value: bytes, ex: int) -> None:
        self.calls += 1
        if self.down:
            raise ConnectionError("connection refused")
        self.data[key] = value


def test_a_redis_cache_outage_is_one_warning_and_its_end_one_line(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def run() -> None:
        from vdm import redis_link
        from vdm.cache.store import RedisStore

        store = RedisStore("redis://127.0.0.1:1/0", "t")
        flaky = _FlakyRedis()
        store._redis = flaky
        caplog.set_level(logging.INFO, logger="vdm.redis")
        for _ in range(10):  # misses, Redis left alone after the first failure
            assert await store.get("k") is None
            await store.put("k", b"v", 60)
        assert flaky.calls == 1
        monkeypatch.setattr(redis_link, "RETRY_AFTER", 0.0)  # (time to try again)
        await store.get("k")  # still down: no new warning
        flaky.down = False
        await store.put("k", b"v", 60)
        assert await store.get("k") == b"v"
        flaky.down = True
        assert await store.get("k") is None  # a second outage is told again
        lines = [r.getMessage() for r in caplog.records]
        assert len(lines) == 3, lines
        assert "unavailable for the response cache" in lines[0] and "ConnectionError" in lines[0]
        assert "127.0.0.1:1/0 is back for the response cache" in lines[1]
        assert "unavailable for the response cache" in lines[2]
        await store.close()

    asyncio.run(run())
