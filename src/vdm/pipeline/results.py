"""What one pass through the pipeline yields besides :mod:`vdm.outcome`'s
:class:`~vdm.outcome.Outcome` and :class:`~vdm.outcome.Reply`: the started
answer an IR door renders itself (:class:`Completion`), and request ids."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from vdm import ir
from vdm.ids import hex_id
from vdm.outcome import Outcome


@dataclass(slots=True)
class Completion:
    """An answer that has started (its first event is in), for doors that speak
    IR themselves (the gRPC service): who serves it, its events, how many
    attempts it took (retries and fallbacks included)."""

    outcome: Outcome
    events: AsyncIterator[ir.Event]
    attempts: int


def new_request_id() -> str:
    return "req_vdm_" + hex_id(12)
