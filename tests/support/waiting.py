"""Bounded waits for what a test cannot be told directly.

A test waits for the event it needs (a log line, a request at a fake, a
counter) by asking again until it holds, up to a bound: a loaded machine
only makes it take longer, never fail.  The bound is generous because it
costs nothing unless the test is failing anyway.  These helpers are the one
place where the test suite polls.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

BOUND = 15.0  # seconds: what a busy 2-core machine may need, many times over


def eventually(
    probe: Callable[[], T], ok: Callable[[T], bool], within: float = BOUND, every: float = 0.02
) -> T:
    """``probe()`` once ``ok`` holds for it, else its last value after ``within``
    seconds (for the caller's assertion to show)."""
    deadline = time.monotonic() + within
    while True:
        value = probe()
        if ok(value) or time.monotonic() > deadline:
            return value
        time.sleep(every)


def wait_for(predicate: Callable[[], bool], timeout: float = BOUND, every: float = 0.02) -> bool:
    """Whether ``predicate()`` came true within ``timeout`` seconds."""
    return bool(eventually(predicate, bool, timeout, every))


async def until(predicate: Callable[[], bool], within: float = BOUND) -> bool:
    """:func:`wait_for` inside an event loop: other tasks run while it waits."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(within):
            while not predicate():  # noqa: ASYNC110 (nothing signals it: polled, bounded)
                await asyncio.sleep(0.005)
    return predicate()


def wait_text(read: Callable[[], str], text: str, timeout: float = BOUND) -> str:
    """What ``read()`` returns once it holds ``text`` (a log file, say); fails
    after ``timeout`` seconds showing what it held."""
    found = eventually(read, lambda t: text in t, timeout)
    if text not in found:
        raise AssertionError(f"{text!r} not seen after {timeout}s:\n{found}")
    return found
