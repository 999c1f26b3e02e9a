"""cancel_on_disconnect ends the enclosed work when the client leaves, both ways:
through the server's DisconnectHook (our uvicorn protocol; the integration tests
in test_streaming.py cover it through real sockets) and through a watcher task
on ``receive()`` (any other ASGI server)."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.waiting import BOUND
from vdm.server.asgi import DisconnectHook, cancel_on_disconnect


async def _never():
    await asyncio.Event().wait()
    return {"type": "http.disconnect"}


@pytest.mark.parametrize("with_hook", [False, True])
def test_a_disconnect_ends_the_block_and_is_seen(with_hook: bool) -> None:
    async def go():
        resumed = []
        hook = DisconnectHook(lambda: resumed.append(True)) if with_hook else None
        left = asyncio.Event()  # the client leaves once the work has begun

        async def receive():
            await left.wait()
            return {"type": "http.disconnect"}

        reached_end = False
        async with cancel_on_disconnect(_never if with_hook else receive, hook=hook) as watch:
            if hook is not None:
                hook.fire()
            else:
                left.set()
            await asyncio.Event().wait()  # work that never ends by itself
            reached_end = True
        return watch.gone, reached_end, resumed

    gone, reached_end, resumed = asyncio.run(asyncio.wait_for(go(), BOUND))
    assert gone and not reached_end
    assert resumed == ([True] if with_hook else [])  # a paused connection reads again


def test_the_hook_is_let_go_when_the_block_ends() -> None:
    async def go():
        hook = DisconnectHook(lambda: None)
        async with cancel_on_disconnect(_never, hook=hook) as watch:
            pass
        hook.fire()  # the connection closes later (keep-alive ends): nothing to cancel
        await asyncio.sleep(0)  # (a cancel, had it come, would land here)
        return watch.gone

    assert asyncio.run(go()) is False


def test_work_that_finishes_first_is_not_cancelled() -> None:
    async def go():
        hook = DisconnectHook(lambda: None)
        async with cancel_on_disconnect(_never, hook=hook) as watch:
            await asyncio.sleep(0)  # (the work awaits something)
            result = "done"
        return result, watch.gone

    assert asyncio.run(go()) == ("done", False)
