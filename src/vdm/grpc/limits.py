"""Request limits of the gRPC door: requests per minute and concurrent requests,
for all clients together and per verified token subject; in memory, per process.

A request is admitted only when every limit that applies has room; a refused
request leaves no trace (it does not use up the minute of a client that is
already over it).  Requests per minute is a sliding window over the last 60
seconds of admitted requests (exact, no burst at a window edge).  Admission
is synchronous, so it is atomic on the event loop.

Per-subject limits apply only with authentication on: the subject is the
``sub`` of a verified token, never anything the client merely says.

With ``REDIS_URL`` the per-minute limits hold for all instances together
(:class:`SharedMinute`: a sliding window of each limit in a Redis sorted set,
checked and counted in one script).  Concurrency limits stay per instance:
they bound what one process holds open.
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from vdm.config import GrpcSettings
from vdm.redis_link import RedisLink

WINDOW = 60.0
_PRUNE_AT = 10_000  # subjects remembered before idle ones are forgotten


class LimitExceeded(Exception):
    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class _Window:
    __slots__ = ("times",)

    def __init__(self) -> None:
        self.times: deque[float] = deque()

    def wait(self, limit: int, now: float) -> float:
        """Seconds until one more request fits (0: it fits now)."""
        times = self.times
        while times and times[0] <= now - WINDOW:
            times.popleft()
        return 0.0 if len(times) < limit else times[0] + WINDOW - now


@dataclass(frozen=True, slots=True)
class Effective:
    """The limits one caller is held to (the tighter of global and per-subject)."""

    requests_per_minute: int | None
    concurrent_requests: int | None


# KEYS: the sliding windows to check; ARGV[1] now, ARGV[2] a member id, then one
# limit per key.  Returns '0' (admitted into every window) or 'i:seconds': the
# first full window and how long until it has room.
_SLIDE = """
local now = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - 60)
  if redis.call('ZCARD', key) >= tonumber(ARGV[i + 2]) then
    local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
    return i .. ':' .. tostring(math.max(tonumber(oldest[2]) + 60 - now, 0.001))
  end
end
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, now, ARGV[2])
  redis.call('EXPIRE', key, 61)
end
return '0'
"""


class SharedMinute:
    """Requests per minute of the gRPC door across instances, in Redis
    (``<ns>:grpc:rpm`` and ``<ns>:grpc:rpm:<subject>``)."""

    def __init__(self, url: str, namespace: str) -> None:
        self._link = RedisLink(url, "gRPC rate limits", "each instance counts alone")
        self._script = self._link.client.register_script(_SLIDE)
        self._prefix = f"{namespace}:grpc:rpm"

    async def wait(self, limits: list[tuple[str | None, int]]) -> tuple[int, float] | None:
        """None when one more request fits every ``(subject, limit)`` window (and
        is counted in each), else the index of the full one and the seconds until
        it has room.  Redis unreachable: None (each instance's own window holds)."""
        keys = [self._prefix if s is None else f"{self._prefix}:{s}" for s, _ in limits]
        try:
            verdict = await self._script(
                keys=keys, args=[time.time(), uuid.uuid4().hex, *(n for _, n in limits)]
            )
        except Exception as exc:
            self._link.trouble(exc)
            return None
        self._link.ok()
        text = verdict.decode() if isinstance(verdict, bytes) else str(verdict)
        if text == "0":
            return None
        index, _, seconds = text.partition(":")
        return int(index) - 1, float(seconds)

    async def close(self) -> None:
        await self._link.close()


class Limiter:
    def __init__(
        self,
        settings: GrpcSettings,
        clock: Callable[[], float] = time.monotonic,
        shared: SharedMinute | None = None,
    ) -> None:
        self.rpm = settings.max_requests_per_minute
        self.concurrent = settings.max_concurrent_requests
        self.rpm_per_subject = settings.max_requests_per_minute_per_token
        self.concurrent_per_subject = settings.max_concurrent_requests_per_token
        self._clock = clock
        self._window = _Window()
        self._windows: dict[str, _Window] = {}
        self._active = 0
        self._active_by: dict[str, int] = {}
        self._shared = shared

    async def check_shared(self, subject: str | None) -> None:
        """The per-minute limits across instances (before :meth:`admit`, which
        then also holds the concurrency slot); nothing to do without Redis."""
        if self._shared is None:
            return
        limits: list[tuple[str | None, int]] = []
        if self.rpm is not None:
            limits.append((None, self.rpm))
        if subject is not None and self.rpm_per_subject is not None:
            limits.append((subject, self.rpm_per_subject))
        if not limits:
            return
        full = await self._shared.wait(limits)
        if full is not None:
            index, wait = full
            whose = "the server's" if limits[index][0] is None else "this token's"
            raise LimitExceeded(
                f"{whose} limit of {limits[index][1]} requests per minute is reached "
                f"(all instances together); retry in {wait:.0f} s",
                wait,
            )

    async def close(self) -> None:
        if self._shared is not None:
            await self._shared.close()

    def effective(self, subject: str | None) -> Effective:
        def tighter(a: int | None, b: int | None) -> int | None:
            return b if a is None else a if b is None else min(a, b)

        if subject is None:
            return Effective(self.rpm, self.concurrent)
        return Effective(
            tighter(self.rpm, self.rpm_per_subject),
            tighter(self.concurrent, self.concurrent_per_subject),
        )

    @contextmanager
    def admit(self, subject: str | None) -> Iterator[None]:
        """Hold one request slot for the block; raise LimitExceeded when there is none."""
        now = self._clock()
        self._check(subject, now)
        if self.rpm is not None:  # (windows are kept only for limits that exist)
            self._window.times.append(now)
        self._active += 1
        if subject is not None:
            if self.rpm_per_subject is not None:
                self._windows.setdefault(subject, _Window()).times.append(now)
            self._active_by[subject] = self._active_by.get(subject, 0) + 1
        try:
            yield
        finally:
            self._active -= 1
            if subject is not None:
                left = self._active_by[subject] - 1
                if left:
                    self._active_by[subject] = left
                else:
                    del self._active_by[subject]

    def _check(self, subject: str | None, now: float) -> None:
        if self.rpm is not None:
            wait = self._window.wait(self.rpm, now)
            if wait:
                raise LimitExceeded(
                    f"the server's limit of {self.rpm} requests per minute is "
                    f"reached; retry in {wait:.0f} s",
                    wait,
                )
        if self.concurrent is not None and self._active >= self.concurrent:
            raise LimitExceeded(
                f"the server's limit of {self.concurrent} concurrent requests "
                "is reached; retry when one finishes",
                1.0,
            )
        if subject is None:
            return
        if self.rpm_per_subject is not None:
            window = self._windows.get(subject)
            wait = window.wait(self.rpm_per_subject, now) if window else 0.0
            if wait:
                raise LimitExceeded(
                    f"this token's limit of {self.rpm_per_subject} requests per "
                    f"minute is reached; retry in {wait:.0f} s",
                    wait,
                )
        if (
            self.concurrent_per_subject is not None
            and self._active_by.get(subject, 0) >= self.concurrent_per_subject
        ):
            raise LimitExceeded(
                f"this token's limit of {self.concurrent_per_subject} concurrent "
                "requests is reached; retry when one finishes",
                1.0,
            )
        if len(self._windows) > _PRUNE_AT:
            self._prune(now)

    def _prune(self, now: float) -> None:
        for name in [
            n for n, w in self._windows.items() if not w.times or w.times[-1] <= now - WINDOW
        ]:
            del self._windows[name]
