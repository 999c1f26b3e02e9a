"""The stream heartbeat (``server/asgi.py``): a ping after a silence of the
interval, only between frames, and never one that a frame overtook."""

from __future__ import annotations

import asyncio
import itertools

from tests.support.waiting import until
from vdm.server.asgi import _Beat, _Heartbeat

PING = b": ping\n\n"


class Sent:
    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.times: list[float] = []  # the loop's clock at each

    async def __call__(self, message: dict) -> None:
        self.bodies.append(message["body"])
        self.times.append(asyncio.get_running_loop().time())


def _seen(beat: _Beat, silences: list[float]) -> int:
    """How many times the heartbeat has moved ``beat.last`` on (it does, ping or not)."""
    if not silences or silences[-1] != beat.last:
        silences.append(beat.last)
    return len(silences) - 1


async def turns(n: int) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def test_a_silence_of_the_interval_gets_pings_until_cancelled() -> None:
    interval = 0.02

    async def main() -> Sent:
        sent, loop = Sent(), asyncio.get_running_loop()
        started = loop.time()
        heart = _Heartbeat(loop, sent, _Beat(started), PING, interval)
        assert await until(lambda: len(sent.bodies) >= 3)
        heart.cancel()
        count = len(sent.bodies)
        # Time is the subject: several intervals pass, and no ping comes.
        await asyncio.sleep(5 * interval)
        assert len(sent.bodies) == count  # nothing after the cancel
        sent.times.insert(0, started)
        return sent

    sent = asyncio.run(main())
    assert set(sent.bodies) == {PING}
    gaps = [b - a for a, b in itertools.pairwise(sent.times)]
    assert min(gaps) >= interval * 0.99, gaps  # each after a silence of the interval


def test_no_ping_mid_frame() -> None:
    async def main() -> list[bytes]:
        sent, loop = Sent(), asyncio.get_running_loop()
        beat = _Beat(loop.time())
        beat.boundary = False  # the last relayed chunk ended inside a frame
        heart = _Heartbeat(loop, sent, beat, PING, 0.01)
        silences = []  # each silence the heartbeat saw out and let pass
        assert await until(lambda: _seen(beat, silences) >= 3)
        heart.cancel()
        return sent.bodies

    assert asyncio.run(main()) == []


def test_a_frame_sent_after_the_timer_but_before_the_ping_cancels_that_ping() -> None:
    """The timer starts the ping's task; if the relay sends in between (the
    stream's last frame, say), the ping must not follow it."""

    async def main() -> list[bytes]:
        sent, loop = Sent(), asyncio.get_running_loop()
        beat = _Beat(loop.time() - 1.0)  # long silent: the timer is due at once
        heart = _Heartbeat(loop, sent, beat, PING, 0.5)
        for _ in range(100):
            if heart._sending is not None:  # the ping's task exists, has not run
                break
            await asyncio.sleep(0)
        assert heart._sending is not None
        beat.last = loop.time()  # the relay sent a frame meanwhile
        await turns(3)
        heart.cancel()
        return sent.bodies

    assert asyncio.run(main()) == []
