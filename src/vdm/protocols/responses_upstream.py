"""A native Responses upstream's answer, relayed as bytes to a Responses client
(the passthrough): the usage and status the outcome needs, and how a finished
stream ends.  Pure, no I/O.  (The Responses door, clients speaking Responses
to the gateway, is :mod:`vdm.protocols.responses_door`; a converted route
reaches its provider through chat completions, :mod:`vdm.protocols.openai_upstream`.)
"""

from __future__ import annotations

from typing import Any

import msgspec

from vdm import ir
from vdm.protocols import outcome
from vdm.protocols.sse import last_frame

_decoder = msgspec.json.Decoder()

_FINAL_EVENTS = frozenset({"response.completed", "response.incomplete", "response.failed"})
_FINAL_NEEDLES = tuple((e, (e.encode(),)) for e in sorted(_FINAL_EVENTS))


class ResponsesAnswer(msgspec.Struct):
    """The fields of a whole native answer the outcome needs."""

    usage: dict[str, Any] | None = None
    status: str | None = None
    model: Any = None


def usage_from_responses(usage: Any) -> ir.Usage | None:
    if not isinstance(usage, dict):
        return None
    return outcome.usage_from_prompt(
        usage.get("input_tokens"),
        usage.get("output_tokens"),
        outcome.detail(usage.get("input_tokens_details"), "cached_tokens"),
        outcome.detail(usage.get("output_tokens_details"), "reasoning_tokens"),
    )


class UsageTap:
    """Reads usage out of a Responses SSE stream relayed as bytes: fed whole
    frames (:class:`~vdm.protocols.sse.FrameCutter`), only the final
    ``response.*`` event is parsed and decoded."""

    __slots__ = ("stop_reason", "usage")

    def __init__(self) -> None:
        self.usage: ir.Usage | None = None
        self.stop_reason: str | None = None

    def feed(self, frames: bytes) -> None:
        for event, needle in _FINAL_NEEDLES:
            found = last_frame(frames, needle, event)
            if found is not None:
                self._read(found[1])

    def _read(self, data: bytes) -> None:
        try:
            value = _decoder.decode(data)
        except (msgspec.DecodeError, UnicodeDecodeError):
            return
        response = value.get("response") if isinstance(value, dict) else None
        if isinstance(response, dict):
            self.usage = usage_from_responses(response.get("usage"))
            status = response.get("status")
            self.stop_reason = status if isinstance(status, str) else None


# How a finished native stream ends (for the passthrough's truncation check).
STREAM_ENDS = (
    b'"response.completed"',
    b'"response.incomplete"',
    b'"response.failed"',
    b"event: error",
)
