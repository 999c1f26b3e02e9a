"""Per-token limits, enforced in memory on the event loop.

Every check-and-count here runs without an ``await`` between the check and
the count, so on one event loop it is atomic: 50 concurrent requests against
``max_requests=10`` admit exactly 10.  Across instances, lifetime quotas go
through the database (:meth:`vdm.store.UsageStore.consume`); per-minute
windows stay per instance until a shared (Redis) counter replaces
:class:`MinuteWindow`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


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
