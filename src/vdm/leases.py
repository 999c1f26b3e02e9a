"""How many requests still use an object that a reload replaced.

A configuration reload (:mod:`vdm.server.reload`) builds a new gateway for
new requests; the requests already in flight finish on the one they started
with, which is closed only once the last of them has let go.  Each door takes
a lease on the gateway it serves a request with, for the whole request
(a stream included): two integer operations a request, nothing else.
"""

from __future__ import annotations

import asyncio
from types import TracebackType


class Leases:
    """A count of users; :meth:`idle` waits until there are none."""

    __slots__ = ("_idle", "count")

    def __init__(self) -> None:
        self.count = 0
        self._idle: asyncio.Event | None = None  # made by idle(), only once retired

    def __enter__(self) -> Leases:
        self.count += 1
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.count -= 1
        if self.count == 0 and self._idle is not None:
            self._idle.set()

    async def idle(self) -> None:
        """Return once no request holds a lease (at once when none does)."""
        if self.count == 0:
            return
        if self._idle is None:
            self._idle = asyncio.Event()
        await self._idle.wait()
