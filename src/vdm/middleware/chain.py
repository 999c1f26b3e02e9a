"""The chain: configured middleware, in order, with one tuple per hook.

Built once at start-up (:func:`build_chain`).  An empty chain is falsy, and
the pipeline checks that once per request and does nothing else: no
:class:`Call`, no wrapped generators.  A non-empty chain wraps the event
iterator only when some middleware has ``on_event``, and the byte stream only
when some middleware has ``on_response``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from vdm import ir
from vdm.errors import GatewayError
from vdm.middleware.base import HOOKS, Call, Middleware, implements
from vdm.middleware.gemini import GeminiThoughtSignatures
from vdm.middleware.request_log import RequestLog

if TYPE_CHECKING:
    from vdm.config import MiddlewareSettings
    from vdm.outcome import Outcome, Reply
    from vdm.providers.base import Provider
    from vdm.routing import Route

log = logging.getLogger("vdm.middleware")

# name -> factory; the names are what MIDDLEWARE / [middleware] enabled accept.
FACTORIES: dict[str, Callable[[MiddlewareSettings], Middleware]] = {
    RequestLog.name: lambda settings: RequestLog(),
    GeminiThoughtSignatures.name: GeminiThoughtSignatures.from_settings,
}


class Chain:
    __slots__ = ("middlewares", "on_event", "on_request", "on_response", "on_start")

    def __init__(self, middlewares: Sequence[Middleware] = ()) -> None:
        self.middlewares = tuple(middlewares)
        hooks: dict[str, tuple[Any, ...]] = {
            hook: tuple((m.name, getattr(m, hook)) for m in self.middlewares if implements(m, hook))
            for hook in HOOKS
        }
        self.on_start: tuple[tuple[str, Callable[[Call], None]], ...] = hooks["on_start"]
        self.on_request: tuple[tuple[str, Callable[..., Awaitable[ir.ChatRequest]]], ...] = hooks[
            "on_request"
        ]
        self.on_event: tuple[Callable[[Call, ir.Event], ir.Event | None], ...] = tuple(
            hook for _, hook in hooks["on_event"]
        )
        self.on_response: tuple[tuple[str, Callable[[Call, Outcome], None]], ...] = hooks[
            "on_response"
        ]

    def __bool__(self) -> bool:
        return bool(self.middlewares)

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.middlewares]

    # ------------------------------------------------------------ the hooks, in call order

    def start(
        self,
        call: Call,
        client_model: str,
        route: Route,
        provider: Provider,
        parsed: Mapping[str, Any],
        outcome: Outcome,
    ) -> None:
        """The call is routed: fill in what the middleware see, run ``on_start``."""
        call.client_model, call.provider, call.model, call.alias = (
            client_model,
            route.provider,
            route.model,
            route.alias,
        )
        call.api_format = provider.api_format
        call.stream = parsed.get("stream") is True
        messages, tools = parsed.get("messages"), parsed.get("tools")
        call.messages = len(messages) if isinstance(messages, list) else 0
        call.tools = len(tools) if isinstance(tools, list) else 0
        call.outcome = outcome
        for name, hook in self.on_start:
            try:
                hook(call)
            except Exception:
                log.exception("middleware %s failed in on_start", name)

    async def request(self, call: Call, request: ir.ChatRequest) -> ir.ChatRequest:
        for _, hook in self.on_request:
            request = await hook(call, request)
        return request

    async def events(
        self, call: Call, first: ir.Event, events: AsyncIterator[ir.Event]
    ) -> tuple[ir.Event, AsyncIterator[ir.Event]]:
        """The provider's events as the ``on_event`` hooks leave them (the
        same iterator, untouched, when there are none)."""
        if not self.on_event:
            return first, events
        observed = self._observe(call, first, events)
        return await anext(observed), observed

    async def _observe(
        self, call: Call, first: ir.Event, events: AsyncIterator[ir.Event]
    ) -> AsyncIterator[ir.Event]:
        try:
            event = self._apply(call, first)
            if event is not None:
                yield event
            async for event in events:
                out = self._apply(call, event)
                if out is not None:
                    yield out
        finally:
            await events.aclose()  # type: ignore[attr-defined]

    def _apply(self, call: Call, event: ir.Event) -> ir.Event | None:
        for hook in self.on_event:
            out = hook(call, event)
            if out is None:
                return None
            event = out
        return event

    def finish(self, call: Call) -> None:
        """Run ``on_response`` (once the call is over)."""
        outcome = call.outcome
        if outcome is None:  # never routed: no call started
            return
        for name, hook in self.on_response:
            try:
                hook(call, outcome)
            except Exception:
                log.exception("middleware %s failed in on_response", name)

    # ------------------------------------------------------------ around a door's work

    async def run(self, call: Call, work: Awaitable[Reply]) -> Reply:
        """Await a door's pipeline run, then see the call to its end: now for
        a body or an error, when the byte stream ends for a stream."""
        try:
            reply = await work
        except BaseException as exc:
            self._failed(call, exc)
            raise
        call.status = reply.status
        call.first_event = time.perf_counter()  # the upstream's answer (or first event) is in
        if reply.stream is None:
            self.finish(call)
        elif self.on_response:
            reply.stream = self._until_end(call, reply.stream)
        return reply

    def _failed(self, call: Call, exc: BaseException) -> None:
        if call.outcome is None:
            return
        if isinstance(exc, GatewayError):
            call.status, message = exc.status, exc.message
        elif isinstance(exc, asyncio.CancelledError):
            call.status, message, call.interrupted = 499, "client disconnected", True
        else:
            call.status, message = 500, f"internal gateway error ({type(exc).__name__})"
        if call.outcome.error is None:
            call.outcome.error = message
        self.finish(call)

    async def _until_end(self, call: Call, stream: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        try:
            async for chunk in stream:
                yield chunk
        except BaseException:
            call.interrupted = True
            raise
        finally:
            try:
                await stream.aclose()  # type: ignore[attr-defined]
            finally:
                self.finish(call)


def build_chain(settings: MiddlewareSettings) -> Chain:
    """The configured middleware, in order (the names were checked at load:
    :func:`vdm.validate.load_settings`)."""
    return Chain([FACTORIES[name](settings) for name in settings.enabled])
