"""cancel_on_disconnect ends the enclosed work when the client leaves, both ways:
through the server's DisconnectHook (our uvicorn protocol; the integration tests
in test_streaming.py cover it through real sockets) and through a watcher task
on ``receive()`` (any other ASGI server)."""

from __future__ import annotations

import asyncio

import pytest

from vdm.server.asgi import DisconnectHook, cancel_on_disconnect


def _receive_disconnect_after(delay: float):
    async def receive():
        await asyncio.sleep(delay)
        return {"type": "http.disconnect"}

    return receive


async def _never():
    await asyncio.sleep(3600)
    return {"type": "http.disconnect"}


@pytest.mark.parametrize("with_hook", [False, True])
def test_a_disconnect_ends_the_block_and_is_seen(with_hook: bool) -> None:
    async def go():
        resumed = []
        hook = DisconnectHook(lambda: resumed.append(True)) if with_hook else None
        receive = _never if with_hook else _receive_disconnect_after(0.01)
        if hook is not None:
            asyncio.get_running_loop().call_later(0.01, hook.fire)
        reached_end = False
        async with cancel_on_disconnect(receive, hook=hook) as watch:
            await asyncio.sleep(5)
            reached_end = True
        return watch.gone, reached_end, resumed

    gone, reached_end, resumed = asyncio.run(asyncio.wait_for(go(), 2))
    assert gone and not reached_end
    assert resumed == ([True] if with_hook else [])  # a paused connection reads again


def test_the_hook_is_let_go_when_the_block_ends() -> None:
    async def go():
        hook = DisconnectHook(lambda: None)
        async with cancel_on_disconnect(_never, hook=hook) as watch:
            pass
        hook.fire()  # the connection closes later (keep-alive ends): nothing to cancel
        await asyncio.sleep(0.01)
        return watch.gone

    assert asyncio.run(go()) is False


def test_work_that_finishes_first_is_not_cancelled() -> None:
    async def go():
        hook = DisconnectHook(lambda: None)
        async with cancel_on_disconnect(_never, hook=hook) as watch:
            await asyncio.sleep(0.01)
            result = "done"
        return result, watch.gone

    assert asyncio.run(go()) == ("done", False)
