"""Failed attempts at an operator's credential (``MANAGEMENT_TOKEN``, or
``PROXY_API_KEY`` where it is the operator's), counted per client address.

Each address has a bucket of :data:`BURST` attempts, refilled at one every
:data:`REFILL` seconds; a failure takes one.  With the bucket empty, the
address is refused (429 with ``retry-after``) before its credential is even
looked at, so a guesser gets ten tries and then one every six seconds, and
the audit log one row for each (not one per guess).  A right credential takes
nothing.  Per instance: N replicas allow N times as many.

Memory is bounded: at most :data:`MAX_ADDRESSES` buckets, the oldest dropped
first (an address dropped starts again with a full bucket).
"""

from __future__ import annotations

import time
from collections.abc import Callable

BURST = 10
REFILL = 6.0  # seconds per attempt given back
MAX_ADDRESSES = 10_000


class FailedLogins:
    __slots__ = ("_buckets", "_burst", "_clock", "_refill")

    def __init__(
        self,
        burst: int = BURST,
        refill: float = REFILL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._burst = burst
        self._refill = refill
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # address -> (attempts left, when)

    def _left(self, address: str, now: float) -> float:
        entry = self._buckets.get(address)
        if entry is None:
            return float(self._burst)
        left, when = entry
        return min(float(self._burst), left + (now - when) / self._refill)

    def wait(self, address: str | None) -> float | None:
        """Seconds until ``address`` may try again, or None when it may now."""
        if address is None or address not in self._buckets:
            return None
        left = self._left(address, self._clock())
        return None if left >= 1.0 else (1.0 - left) * self._refill

    def failed(self, address: str | None) -> bool:
        """Count a failure; True when it was the last one allowed for now."""
        if address is None:
            return False
        now = self._clock()
        left = self._left(address, now) - 1.0
        self._buckets.pop(address, None)  # (re-inserted last: the oldest go first)
        if len(self._buckets) >= MAX_ADDRESSES:
            del self._buckets[next(iter(self._buckets))]
        self._buckets[address] = (left, now)
        return left < 1.0
