"""The in-process bus: a bounded queue per subscription, a task per subscription."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

from vdm.events.bus import BATCH, LINGER, Bus, Event, Subscription


class _Lane:
    __slots__ = ("queue", "sub", "task", "wake")

    def __init__(self, sub: Subscription) -> None:
        self.sub = sub
        self.queue: deque[Event] = deque()
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None


class MemoryBus(Bus):
    def __init__(self, *, queue_size: int, source: str) -> None:
        super().__init__(queue_size=queue_size, source=source)
        self._lanes: dict[str, tuple[_Lane, ...]] = {}  # kind -> lanes that want it
        self._all: list[_Lane] = []

    async def start(self) -> None:
        self._all = [_Lane(s) for s in self.subscriptions if not s.others_only]
        for lane in self._all:
            for kind in lane.sub.kinds:
                self._lanes[kind] = (*self._lanes.get(kind, ()), lane)
            lane.task = asyncio.create_task(self._run(lane), name=f"vdm-events-{lane.sub.name}")

    def _enqueue(self, event: Event) -> bool:
        lanes = self._lanes.get(event.kind, ())
        for lane in lanes:  # (all or none: a full lane drops the event for every consumer)
            if len(lane.queue) >= self.queue_size:
                return False
        for lane in lanes:
            lane.queue.append(event)
            lane.wake.set()
        return True

    def depth(self) -> int:
        return max((len(lane.queue) for lane in self._all), default=0)

    async def _run(self, lane: _Lane) -> None:
        while True:
            await lane.wake.wait()
            lane.wake.clear()
            await self._drain(lane)
            await asyncio.sleep(LINGER)

    async def _drain(self, lane: _Lane) -> None:
        async with lane.sub.lock:
            queue = lane.queue
            while queue:
                batch = [queue.popleft() for _ in range(min(len(queue), BATCH))]
                await self._handle(lane.sub, batch)

    async def flush(self) -> None:
        for lane in self._all:
            await self._drain(lane)

    async def close(self) -> None:
        await self.flush()
        for lane in self._all:
            if lane.task is not None:
                lane.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await lane.task
