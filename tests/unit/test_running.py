"""The remembered loop never hands out another loop's task."""

from __future__ import annotations

import asyncio
import threading

from vdm.running import Running


def test_the_task_is_the_caller_s_across_runs_and_threads() -> None:
    running = Running()

    async def mine() -> bool:
        task, loop = running.task()
        return task is asyncio.current_task() and loop is asyncio.get_running_loop()

    assert asyncio.run(mine())
    assert asyncio.run(mine())  # a new loop: the old one is not asked

    # A loop of another thread stays inside a task while this thread asks.
    inside, release = threading.Event(), threading.Event()
    seen: list[bool] = []

    async def holds() -> None:
        seen.append(await mine())
        inside.set()
        await asyncio.get_running_loop().run_in_executor(None, release.wait)

    other = threading.Thread(target=lambda: asyncio.run(holds()))
    other.start()
    assert inside.wait(10)
    try:
        assert asyncio.run(mine())
    finally:
        release.set()
        other.join(10)
    assert seen == [True]
