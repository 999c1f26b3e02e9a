"""The pipeline's hooks for traces, used only when tracing is on (:mod:`vdm.tracing`).

* :class:`TracedAccount` — the :class:`~vdm.pipeline.accounting.Account` of a
  traced request: it opens the request's span, makes it the task's current
  trace, and ends it when the account learns the end (or a failure);
* :func:`traced` — wraps a request's attempts so each is a child span whose
  ``traceparent`` goes upstream with the client's other forwarded headers.

Off, the gateway builds plain accounts and leaves the attempts as they are:
these cost nothing then.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Mapping
from contextvars import Token
from typing import TYPE_CHECKING, Any

from vdm.errors import GatewayError
from vdm.outcome import Outcome, Reply
from vdm.pipeline.accounting import Account, Answer
from vdm.providers.base import ClientContext, Provider
from vdm.routing import Route
from vdm.tracing import CURRENT

if TYPE_CHECKING:
    from vdm.metrics import Metrics
    from vdm.pricing import Prices
    from vdm.tenants.registry import Principal, TokenRegistry
    from vdm.tracing.spans import RequestTrace

Attempt = Callable[[Route, Provider, ClientContext, Outcome], Awaitable[Reply]]


class TracedAccount(Account):
    """An account whose request is a span (``trace``)."""

    __slots__ = ("_token", "trace")

    def __init__(
        self,
        metrics: Metrics,
        tenants: TokenRegistry | None,
        door: str,
        principal: Principal | None,
        prices: Prices | None,
        trace: RequestTrace,
    ) -> None:
        super().__init__(metrics, tenants, door, principal, prices)
        self.trace = trace
        self._token: Token[RequestTrace | None] | None = None

    def __enter__(self) -> TracedAccount:
        super().__enter__()
        self._token = CURRENT.set(self.trace)
        return self

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        super().__exit__(kind, exc, tb)
        if self._token is not None:
            with contextlib.suppress(ValueError):  # (a generator resumed in another context)
                CURRENT.reset(self._token)
        if exc is not None and self._answer is None:
            self.trace.fail(exc)  # (an error no transport turned into a failed())
        elif self._answer is None:
            self.trace.finish(None, 499, None, False)  # the client left before an answer

    def answered(self, answer: Answer) -> Callable[[], Awaitable[None]] | None:
        if isinstance(answer, Reply) and answer.stream is None:
            self.trace.answer_body(answer.body)
        return super().answered(answer)

    async def ended(
        self, status: int, upstream_end: float | None, *, cache_hit: bool = False
    ) -> None:
        await super().ended(status, upstream_end, cache_hit=cache_hit)
        outcome = self._answer.outcome if self._answer is not None else None
        self.trace.finish(outcome, status, upstream_end, cache_hit)

    def failed(self, exc: GatewayError) -> None:
        super().failed(exc)
        self.trace.fail(exc)


def traced(attempt: Attempt, model: str, parsed: Mapping[str, Any]) -> Attempt:
    """``attempt``, each call a child span of the current request's (as it is
    when no request is traced in this task)."""
    request = CURRENT.get()
    if request is None:
        return attempt
    request.routed(model, parsed)

    async def run(route: Route, provider: Provider, ctx: ClientContext, outcome: Outcome) -> Reply:
        span = request.attempt(route.provider, route.model)
        headers = dict(ctx.headers) if ctx.headers else {}
        headers["traceparent"] = span.traceparent  # (the client's tracestate goes as it came)
        ctx = ClientContext(ctx.client_key, ctx.upstream_key, headers)
        try:
            reply = await attempt(route, provider, ctx, outcome)
        except BaseException as exc:
            span.failed(exc)
            raise
        span.answered(outcome)
        return reply

    return run
