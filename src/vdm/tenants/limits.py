"""Per-token limits, enforced in memory on the event loop.

Every check-and-count here runs without an ``await`` between the check and
the count, so on one event loop it is atomic: 50 concurrent requests against
``max_requests=10`` admit exactly 10.  Across instances, lifetime quotas go
through the database (:meth:`vdm.store.UsageStore.consume`) and, with
``REDIS_URL``, per-minute windows through Redis as well
(:class:`SharedWindows`: one script call checks and counts atomically for
every instance).  The in-memory window is still kept: it answers alone when
Redis is unreachable, and it never admits what the shared one would refuse
(an instance's own count is at most the deployment's).

A request's tokens are counted when it ends, in Redis *before* the answer's
last byte goes out (the HTTP doors await :meth:`TokenRegistry.record_usage`
before the final chunk; gRPC before the last message): a client that reads
an answer to its end and then asks again, on any instance, is judged with
that answer's tokens counted.  Requests already in flight are not: a TPM
limit can be overshot by what the concurrent requests admitted before it
was reached go on to use, as with every provider's own TPM limit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from vdm.redis_link import RedisLink


@dataclass(slots=True)
class MinuteWindow:
    """A fixed one-minute window: requests and tokens counted since it began."""

    started: float = 0.0
    requests: int = 0
    tokens: int = 0

    def roll(self, now: float) -> None:
        if now - self.started >= 60.0:
            self.started, self.requests, self.tokens = now - (now % 60.0), 0, 0

    def seconds_left(self, now: float) -> float:
        return max(60.0 - (now - self.started), 1.0)


@dataclass(slots=True)
class Counters:
    """A token's live counters (the database gets them write-behind)."""

    used: int = 0  # requests admitted in its lifetime (stored + this instance's)
    last_used: float | None = None  # epoch seconds of the last admitted request
    window: MinuteWindow = field(default_factory=MinuteWindow)


def now() -> float:
    return time.time()


# KEYS[1]: the token's window hash; ARGV: rpm, tpm (0: no limit), seconds to keep it.
# Returns 0 (admitted and counted), 1 (over rpm) or 2 (over tpm); a refusal counts nothing.
_ADMIT = """
local r = redis.call('HINCRBY', KEYS[1], 'r', 1)
redis.call('EXPIRE', KEYS[1], ARGV[3])
local rpm, tpm = tonumber(ARGV[1]), tonumber(ARGV[2])
if rpm > 0 and r > rpm then redis.call('HINCRBY', KEYS[1], 'r', -1) return 1 end
if tpm > 0 and tonumber(redis.call('HGET', KEYS[1], 't') or '0') >= tpm then
  redis.call('HINCRBY', KEYS[1], 'r', -1) return 2
end
return 0
"""


class SharedWindows:
    """Per-token minute windows in Redis (``<ns>:window:<token>:<minute>``), the
    same fixed, minute-aligned windows as :class:`MinuteWindow`."""

    def __init__(self, url: str, namespace: str) -> None:
        self._link = RedisLink(
            url, "per-minute token limits", "each instance enforces them alone until it is back"
        )
        self._admit = self._link.client.register_script(_ADMIT)
        self._prefix = f"{namespace}:window:"

    def _key(self, token_id: str, moment: float) -> str:
        return f"{self._prefix}{token_id}:{int(moment // 60)}"

    async def admit(self, token_id: str, rpm: int | None, tpm: int | None, moment: float) -> int:
        """0: admitted (and counted); 1: over ``rpm``; 2: over ``tpm``.  Redis
        unreachable: 0 (the in-memory window, checked before, is what holds)."""
        try:
            verdict = await self._admit(
                keys=[self._key(token_id, moment)], args=[rpm or 0, tpm or 0, 120]
            )
        except Exception as exc:
            self._link.trouble(exc)
            return 0
        self._link.ok()
        return int(verdict)

    async def undo(self, token_id: str, moment: float) -> None:
        """Give back a request :meth:`admit` counted that was then refused."""
        try:
            await self._link.client.hincrby(self._key(token_id, moment), "r", -1)
        except Exception as exc:
            self._link.trouble(exc)

    async def add_tokens(self, token_id: str, tokens: int) -> None:
        """Count a finished request's tokens (awaited before its answer's last
        byte goes out, so the next request on any instance sees them)."""
        key = self._key(token_id, now())
        try:
            pipe = self._link.client.pipeline(transaction=False)
            pipe.hincrby(key, "t", tokens)
            pipe.expire(key, 120)
            await pipe.execute()
        except Exception as exc:
            self._link.trouble(exc)

    async def close(self) -> None:
        await self._link.close()
