"""The stream heartbeat (``server/asgi.py``): a ping after a silence of the
interval, only between frames, and never one that a frame overtook."""

from __future__ import annotations

import asyncio

from vdm.server.asgi import _Beat, _Heartbeat

PING = b": ping\n\n"


class Sent:
    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def __call__(self, message: dict) -> None:
        self.bodies.append(message["body"])


async def turns(n: int) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def test_a_silence_of_the_interval_gets_pings_until_cancelled() -> None:
    async def main() -> list[bytes]:
        sent, loop = Sent(), asyncio.get_running_loop()
        heart = _Heartbeat(loop, sent, _Beat(loop.time()), PING, 0.02)
        await asyncio.sleep(0.07)
        heart.cancel()
        count = len(sent.bodies)
        await asyncio.sleep(0.05)
        assert len(sent.bodies) == count  # nothing after the cancel
        return sent.bodies

    bodies = asyncio.run(main())
    assert 2 <= len(bodies) <= 4 and set(bodies) == {PING}


def test_no_ping_mid_frame() -> None:
    async def main() -> list[bytes]:
        sent, loop = Sent(), asyncio.get_running_loop()
        beat = _Beat(loop.time())
        beat.boundary = False  # the last relayed chunk ended inside a frame
        heart = _Heartbeat(loop, sent, beat, PING, 0.01)
        await asyncio.sleep(0.05)
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
