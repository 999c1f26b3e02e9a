"""OpenTelemetry traces of the requests, exported over OTLP (the ``otel`` extra).

Tracing is on when the standard ``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set (and ``OTEL_SDK_DISABLED`` is
not ``true``); the rest of the standard ``OTEL_*`` variables (protocol,
headers, timeout, service name, resource attributes, the batch processor's
delays and sizes) are the SDK's to read.  Off, nothing of OpenTelemetry is
imported and a request pays one check (:meth:`vdm.pipeline.Gateway.account`).

* this module — whether tracing is on (:func:`enabled`), building it
  (:func:`build`), and :data:`CURRENT`, the request being traced (so the
  pipeline's attempts find their parent without being handed it);
* :mod:`vdm.tracing.spans` — the spans: one per request (GenAI semantic
  conventions plus vdm's own attributes), a child per upstream attempt, the
  W3C ``traceparent`` read from the client and sent upstream;
* :mod:`vdm.tracing.export` — the SDK's tracer provider, its batch span
  processor (a request never waits for an export) and OTLP exporter, and a
  dead collector's cost: its failures logged once a minute at most, and no
  request traced while it does not answer (but a probe every few seconds).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from contextvars import ContextVar
from typing import TYPE_CHECKING

from vdm.extras import MissingExtra, installed

if TYPE_CHECKING:
    from vdm.tracing.spans import RequestTrace, Tracer

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")

# The request this task is serving, when tracing is on (set by the pipeline's
# traced account, read by its attempts).
CURRENT: ContextVar[RequestTrace | None] = ContextVar("vdm_trace", default=None)


def enabled(environ: Mapping[str, str] | None = None) -> bool:
    """Whether traces are to be exported: an OTLP endpoint is set and the
    SDK is not disabled."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    return any(env.get(name, "").strip() for name in ENDPOINT_VARIABLES)


def build(record_content: bool = False, environ: Mapping[str, str] | None = None) -> Tracer | None:
    """The tracer of this process, or None when tracing is off.  Raises
    :class:`~vdm.extras.MissingExtra` when an endpoint is set but the ``otel``
    extra is not installed, and ``ValueError`` for an OTLP protocol it cannot
    speak."""
    if not enabled(environ):
        return None
    if not installed("otel"):
        raise MissingExtra("OTEL_EXPORTER_OTLP_ENDPOINT (OpenTelemetry traces)", "otel")
    from vdm.tracing.export import tracer_provider
    from vdm.tracing.spans import Tracer

    provider, watched = tracer_provider(os.environ if environ is None else environ)
    return Tracer(provider, record_content, watched)
