"""Key cooldowns: which API keys are benched, and until when.

The hot path only ever reads an in-memory dict (``until(key_id)``).  Keys are
known here by :func:`vdm.config.key_id` (a hash), never by their value.

* :class:`MemoryCooldowns` — one process.
* :class:`RedisCooldowns` — every gateway instance using the same Redis: a
  bench is written as ``<ns>:cooldown:{key_id}`` (``REDIS_NAMESPACE``) (expiring with the cooldown),
  so an instance that starts later loads the live ones.

Every bench is a ``key.cooldown`` event on the bus (:mod:`vdm.events`); each
instance applies the others' (:meth:`MemoryCooldowns.follow`), so one
instance's 429 benches the key for all.  If Redis is unreachable the local
view keeps working and the failure is logged once per outage.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from vdm.events import KEY_COOLDOWN
from vdm.redis_link import RedisLink

if TYPE_CHECKING:
    from vdm.events import Bus, Event

log = logging.getLogger("vdm.keys")


class Cooldowns(Protocol):
    def until(self, key_id: str) -> float:
        """Wall-clock time (``time.time()``) until which the key is benched; 0 if not."""
        ...

    def bench(self, key_id: str, seconds: float, status: int) -> None: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class MemoryCooldowns:
    def __init__(self) -> None:
        self._until: dict[str, float] = {}
        # The HTTP status of each key's last bench made here (the dashboard's
        # "benched" vs "cooling"); those learnt from Redis have none.
        self.last_status: dict[str, int] = {}
        # Told of each bench made here (metrics); not of those learnt from others.
        self.on_bench: Callable[[str, int], None] | None = None
        self.bus: Bus | None = None

    def follow(self, bus: Bus) -> None:
        """Publish this instance's benches on ``bus`` and apply the other instances'."""
        self.bus = bus
        bus.subscribe("cooldowns", [KEY_COOLDOWN], self._learn, scope="instance", others_only=True)

    async def _learn(self, events: list[Event]) -> None:
        for event in events:
            self._apply(str(event.data["key"]), float(event.data["until"]))

    def until(self, key_id: str) -> float:
        return self._until.get(key_id, 0.0)

    def _apply(self, key_id: str, until: float) -> None:
        if until > self._until.get(key_id, 0.0):
            self._until[key_id] = until

    def bench(self, key_id: str, seconds: float, status: int) -> None:
        self._apply(key_id, time.time() + seconds)
        self.last_status[key_id] = status
        log.warning("key %s benched for %.0f s after HTTP %d", key_id, seconds, status)
        if self.on_bench is not None:
            self.on_bench(key_id, status)
        if self.bus is not None:
            self.bus.publish(
                KEY_COOLDOWN, {"key": key_id, "until": self.until(key_id), "status": status}
            )

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None


class RedisCooldowns(MemoryCooldowns):
    def __init__(self, url: str, namespace: str = "vdm") -> None:
        super().__init__()
        self._prefix = f"{namespace}:cooldown:"
        self._link = RedisLink(url, "key cooldowns", "using this instance's view")

    async def start(self) -> None:
        """Load the cooldowns other instances set before this one started."""
        redis = self._link.client
        try:
            async for name in redis.scan_iter(match=self._prefix + "*", count=500):
                value = await redis.get(name)
                if value is not None:
                    self._apply(name.decode()[len(self._prefix) :], float(value))
        except Exception as exc:  # Redis down at start: run on the local view
            self._link.trouble(exc)

    def bench(self, key_id: str, seconds: float, status: int) -> None:
        super().bench(key_id, seconds, status)
        self._link.background(self._keep(key_id, self.until(key_id)))

    async def _keep(self, key_id: str, until: float) -> None:
        try:
            ttl_ms = max(int((until - time.time()) * 1000), 1)
            await self._link.client.set(self._prefix + key_id, repr(until), px=ttl_ms)
            self._link.ok()
        except Exception as exc:
            self._link.trouble(exc)

    async def close(self) -> None:
        await self._link.close()
