"""The bus on Redis Streams, for several gateway instances.

Each kind of event has its stream (``<ns>:events:<kind>``; ``REDIS_NAMESPACE``
is ``vdm`` by default), trimmed to about ``EVENTS_STREAM_MAX_LENGTH``
entries, so a consumer reads only the kinds it handles.  Streams are read
through consumer groups:

* a ``shared`` subscription is the group ``<ns>:<name>``, which all instances
  read as its consumers, so each event reaches exactly one of them; an entry
  is acknowledged only after it was handled, and entries a vanished instance
  left unacknowledged for a minute are claimed by another (XAUTOCLAIM);
* an ``instance`` subscription is the group ``<ns>:<name>:<instance>``,
  created at start (reading from then on) and destroyed at a graceful stop.

``publish`` only appends to a bounded outbox in this process; one writer task
sends it in pipelined batches.  While Redis is unreachable the outbox keeps
what it can (up to ``EVENTS_QUEUE_SIZE``; beyond that events are counted as
dropped), the failure is logged once per outage, and sending resumes when
Redis is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import Any

import msgspec

from vdm.events.bus import BATCH, LINGER, Bus, Event, Subscription
from vdm.redis_link import RedisLink

log = logging.getLogger("vdm.events")

# A reader's longest wait for new entries.  Also how long a stop may wait for a
# reader: a blocked XREADGROUP is not cancelled (redis-py would then hold the
# connection until its socket timeout); the reader sees the stop when it returns.
_BLOCK_MS = 500
CLAIM_IDLE_MS = 60_000  # unacknowledged this long: the consumer is presumed gone
CLAIM_EVERY = 30.0  # seconds between looks for such entries
_decode = msgspec.json.Decoder(Event).decode
_encode = msgspec.json.Encoder().encode


class RedisBus(Bus):
    spans_instances = True

    def __init__(
        self, url: str, *, namespace: str, queue_size: int, max_length: int, source: str
    ) -> None:
        super().__init__(queue_size=queue_size, source=source)
        # Readers block up to _BLOCK_MS on their own connection from the pool.
        self._link = RedisLink(
            url, "the event bus", "events wait in this instance's queue", socket_timeout=10
        )
        self._redis: Any = self._link.client
        self._ns = namespace
        self._max_length = max_length
        self._outbox: deque[Event] = deque()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._send_lock = asyncio.Lock()
        self._stopping = False

    def stream(self, kind: str) -> str:
        return f"{self._ns}:events:{kind}"

    def group(self, sub: Subscription) -> str:
        name = f"{self._ns}:{sub.name}"
        return name if sub.scope == "shared" else f"{name}:{self.source}"

    def _streams(self, sub: Subscription) -> list[str]:
        return [self.stream(kind) for kind in sorted(sub.kinds)]

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Create the groups (reading from now on), start the writer and readers."""
        try:
            for sub in self.subscriptions:
                await self._create_groups(sub)
        except Exception as exc:  # Redis down at start: the readers create them later
            self._link.trouble(exc)
        self._tasks = [asyncio.create_task(self._write(), name="vdm-events-writer")]
        self._tasks += [
            asyncio.create_task(self._read(sub), name=f"vdm-events-{sub.name}")
            for sub in self.subscriptions
        ]

    async def _create_groups(self, sub: Subscription) -> None:
        from redis.exceptions import ResponseError

        for stream in self._streams(sub):
            try:
                await self._redis.xgroup_create(stream, self.group(sub), id="$", mkstream=True)
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):  # (exists already: another instance made it)
                    raise

    async def flush(self) -> None:
        """Best effort while Redis is away: the events wait in the outbox, and a
        reader (the management API, running totals) sees what was handled."""
        try:
            await self._flush()
        except Exception as exc:
            self._link.trouble(exc)

    async def _flush(self) -> None:
        await self._send()
        for sub in self.subscriptions:
            async with sub.lock:
                while await self._read_once(sub):
                    pass
            # A reader may hold entries it took just before (delivered to this
            # consumer, not yet acknowledged): wait for it, a few seconds at most.
            for _ in range(1000):  # (5 ms apart)
                if not await self._holding(sub):
                    break
                await asyncio.sleep(0.005)

    async def _holding(self, sub: Subscription) -> bool:
        for stream in self._streams(sub):
            pending = await self._redis.xpending_range(
                stream, self.group(sub), min="-", max="+", count=1, consumername=self.source
            )
            if pending:
                return True
        return False

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.flush()
        self._stopping = True
        writer, readers = self._tasks[:1], self._tasks[1:]
        for task in writer:
            task.cancel()
        if readers:
            await asyncio.wait(readers, timeout=_BLOCK_MS / 1000 * 3)
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(Exception):
            await self._leave()
        await self._link.close()

    async def _leave(self) -> None:
        """Remove this instance's own groups, and its name from the shared ones
        when it holds nothing unacknowledged there."""
        for sub in self.subscriptions:
            if sub.scope == "instance":
                for stream in self._streams(sub):
                    await self._redis.xgroup_destroy(stream, self.group(sub))
            elif not await self._holding(sub):
                for stream in self._streams(sub):
                    await self._redis.xgroup_delconsumer(stream, self.group(sub), self.source)

    # ------------------------------------------------------------ writing

    def _enqueue(self, event: Event) -> bool:
        if len(self._outbox) >= self.queue_size:
            return False
        self._outbox.append(event)
        self._wake.set()
        return True

    def depth(self) -> int:
        return len(self._outbox)

    async def _write(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._send()
            except Exception as exc:
                self._link.trouble(exc)
                await asyncio.sleep(1.0)
                self._wake.set()  # try again what is still in the outbox
            await asyncio.sleep(LINGER)

    async def _send(self) -> None:
        async with self._send_lock:
            outbox = self._outbox
            while outbox:
                batch = [outbox.popleft() for _ in range(min(len(outbox), BATCH))]
                pipe = self._redis.pipeline(transaction=False)
                for event in batch:
                    pipe.xadd(
                        self.stream(event.kind),
                        {"e": _encode(event)},
                        maxlen=self._max_length,
                        approximate=True,
                    )
                try:
                    await pipe.execute()
                except BaseException:
                    outbox.extendleft(reversed(batch))  # kept, in order, for the next try
                    raise
                self._link.ok()

    # ------------------------------------------------------------ reading

    async def _read(self, sub: Subscription) -> None:
        claim_at = time.monotonic() + CLAIM_EVERY
        streams = dict.fromkeys(self._streams(sub), ">")
        while not self._stopping:
            try:
                reply = await self._redis.xreadgroup(
                    self.group(sub), self.source, streams, count=BATCH, block=_BLOCK_MS
                )
                if reply:
                    async with sub.lock:  # (handled even when stopping: it was taken)
                        await self._process_reply(sub, reply)
                if sub.scope == "shared" and time.monotonic() >= claim_at:
                    claim_at = time.monotonic() + CLAIM_EVERY
                    await self._claim(sub)
                self._link.ok()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._link.trouble(exc)
                await asyncio.sleep(1.0)
                with contextlib.suppress(Exception):
                    await self._create_groups(sub)  # (Redis restarted empty: groups are gone)

    async def _read_once(self, sub: Subscription) -> bool:
        """Take and handle one batch of new entries without waiting (under the lock)."""
        reply = await self._redis.xreadgroup(
            self.group(sub), self.source, dict.fromkeys(self._streams(sub), ">"), count=BATCH
        )
        if not reply or not any(entries for _, entries in reply):
            return False
        await self._process_reply(sub, reply)
        return True

    async def _process_reply(self, sub: Subscription, reply: list[Any]) -> None:
        for stream, entries in reply:
            if entries:
                await self._process(sub, stream, entries)

    async def _claim(self, sub: Subscription) -> None:
        """Take over entries another consumer of the group left unacknowledged."""
        for stream in self._streams(sub):
            reply = await self._redis.xautoclaim(
                stream, self.group(sub), self.source, min_idle_time=CLAIM_IDLE_MS, count=BATCH
            )
            entries = reply[1] if reply else []
            if entries:
                log.info("events: %s took over %d unacknowledged entries", sub.name, len(entries))
                async with sub.lock:
                    await self._process(sub, stream, entries)

    async def _process(self, sub: Subscription, stream: Any, entries: list[Any]) -> None:
        ids, events = [], []
        for entry_id, fields in entries:
            ids.append(entry_id)
            raw = fields.get(b"e") if fields else None
            if raw is None:
                continue  # (trimmed away while pending)
            try:
                event = _decode(raw)
            except msgspec.DecodeError:
                log.warning("events: unreadable entry %s skipped", entry_id)
                continue
            if sub.wants(event, self.source):
                events.append(event)
        if events:
            await self._handle(sub, events)
        if ids:
            await self._redis.xack(stream, self.group(sub), *ids)
