"""The spans of a request: one for the request, a child for each upstream attempt.

The request's span (kind SERVER, named ``chat {model}``) follows the GenAI
semantic conventions — ``gen_ai.operation.name``, ``gen_ai.provider.name``,
``gen_ai.request.model``, ``gen_ai.response.model``, ``gen_ai.usage.*``,
``gen_ai.response.finish_reasons``, ``error.type`` — and adds vdm's own under
``vdm.*``: the door, the route, a hash of the client's credential (never the
credential), the attempts, retries and fallbacks, the tenant's project and
token ids, whether the cache answered.  Its parent is the client's W3C
``traceparent`` (an HTTP header, or gRPC metadata) when it sent one.

Each attempt at an upstream (a retry, the next route of a failover) is a child
span (kind CLIENT) whose context goes upstream as the attempt's own
``traceparent``; the one that answered ends with the upstream's part of the
answer, the others with their error.  The first byte is an event
(``vdm.first_byte``) on both.

Prompts and completions are not recorded unless the operator opts in
(``trace-content``): then the request's messages as the client sent them
(``gen_ai.input.messages``) and a whole answer's body
(``gen_ai.output.messages``), in the door's own JSON.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import msgspec
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from vdm.errors import GatewayError
from vdm.outcome import Outcome
from vdm.tracing.export import PROBE_SECONDS, Watched

if TYPE_CHECKING:
    from vdm.tenants.registry import Principal

CLOSE_WAIT = 3.0  # seconds the gateway's close waits for the last spans to leave
_PROPAGATOR = TraceContextTextMapPropagator()
_encode = msgspec.json.Encoder().encode
# The client's credential, by the header that carries it (lower-case names).
_CREDENTIAL_HEADERS = ("x-api-key", "authorization", "api-key", "x-goog-api-key")


def _wall_ns(perf: float) -> int:
    """A ``time.perf_counter()`` reading as the epoch nanoseconds spans want."""
    return time.time_ns() - int((time.perf_counter() - perf) * 1e9)


def key_hash(headers: Mapping[str, str]) -> str | None:
    """The first 16 hex digits of the SHA-256 of the client's credential."""
    for name in _CREDENTIAL_HEADERS:
        value = headers.get(name)
        if value:
            if value[:7].lower() == "bearer ":
                value = value[7:]
            return hashlib.sha256(value.strip().encode()).hexdigest()[:16]
    return None


def error_type(exc: BaseException) -> str:
    """``error.type``: the error tree's kind, else the exception's class."""
    if isinstance(exc, GatewayError):
        return exc.kind
    return type(exc).__qualname__


class Tracer:
    """This process's tracer (one tracer provider, shared by the gateways a
    reload makes)."""

    def __init__(
        self,
        provider: TracerProvider,
        record_content: bool = False,
        exporter: Watched | None = None,
    ) -> None:
        self.provider = provider
        self.record_content = record_content
        self._exporter = exporter
        self._tracer = provider.get_tracer("vdm")
        self._probe_at = 0.0

    def configured(self, record_content: bool) -> Tracer:
        """This tracer, with the content setting of a reloaded configuration."""
        if record_content == self.record_content:
            return self
        return Tracer(self.provider, record_content, self._exporter)

    def request(
        self, door: str, headers: Mapping[str, str] | None, principal: Principal | None
    ) -> RequestTrace | None:
        """Open the span of one request by ``door``; None, while the collector
        does not answer, for all requests but a probe every
        :data:`~vdm.tracing.export.PROBE_SECONDS`."""
        if self._exporter is not None and not self._exporter.reaching:
            now = time.monotonic()
            if now < self._probe_at:
                return None
            self._probe_at = now + PROBE_SECONDS
        parent = _PROPAGATOR.extract(headers) if headers and "traceparent" in headers else None
        attributes: dict[str, Any] = {"gen_ai.operation.name": "chat", "vdm.door": door}
        if headers and (hashed := key_hash(headers)) is not None:
            attributes["vdm.client.key_hash"] = hashed
        if principal is not None:
            attributes["vdm.project.id"] = principal.project_id
            if principal.token_id is not None:
                attributes["vdm.token.id"] = principal.token_id
        span = self._tracer.start_span(
            f"vdm {door}", context=parent, kind=SpanKind.SERVER, attributes=attributes
        )
        return RequestTrace(self._tracer, span, self.record_content)

    async def close(self) -> None:
        """Export what is left, waiting :data:`CLOSE_WAIT` at most (a collector
        that does not answer must not hold the shutdown)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def settle() -> None:
            if not done.done():
                done.set_result(None)

        def shut() -> None:
            try:
                self.provider.shutdown()
            finally:
                loop.call_soon_threadsafe(settle)

        # A daemon thread: one still waiting on a dead collector does not hold the exit.
        threading.Thread(target=shut, name="vdm-trace-shutdown", daemon=True).start()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done, CLOSE_WAIT)


class AttemptTrace:
    """One upstream attempt's span."""

    __slots__ = ("_ended", "span", "traceparent")

    def __init__(self, span: Span) -> None:
        self.span = span
        self._ended = False
        context = span.get_span_context()
        self.traceparent = (
            f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
        )

    def answered(self, outcome: Outcome) -> None:
        if outcome.first_byte is not None:
            self.span.add_event("vdm.first_byte", timestamp=_wall_ns(outcome.first_byte))

    def failed(self, exc: BaseException) -> None:
        kind = error_type(exc)
        self.span.set_attribute("error.type", kind)
        if isinstance(exc, GatewayError):
            self.span.set_attribute("http.response.status_code", exc.status)
            self.span.set_status(Status(StatusCode.ERROR, exc.message))
        else:
            self.span.set_status(Status(StatusCode.ERROR, kind))
        self.end()

    def end(self, at: float | None = None) -> None:
        if not self._ended:
            self._ended = True
            self.span.end(_wall_ns(at) if at is not None else None)


