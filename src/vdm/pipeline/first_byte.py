"""The wait for an attempt's first byte (``FIRST_BYTE_TIMEOUT``)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from vdm.errors import UpstreamTimeout
from vdm.outcome import Outcome
from vdm.running import RUNNING


class FirstByte:
    """A timeout (``asyncio.timeout``'s rules: the task is cancelled at the
    deadline, the cancellation turned into the error) that notes when the
    first byte came and names the provider that sent none.  Written out
    rather than wrapping ``asyncio.timeout`` in a generator: it runs around
    every attempt, and the two layers cost more than the one timer handle it
    needs."""

    __slots__ = ("_cancelling", "_expired", "_handle", "_outcome", "_provider", "_seconds", "_task")

    def __init__(self, seconds: float | None, provider: str, outcome: Outcome) -> None:
        self._seconds = seconds
        self._provider = provider
        self._outcome = outcome
        self._expired = False

    async def __aenter__(self) -> None:
        task, loop = RUNNING.task()
        self._task = task
        self._cancelling = task.cancelling()
        seconds = self._seconds
        self._handle = None if seconds is None else loop.call_later(seconds, self._expire)

    def _expire(self) -> None:
        self._expired = True
        self._task.cancel()

    async def __aexit__(self, kind: type[BaseException] | None, exc: Any, tb: Any) -> None:
        if self._handle is not None:
            self._handle.cancel()
        timed_out = False
        if self._expired:  # (only our own cancellation becomes the timeout)
            timed_out = (
                self._task.uncancel() <= self._cancelling
                and kind is not None
                and issubclass(kind, asyncio.CancelledError)
            )
        if timed_out or (kind is not None and issubclass(kind, TimeoutError)):
            raise UpstreamTimeout(
                f"provider '{self._provider}' sent no first byte within "
                f"{self._seconds:g} s (FIRST_BYTE_TIMEOUT)",
                provider=self._provider,
            ) from None
        if kind is None:
            self._outcome.first_byte = time.perf_counter()
