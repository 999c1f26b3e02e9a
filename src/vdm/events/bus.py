"""What both bus backends share: the event, subscriptions, counting, and how a
consumer's batch is handled (retried, then given up on with a trace)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

log = logging.getLogger("vdm.events")

BATCH = 500  # events handed to a consumer at once
# After a delivery, what is published in the next LINGER seconds waits and goes in
# one batch: a busy gateway wakes its consumers once per 10 ms, not once per request.
# The first event after a quiet spell goes at once; readers that must see the
# latest (running totals, the management API) call ``flush()`` first.
LINGER = 0.01
ATTEMPTS = 3  # tries of one batch before it is given up (logged and counted)
RETRY_DELAY = 0.5  # seconds before the second try, doubled after


class Event(msgspec.Struct, frozen=True, array_like=True):
    kind: str
    data: Any  # JSON-able: a dict, or a list for the hot request.finished (vdm.totals)
    source: str  # the publishing instance (vdm.events.instance_id)
    ts: float  # time.time() at publication


Handler = Callable[[list[Event]], Awaitable[None]]
Scope = Literal["shared", "instance"]


@dataclass(eq=False)
class Subscription:
    name: str
    kinds: frozenset[str]
    handler: Handler
    scope: Scope
    others_only: bool  # skip this instance's own events (it applied them already)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one batch at a time

    def wants(self, event: Event, source: str) -> bool:
        return event.kind in self.kinds and not (self.others_only and event.source == source)


class Bus:
    """Publish without waiting; subscribers get batches on their own tasks."""

    spans_instances = False  # do other gateway instances read these events too?

    def __init__(self, *, queue_size: int, source: str) -> None:
        self.source = source
        self.queue_size = queue_size
        self.subscriptions: list[Subscription] = []
        self.published: dict[str, int] = {}
        self.dropped: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()  # per consumer: events given up on
        self._overflowing = False

    def subscribe(
        self,
        name: str,
        kinds: Iterable[str],
        handler: Handler,
        *,
        scope: Scope = "shared",
        others_only: bool = False,
    ) -> None:
        """Register a consumer (before :meth:`start`)."""
        self.subscriptions.append(Subscription(name, frozenset(kinds), handler, scope, others_only))

    def publish(self, kind: str, data: Any) -> None:
        """Queue one event; never blocks (a full queue drops it and counts that)."""
        if self._enqueue(Event(kind, data, self.source, time.time())):
            published = self.published
            published[kind] = published.get(kind, 0) + 1
            self._overflowing = False
            return
        self.dropped[kind] += 1
        if not self._overflowing:  # once per overflow, not once per event
            self._overflowing = True
            log.warning(
                "event queue full (%d): dropping %s events until it drains "
                "(counted in vdm_events_dropped_total)",
                self.queue_size,
                kind,
            )

    def _enqueue(self, event: Event) -> bool:
        raise NotImplementedError

    def depth(self) -> int:
        """Events queued in this process, not yet handed on."""
        raise NotImplementedError

    async def start(self) -> None:
        raise NotImplementedError

    async def flush(self) -> None:
        """Hand every event published so far to this instance's consumers and wait
        until they handled them (read-your-writes for the management API, tests)."""
        raise NotImplementedError

    async def close(self) -> None:
        """Flush, then stop the consumers."""
        raise NotImplementedError

    async def _handle(self, sub: Subscription, events: list[Event]) -> None:
        """Run one batch through ``sub``: retried with a growing delay, then given
        up on with a trace (log and metric), so one bad batch never stops a consumer."""
        delay = RETRY_DELAY
        for attempt in range(1, ATTEMPTS + 1):
            try:
                await sub.handler(events)
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                if attempt == ATTEMPTS:
                    self.failed[sub.name] += len(events)
                    log.error(
                        "event consumer %s failed %d times; %d events given up "
                        "(counted in vdm_events_failed_total)",
                        sub.name,
                        ATTEMPTS,
                        len(events),
                        exc_info=True,
                    )
                    return
                log.warning("event consumer %s failed; retrying", sub.name, exc_info=True)
                await asyncio.sleep(delay)
                delay *= 2