class RequestTrace:
    """One request's span, and its attempts'."""

    __slots__ = (
        "_answering",
        "_ended",
        "_route",
        "_tracer",
        "attempts",
        "fallbacks",
        "record_content",
        "retries",
        "span",
    )

    def __init__(self, tracer: trace.Tracer, span: Span, record_content: bool) -> None:
        self._tracer = tracer
        self.span = span
        self.record_content = record_content
        self._route: tuple[str, str] | None = None
        self._answering: AttemptTrace | None = None
        self._ended = False
        self.attempts = self.retries = self.fallbacks = 0

    def routed(self, model: str, parsed: Mapping[str, Any]) -> None:
        """The model the client asked for (and, when content is recorded, its messages)."""
        self.span.update_name(f"chat {model}")
        attributes: dict[str, Any] = {
            "gen_ai.request.model": model,
            "vdm.stream": bool(parsed.get("stream")),
        }
        if self.record_content:
            messages = parsed.get("messages", parsed.get("input"))
            if messages is not None:
                attributes["gen_ai.input.messages"] = _encode(messages).decode()
        self.span.set_attributes(attributes)

    def attempt(self, provider: str, model: str) -> AttemptTrace:
        """Open the span of the next upstream attempt (a retry when the route
        is the last one's, a fallback when it is another)."""
        route = (provider, model)
        retry = route == self._route
        if retry:
            self.retries += 1
        elif self._route is not None:
            self.fallbacks += 1
        self._route = route
        self.attempts += 1
        span = self._tracer.start_span(
            f"chat {model}",
            context=trace.set_span_in_context(self.span),
            kind=SpanKind.CLIENT,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": provider,
                "gen_ai.request.model": model,
                "vdm.attempt": self.attempts,
                "vdm.route": f"{provider}:{model}",
                "vdm.retry": retry,
            },
        )
        attempt = self._answering = AttemptTrace(span)
        return attempt

    def answer_body(self, body: bytes) -> None:
        """A whole answer's body (recorded only when content is)."""
        if self.record_content and body:
            self.span.set_attribute("gen_ai.output.messages", body.decode(errors="replace"))

    def finish(
        self, outcome: Outcome | None, status: int, upstream_end: float | None, cache_hit: bool
    ) -> None:
        """The answer's last byte is out (or the client left)."""
        if self._ended:
            return
        self._ended = True
        span = self.span
        attributes = self._counts(cache_hit)
        attributes["http.response.status_code"] = status
        if outcome is not None:
            _outcome_attributes(attributes, outcome)
            if outcome.first_byte is not None:
                span.add_event("vdm.first_byte", timestamp=_wall_ns(outcome.first_byte))
            if outcome.error is not None:
                attributes["error.type"] = "stream"
                span.set_status(Status(StatusCode.ERROR, "the stream broke off"))
        span.set_attributes(attributes)  # (one call: the SDK takes its lock once)
        if self._answering is not None:
            self._answering.end(upstream_end)
        span.end()

    def fail(self, exc: BaseException) -> None:
        """The request ended in an error, before any answer."""
        if self._ended:
            return
        self._ended = True
        span = self.span
        attributes = self._counts(False)
        kind = attributes["error.type"] = error_type(exc)
        message = kind
        if isinstance(exc, GatewayError):
            attributes["http.response.status_code"] = exc.status
            message = exc.message
        span.set_attributes(attributes)
        span.set_status(Status(StatusCode.ERROR, message))
        if self._answering is not None:
            self._answering.end()
        span.end()

    def _counts(self, cache_hit: bool) -> dict[str, Any]:
        counts: dict[str, Any] = {
            "vdm.attempts": self.attempts,
            "vdm.retries": self.retries,
            "vdm.fallbacks": self.fallbacks,
        }
        if cache_hit:
            counts["vdm.cache.hit"] = True
        return counts


def _outcome_attributes(attributes: dict[str, Any], outcome: Outcome) -> None:
    """Who answered, and what it used."""
    attributes["gen_ai.provider.name"] = outcome.provider
    attributes["gen_ai.response.model"] = outcome.model
    attributes["vdm.route"] = f"{outcome.provider}:{outcome.model}"
    if outcome.stop_reason is not None:
        attributes["gen_ai.response.finish_reasons"] = (outcome.stop_reason,)
    if outcome.cost is not None:  # (priced by the account before the span ends)
        attributes["vdm.cost_usd"] = outcome.cost
    usage = outcome.usage
    if usage is not None:
        attributes["gen_ai.usage.input_tokens"] = usage.input_tokens
        attributes["gen_ai.usage.output_tokens"] = usage.output_tokens
        if usage.cache_read_input_tokens is not None:
            attributes["gen_ai.usage.cache_read.input_tokens"] = usage.cache_read_input_tokens
        if usage.cache_creation_input_tokens is not None:
            attributes["gen_ai.usage.cache_creation.input_tokens"] = (
                usage.cache_creation_input_tokens
            )
