"""The running loop and its current task, asked without a system call.

CPython 3.11's ``asyncio.get_running_loop()`` compares the process id with
the one the loop was set in (a system call) on every call, and
``asyncio.current_task()`` asks it first.  The request path asks for its task
more than once per request; :class:`Running` remembers the loop the first
time and asks ``asyncio.current_task(loop)``, which makes no system call.  A
loop remembered from an earlier ``asyncio.run`` (tests) holds no current
task: then the loop is asked for again.
"""

from __future__ import annotations

import asyncio


class Running:
    __slots__ = ("_loop",)

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None

    def task(self) -> tuple[asyncio.Task[object], asyncio.AbstractEventLoop]:
        """The current task and its loop (called from inside a task)."""
        loop = self._loop
        if loop is not None:
            task = asyncio.current_task(loop)
            if task is not None:
                return task, loop
        loop = self._loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        assert task is not None
        return task, loop


RUNNING = Running()  # one loop per process: its workers are processes of their own
