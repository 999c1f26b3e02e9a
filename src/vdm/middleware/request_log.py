"""``request-log``: one INFO line when a call starts, one when it ends.

On the ``vdm.requests`` logger (the request id is added to every line by
``vdm.logs``).  Names, counts and timings only: never a body, a key or a
header value.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from vdm.middleware.base import Call, Middleware

if TYPE_CHECKING:
    from vdm.outcome import Outcome

log = logging.getLogger("vdm.requests")


class RequestLog(Middleware):
    name = "request-log"

    def on_start(self, call: Call) -> None:
        if log.isEnabledFor(logging.INFO):
            log.info(
                "start %s %s -> %s:%s stream=%s messages=%d tools=%d",
                call.door,
                call.client_model,
                call.provider,
                call.model,
                "true" if call.stream else "false",
                call.messages,
                call.tools,
            )

    def on_response(self, call: Call, outcome: Outcome) -> None:
        if not log.isEnabledFor(logging.INFO):
            return
        usage = outcome.usage
        first = call.elapsed_ms(call.first_event) if call.first_event is not None else None
        log.info(
            "end %s %s stop=%s in=%s out=%s %.1fms first=%s%s",
            call.status or "-",
            "error=" + repr(outcome.error) if outcome.error else "ok",
            outcome.stop_reason or "-",
            usage.input_tokens if usage else "-",
            usage.output_tokens if usage else "-",
            call.elapsed_ms() or 0.0,
            f"{first:.1f}ms" if first is not None else "-",
            " interrupted" if call.interrupted else "",
        )
