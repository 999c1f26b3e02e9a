"""What a call comes back as, whatever door it came in by and whoever answered it.

:class:`Reply` is what the pipeline hands its door (status, headers, and
either bytes or a byte stream); :class:`Outcome` is what happened, read by the
access log, metrics, the middleware and the cache.  Both live here, below the
pipeline, so the parts that build or read them (the cache's replayed answers,
the middleware's ``on_response``) need not import the pipeline.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from vdm import ir


@dataclass(slots=True)
class Outcome:
    """What happened, for the access log, metrics and (later) audit."""

    provider: str = ""
    model: str = ""
    usage: ir.Usage | None = None
    stop_reason: str | None = None
    error: str | None = None
    started: float = field(default_factory=time.perf_counter)  # this attempt's start
    first_byte: float | None = None  # perf_counter() at the upstream's first event / chunk
    cost: float | None = None  # USD, once its usage is known and priced (vdm.pricing)


@dataclass(slots=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes = b""
    stream: AsyncIterator[bytes] | None = None
    outcome: Outcome | None = None
