"""One connection to the shared Redis for one feature, and the rule every
feature follows when Redis is away: keep working on this instance's own view,
say so once per outage (not once per request), say nothing more until it is
back, then say that it is.  A feature asked on every request (the response
cache) may also leave Redis alone for :data:`RETRY_AFTER` seconds after a
failure (:meth:`RedisLink.resting`), so an unreachable Redis costs requests
no connect timeout each.  Writes that must not hold up a request run in the
background and are awaited at close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from typing import Any

from vdm.extras import require

log = logging.getLogger("vdm.redis")
RETRY_AFTER = 5.0  # seconds a resting feature leaves Redis alone after a failure


def connect(url: str, **options: Any) -> Any:
    """A redis-py asyncio client for ``url`` (the ``redis`` extra's one import)."""
    require("redis", "REDIS_URL is set")
    import redis.asyncio as redis

    return redis.from_url(url, **options)


class RedisLink:
    def __init__(self, url: str, feature: str, fallback: str, *, socket_timeout: float = 2) -> None:
        self.client: Any = connect(url, socket_connect_timeout=2, socket_timeout=socket_timeout)
        self._where = url.split("@")[-1]  # never log a password
        self._feature = feature  # "key cooldowns"
        self._fallback = fallback  # "using this instance's view"
        self._healthy = True
        self._failed_at = 0.0  # (monotonic) the last failure
        self._writes: set[asyncio.Task[Any]] = set()

    def ok(self) -> None:
        if not self._healthy:
            self._healthy = True
            log.info("redis at %s is back for %s", self._where, self._feature)

    def resting(self) -> bool:
        """True while a recent failure says not to try Redis yet."""
        return not self._healthy and time.monotonic() < self._failed_at + RETRY_AFTER

    def trouble(self, exc: BaseException) -> None:
        self._failed_at = time.monotonic()
        if self._healthy:
            log.warning(
                "redis at %s unavailable for %s (%s: %s); %s",
                self._where,
                self._feature,
                type(exc).__name__,
                exc,
                self._fallback,
            )
        self._healthy = False

    def background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def close(self) -> None:
        if self._writes:
            await asyncio.gather(*self._writes, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self.client.aclose()
