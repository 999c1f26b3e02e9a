"""Where cached answers live: in this process (bounded, LRU) or in Redis (shared).

Both hold opaque bytes under a key with a TTL and answer a purge by glob
(:func:`vdm.cache.keys.pattern`).  Neither ever raises into a request: a
cache that fails is a miss (logged), never an error the client sees.
"""

from __future__ import annotations

import fnmatch
import logging
import time
from collections import OrderedDict
from typing import Protocol, cast

log = logging.getLogger("vdm.cache")

_SWEEP_EVERY = 30.0  # seconds between sweeps of expired entries (memory)


class Store(Protocol):
    async def get(self, key: str) -> bytes | None: ...

    async def put(self, key: str, value: bytes, ttl: int) -> None: ...

    async def purge(self, pattern: str) -> int: ...

    async def close(self) -> None: ...


class MemoryStore:
    """Bounded by bytes (least recently used entries go first); expired
    entries are dropped when read and swept every few seconds on writes."""

    def __init__(self, max_bytes: int, clock: object = time.monotonic) -> None:
        self.max_bytes = max_bytes
        self._clock = clock  # type: ignore[assignment]
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self.size = 0
        self._swept = 0.0

    def _now(self) -> float:
        return self._clock()  # type: ignore[operator, no-any-return]

    def _drop(self, key: str) -> None:
        _, value = self._entries.pop(key)
        self.size -= len(value) + len(key)

    async def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] <= self._now():
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return entry[1]

    async def put(self, key: str, value: bytes, ttl: int) -> None:
        cost = len(value) + len(key)
        if cost > self.max_bytes:
            return  # larger than the whole cache: never stored
        now = self._now()
        if now - self._swept > _SWEEP_EVERY:
            self._swept = now
            for stale in [k for k, (expires, _) in self._entries.items() if expires <= now]:
                self._drop(stale)
        if key in self._entries:
            self._drop(key)
        self._entries[key] = (now + ttl, value)
        self.size += cost
        while self.size > self.max_bytes:
            self._drop(next(iter(self._entries)))

    async def purge(self, pattern: str) -> int:
        gone = [k for k in self._entries if fnmatch.fnmatchcase(k, pattern)]
        for key in gone:
            self._drop(key)
        return len(gone)

    def __len__(self) -> int:
        return len(self._entries)

    async def close(self) -> None:
        self._entries.clear()
        self.size = 0


class RedisStore:
    """``<ns>:cache:*`` keys (``REDIS_NAMESPACE``, ``vdm`` by default) with
    Redis's own TTL (``SET ... EX``): every instance sharing the Redis and the
    namespace shares the cache; Redis bounds the memory (its ``maxmemory``
    policy)."""

    def __init__(self, url: str, namespace: str = "vdm") -> None:
        from vdm.redis_link import connect

        self._redis = connect(url)
        self._ns = namespace + ":"

    async def get(self, key: str) -> bytes | None:
        try:
            value = await self._redis.get(self._ns + key)
        except Exception as exc:  # a cache outage is a miss, never a failed request
            log.warning("cache: Redis read failed: %s", type(exc).__name__)
            return None
        return cast("bytes | None", value)  # (decode_responses is off)

    async def put(self, key: str, value: bytes, ttl: int) -> None:
        try:
            await self._redis.set(self._ns + key, value, ex=ttl)
        except Exception as exc:
            log.warning("cache: Redis write failed: %s", type(exc).__name__)

    async def purge(self, pattern: str) -> int:
        deleted = 0
        batch: list[bytes] = []
        async for key in self._redis.scan_iter(match=self._ns + pattern, count=500):
            batch.append(key)
            if len(batch) >= 500:
                deleted += await self._redis.unlink(*batch)
                batch = []
        if batch:
            deleted += await self._redis.unlink(*batch)
        return deleted

    async def close(self) -> None:
        await self._redis.aclose()
