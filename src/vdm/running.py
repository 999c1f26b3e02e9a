"""The running loop and its current task, asked without a system call.

CPython 3.11's ``asyncio.get_running_loop()`` compares the process id with
the one the loop was set in (a system call) on every call, and
``asyncio.current_task()`` asks it first.  The request path asks for its task
more than once per request; :class:`Running` remembers the loop the first
time and asks ``asyncio.current_task(loop)``, which makes no system call.  A
loop remembered from an earlier ``asyncio.run`` (tests) holds no current
task: then the loop is asked for again.  The loop is remembered with its
thread: a loop of another thread is never asked (its current task is not
this code's).
"""

from __future__ import annotations

import asyncio
from threading import get_ident


class Running:
    __slots__ = ("_loop", "_thread")

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = 0

    def task(self) -> tuple[asyncio.Task[object], asyncio.AbstractEventLoop]:
        """The current task and its loop (called from inside a task)."""
        loop = self._loop
        thread = get_ident()
        if loop is not None and self._thread == thread:
            task = asyncio.current_task(loop)
            if task is not None:
                return task, loop
        loop = asyncio.get_running_loop()
        task = asyncio.current_task(loop)
        assert task is not None
        self._loop, self._thread = loop, thread
        return task, loop


RUNNING = Running()  # one per process: its workers are processes of their own
