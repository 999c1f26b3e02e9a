"""The SDK's side: a tracer provider whose spans leave by OTLP, in batches.

Spans are handed to a :class:`BatchSpanProcessor`: ending a span appends it
to a queue, and a thread of the SDK's exports the batches (every
``OTEL_BSP_SCHEDULE_DELAY`` ms, 5000 by default), so no request ever waits on
the collector; when the queue is full (``OTEL_BSP_MAX_QUEUE_SIZE``), spans are
dropped rather than held.  The exporter speaks ``http/protobuf`` (the
default of ``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`` / ``OTEL_EXPORTER_OTLP_PROTOCOL``)
or, with ``opentelemetry-exporter-otlp-proto-grpc`` installed, ``grpc``.

A collector that does not answer must cost neither the log nor the requests.
The SDK logs every failed batch and, once its queue is full, every dropped
span: :class:`Throttle` lets one of its lines through a minute and counts the
rest.  And a span recorded while the exports fail is dropped all the same, so
:class:`Watched` tells the tracer whether the last export reached the
collector: while it did not, requests are not traced (their client's
``traceparent`` still goes upstream as it came), but for one probe every
:data:`PROBE_SECONDS`, whose spans find out when the collector is back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

SERVICE_NAME = "vdm"
PROTOCOLS = ("http/protobuf", "grpc")
# The SDK's loggers that speak of each export and each dropped span.
NOISY_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
    "opentelemetry.exporter.otlp.common.http",
    "opentelemetry.sdk._shared_internal",
    "opentelemetry.sdk.trace.export",
)
THROTTLE_SECONDS = 60.0
PROBE_SECONDS = 5.0  # while the collector does not answer: one request traced this often
STUCK_SECONDS = 1.0  # an export under way this long: the collector does not answer

log = logging.getLogger("vdm.tracing")


class Throttle(logging.Filter):
    """One record a minute per logger; the line let through says how many
    were held back since the last."""

    def __init__(self, seconds: float = THROTTLE_SECONDS) -> None:
        super().__init__("vdm.tracing")
        self.seconds = seconds
        self._next = 0.0
        self._held = 0

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        if now < self._next:
            self._held += 1
            return False
        self._next = now + self.seconds
        if self._held:
            record.msg = (
                f"{record.msg} ({self._held} similar lines of the trace exporter held back)"
            )
            self._held = 0
        return True


class Watched(SpanExporter):
    """An exporter, and whether it reaches the collector (:attr:`reaching`):
    its last export did, and the one under way (if any) has not been at it
    for :data:`STUCK_SECONDS` (the SDK retries a refused connection for up to
    ``OTEL_EXPORTER_OTLP_TIMEOUT``, 10 s: spans queued meanwhile would only be
    dropped).  Written by the SDK's export thread, read by the tracer: plain
    values, no lock."""

    def __init__(self, inner: SpanExporter, endpoint: str = "") -> None:
        self.inner = inner
        self.endpoint = endpoint
        self._failed = False
        self._since: float | None = None  # when the export under way began

    @property
    def reaching(self) -> bool:
        since = self._since
        if since is not None and time.monotonic() - since > STUCK_SECONDS:
            return False
        return not self._failed

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self._since = time.monotonic()
        try:
            result = self.inner.export(spans)
        finally:
            self._since = None
        failed = result is not SpanExportResult.SUCCESS
        if failed != self._failed:
            if not failed:
                log.warning("traces: the collector at %s answers again", self.endpoint)
            else:
                log.warning(
                    "traces: the collector at %s does not answer; requests are not traced "
                    "until it does (one is, every %g s, to find out)",
                    self.endpoint,
                    PROBE_SECONDS,
                )
            self._failed = failed
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


def quieten(names: tuple[str, ...] = NOISY_LOGGERS) -> None:
    """Throttle the SDK's export loggers (once per logger, whatever the
    number of tracer providers built: a reload builds none anew)."""
    for name in names:
        logger = logging.getLogger(name)
        if not any(isinstance(f, Throttle) for f in logger.filters):
            logger.addFilter(Throttle())


def protocol(environ: Mapping[str, str]) -> str:
    """The OTLP protocol asked for (the traces' own variable first)."""
    for name in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        value = environ.get(name, "").strip().lower()
        if value:
            if value not in PROTOCOLS:
                raise ValueError(
                    f"{name}={value!r}: vdm exports traces over "
                    + " or ".join(repr(p) for p in PROTOCOLS)
                )
            return value
    return "http/protobuf"


def exporter(environ: Mapping[str, str]) -> SpanExporter:
    """The OTLP exporter (it reads its endpoint, headers, timeout,
    compression and certificates from the standard variables itself)."""
    if protocol(environ) == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[import-not-found]
                OTLPSpanExporter as GrpcExporter,
            )
        except ImportError:
            raise ValueError(
                "OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs opentelemetry-exporter-otlp-proto-grpc "
                "installed beside vdm[otel]; or leave it unset for http/protobuf"
            ) from None
        return GrpcExporter()  # type: ignore[no-any-return]
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def resource() -> Resource:
    """``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES`` as the SDK reads
    them; the service is named ``vdm`` when they do not name it."""
    detected = Resource.create()
    name = str(detected.attributes.get("service.name", ""))
    if not name or name.startswith("unknown_service"):
        detected = detected.merge(Resource({"service.name": SERVICE_NAME}))
    return detected


def tracer_provider(environ: Mapping[str, str]) -> tuple[TracerProvider, Watched]:
    """A provider exporting in batches, not the process's global one (vdm
    reads no global state) and not shut down at exit by the SDK: the gateway
    shuts it down when it closes (:meth:`vdm.tracing.spans.Tracer.close`)."""
    provider = TracerProvider(resource=resource(), shutdown_on_exit=False)
    endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT", ""
    )
    watched = Watched(exporter(environ), endpoint.strip())
    provider.add_span_processor(BatchSpanProcessor(watched))
    quieten()
    return provider, watched
