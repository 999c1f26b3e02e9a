"""What a middleware is: optional hooks around the provider call.

A middleware subclasses :class:`Middleware` and overrides only the hooks it
needs; the chain (``vdm.middleware.chain``) keeps one list per hook, so a hook
nobody overrides costs nothing:

* ``on_start(call)`` — every call, once it is routed, on every path
  (conversion and passthrough), before the provider is asked;
* ``await on_request(call, request)`` — may rewrite the IR request before the
  provider call (conversion path only: passthrough has no IR request);
* ``on_event(call, event)`` — sync; may observe, rewrite or drop (return
  None) an IR stream event (conversion path; the streamed and the folded
  non-streaming answer see the same events);
* ``on_response(call, outcome)`` — the end: usage, stop reason, error,
  duration; on every path, errors included, once per started call.

``on_start`` is the fourth hook because a passthrough call has no
``on_request``, and an observer (the request log) must see both its ends.

Observers (``on_start``, ``on_response``) never break a request: the chain
logs what they raise.  Rewriters (``on_request``, ``on_event``) are part of
the answer, so what they raise fails the request like any other error.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from vdm import ir

if TYPE_CHECKING:
    from vdm.outcome import Outcome

HOOKS = ("on_start", "on_request", "on_event", "on_response")


@dataclass(slots=True, eq=False)
class Call:
    """One request as the middleware sees it; ``state`` is theirs to use
    (key it by the middleware's name)."""

    request_id: str
    door: str  # the door's name (vdm.doors: anthropic, openai, responses, grpc, ...)
    headers: Mapping[str, str]  # the client's, lower-case names; holds its key: never log
    client_model: str = ""  # the model the client asked for
    provider: str = ""  # the route: provider, upstream model, alias that matched
    model: str = ""
    alias: str | None = None
    api_format: str = ""  # the provider's wire format: openai, anthropic, echo
    stream: bool = False
    messages: int = 0
    tools: int = 0
    outcome: Outcome | None = None  # set when the call starts (is routed)
    status: int = 0  # HTTP status of the reply (or of the error)
    first_event: float | None = None  # perf_counter() when the upstream first answered
    interrupted: bool = False  # the stream ended early (client gone, failure)
    state: dict[str, Any] = field(default_factory=dict)

    def elapsed_ms(self, since: float | None = None) -> float | None:
        """Milliseconds from the call's start to ``since`` (default: now)."""
        if self.outcome is None:
            return None
        end = time.perf_counter() if since is None else since
        return (end - self.outcome.started) * 1000


class Middleware:
    """Base class: every hook is optional (the defaults change nothing)."""

    name: ClassVar[str] = ""

    def on_start(self, call: Call) -> None:
        return None

    async def on_request(self, call: Call, request: ir.ChatRequest) -> ir.ChatRequest:
        return request

    def on_event(self, call: Call, event: ir.Event) -> ir.Event | None:
        return event

    def on_response(self, call: Call, outcome: Outcome) -> None:
        return None


def implements(middleware: Middleware, hook: str) -> bool:
    """Does ``middleware`` override ``hook`` (rather than inherit the no-op)?"""
    return getattr(type(middleware), hook) is not getattr(Middleware, hook)
