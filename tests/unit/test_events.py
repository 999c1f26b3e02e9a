"""The event bus, both backends: batches, kinds, overflow counted, a failing
consumer retried then given up on with a trace; on Redis, shared consumers
handle each event once across instances, instance consumers each see all."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest

from tests.support.redisdb import redis_env
from tests.support.waiting import until
from vdm.events import Event, memory
from vdm.events.bus import Bus
from vdm.events.memory import MemoryBus
from vdm.events.redis import RedisBus


class Sink:
    def __init__(self, fail: int = 0) -> None:
        self.events: list[Event] = []
        self.batches = 0
        self.fail = fail

    async def __call__(self, events: list[Event]) -> None:
        if self.fail:
            self.fail -= 1
            raise RuntimeError("consumer down")
        self.batches += 1
        self.events.extend(events)


def test_memory_bus_delivers_batches_by_kind_in_order() -> None:
    async def main() -> None:
        bus = MemoryBus(queue_size=10_000, source="me")
        a, b = Sink(), Sink()
        bus.subscribe("a", ["x"], a)
        bus.subscribe("b", ["x", "y"], b)
        await bus.start()
        for i in range(1200):
            bus.publish("x" if i % 2 else "y", {"i": i})
        await bus.flush()
        assert [e.data["i"] for e in a.events] == list(range(1, 1200, 2))
        assert [e.data["i"] for e in b.events] == list(range(1200))
        assert b.batches < 10  # batched, not one call per event
        assert bus.published["x"] == 600 and not bus.dropped
        await bus.close()

    asyncio.run(main())


def test_events_of_a_busy_spell_wait_for_one_batch_the_first_after_quiet_goes_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One event per request would wake a consumer per request; what comes
    within LINGER of a delivery waits for the next one instead.  (LINGER is
    made 0.5 s here, so a busy test machine cannot outlast it.)"""
    linger = 0.5
    monkeypatch.setattr(memory, "LINGER", linger)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        bus = MemoryBus(queue_size=10_000, source="me")
        sink = Sink()
        bus.subscribe("s", ["x"], sink)
        await bus.start()
        await asyncio.sleep(0)  # the lane waits
        published = loop.time()
        bus.publish("x", {"i": 0})
        for _ in range(10_000):  # (loop turns)
            if sink.events:
                break
            await asyncio.sleep(0)
        first = loop.time()
        assert first - published < linger / 2  # at once, after a quiet spell
        for i in range(1, 21):  # one "request" per loop turn, inside the linger
            bus.publish("x", {"i": i})
            await asyncio.sleep(0)
        assert loop.time() - first < linger  # (else this test proves nothing)
        assert len(sink.events) == 1  # they wait ...
        assert await until(lambda: len(sink.events) == 21)
        assert loop.time() - first >= linger * 0.9
        assert [e.data["i"] for e in sink.events] == list(range(21))
        assert sink.batches == 2  # ... and go together
        await bus.close()

    asyncio.run(main())


def test_a_full_queue_drops_counts_and_warns_once_without_blocking(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        bus = MemoryBus(queue_size=100, source="me")
        sink = Sink()
        bus.subscribe("s", ["x"], sink)
        await bus.start()
        with caplog.at_level(logging.WARNING, "vdm.events"):
            for i in range(250):  # no await: the consumer cannot run meanwhile
                bus.publish("x", {"i": i})
        assert bus.published["x"] == 100 and bus.dropped["x"] == 150
        assert sum("event queue full" in r.message for r in caplog.records) == 1
        await bus.flush()
        assert len(sink.events) == 100
        await bus.close()

    asyncio.run(main())


def test_a_failing_consumer_is_retried_then_given_up_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("vdm.events.bus.RETRY_DELAY", 0.001)

    async def main() -> None:
        bus = MemoryBus(queue_size=100, source="me")
        flaky, dead = Sink(fail=1), Sink(fail=99)
        bus.subscribe("flaky", ["x"], flaky)
        bus.subscribe("dead", ["x"], dead)
        await bus.start()
        bus.publish("x", {})
        await bus.flush()
        assert len(flaky.events) == 1 and bus.failed["flaky"] == 0
        assert dead.events == [] and bus.failed["dead"] == 1
        bus.publish("x", {})  # the dead consumer still gets the next ones
        await bus.flush()
        assert len(flaky.events) == 2 and bus.failed["dead"] == 2
        await bus.close()

    asyncio.run(main())


@pytest.fixture
def redis_settings() -> Iterator[dict[str, str]]:
    yield from redis_env()


def _redis_bus(settings: dict[str, str], source: str) -> RedisBus:
    return RedisBus(
        settings["REDIS_URL"],
        namespace=settings["REDIS_NAMESPACE"],
        queue_size=10_000,
        max_length=100_000,
        source=source,
    )


def test_redis_shared_consumers_split_the_work_instance_consumers_see_all(
    redis_settings: dict[str, str],
) -> None:
    async def main() -> None:
        buses: list[Bus] = []
        shared, own, others = [], [], []
        for name in ("one", "two"):
            bus = _redis_bus(redis_settings, name)
            shared.append(Sink())
            own.append(Sink())
            others.append(Sink())
            bus.subscribe("writer", ["x"], shared[-1], scope="shared")
            bus.subscribe("view", ["x"], own[-1], scope="instance")
            bus.subscribe("learn", ["x"], others[-1], scope="instance", others_only=True)
            await bus.start()
            buses.append(bus)
        for i in range(300):
            buses[i % 2].publish("x", {"i": i})
        await until(  # both instances' readers run on their own
            lambda: (
                sum(len(s.events) for s in shared) == 300 and all(len(o.events) == 300 for o in own)
            )
        )
        for bus in buses:
            await bus.flush()
        handled = sorted(e.data["i"] for s in shared for e in s.events)
        assert handled == list(range(300))  # each once, by one instance or the other
        assert all(sorted(e.data["i"] for e in o.events) == list(range(300)) for o in own)
        assert {e.source for e in others[0].events} == {"two"}
        assert len(others[0].events) == len(others[1].events) == 150
        for bus in buses:
            await bus.close()

    asyncio.run(main())


def test_redis_events_wait_for_a_shared_consumer_that_is_not_running(
    redis_settings: dict[str, str],
) -> None:
    """Published while no instance of the consumer runs: handled when one starts."""

    async def main() -> None:
        first = _redis_bus(redis_settings, "first")
        sink = Sink()
        first.subscribe("writer", ["x"], sink)
        await first.start()
        await first.close()  # the group stays; nobody reads it now
        publisher = _redis_bus(redis_settings, "publisher")
        await publisher.start()
        for i in range(5):
            publisher.publish("x", {"i": i})
        await publisher.flush()
        await publisher.close()
        later = _redis_bus(redis_settings, "later")
        later.subscribe("writer", ["x"], sink)
        await later.start()
        await later.flush()
        assert [e.data["i"] for e in sink.events] == list(range(5))
        await later.close()

    asyncio.run(main())
