"""When tracing is on, what it costs off, and how a dead collector's complaints are held back."""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Sequence

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from vdm import tracing
from vdm.tracing import export, spans
from vdm.tracing.spans import key_hash


@pytest.mark.parametrize(
    ("environ", "on"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "  "}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "TRUE"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "false"}, True),
        ({"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://c:4318"}, False),
    ],
)
def test_traces_are_exported_only_to_an_endpoint_set_and_not_disabled(
    environ: dict[str, str], on: bool
) -> None:
    assert tracing.enabled(environ) is on
    assert (tracing.build(environ=environ) is not None) is on


def test_the_protocol_is_http_protobuf_unless_asked_and_another_is_refused() -> None:
    assert export.protocol({}) == "http/protobuf"
    assert export.protocol({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}) == "grpc"
    assert (
        export.protocol(
            {
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
            }
        )
        == "http/protobuf"
    )
    with pytest.raises(ValueError, match="OTEL_EXPORTER_OTLP_TRACES_PROTOCOL='http/json'"):
        export.protocol({"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"})


def test_the_service_is_vdm_unless_the_operator_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    assert export.resource().attributes["service.name"] == "vdm"
    monkeypatch.setenv("OTEL_SERVICE_NAME", "gateway-eu")
    assert export.resource().attributes["service.name"] == "gateway-eu"
    monkeypatch.delenv("OTEL_SERVICE_NAME")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "service.name=from-attrs,team=ml")
    assert export.resource().attributes["service.name"] == "from-attrs"


def test_the_key_hash_is_a_prefix_of_a_hash_never_the_key() -> None:
    a = key_hash({"authorization": "Bearer sk-secret-1"})
    assert a is not None and len(a) == 16 and "secret" not in a
    assert key_hash({"x-api-key": "sk-secret-1"}) == a  # the same key, whichever header
    assert key_hash({"x-api-key": "sk-secret-2"}) != a
    assert key_hash({"content-type": "application/json"}) is None


def test_a_dead_collectors_complaints_pass_once_a_minute_with_a_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1000.0]
    monkeypatch.setattr(export.time, "monotonic", lambda: now[0])
    logger = logging.getLogger("tests.tracing.throttled")
    logger.propagate = False
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    logger.addHandler(Keep())
    export.quieten((logger.name,))
    export.quieten((logger.name,))  # (once per logger, however many providers)
    assert sum(isinstance(f, export.Throttle) for f in logger.filters) == 1
    for _ in range(500):
        logger.warning("Queue full, dropping %s.", "Span")
    assert seen == ["Queue full, dropping Span."]
    now[0] += export.THROTTLE_SECONDS
    logger.warning("Queue full, dropping %s.", "Span")
    assert (
        seen[1] == "Queue full, dropping Span. (499 similar lines of the trace exporter held back)"
    )


def test_off_the_gateway_imports_nothing_of_opentelemetry() -> None:
    code = (
        "import sys, asyncio\n"
        "from vdm.validate import load_settings\n"
        "from vdm.pipeline import Gateway\n"
        "import vdm.server.app, vdm.grpc.servicer\n"
        "async def main():\n"
        "    gateway = Gateway.from_settings(load_settings({}))\n"
        "    assert gateway.tracing is None\n"
        "    await gateway.close()\n"
        "asyncio.run(main())\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


class _Collector(SpanExporter):
    """An exporter that answers as the test says."""

    def __init__(self) -> None:
        self.up = True

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS if self.up else SpanExportResult.FAILURE


def test_while_the_collector_does_not_answer_only_a_probe_is_traced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1000.0]
    monkeypatch.setattr(export.time, "monotonic", lambda: now[0])
    monkeypatch.setattr(spans.time, "monotonic", lambda: now[0])
    collector = _Collector()
    watched = export.Watched(collector, "http://collector")
    tracer = spans.Tracer(TracerProvider(), exporter=watched)

    def traced() -> bool:
        trace = tracer.request("anthropic", {}, None)
        if trace is None:
            return False
        trace.finish(None, 200, None, False)
        return True

    assert [traced() for _ in range(3)] == [True, True, True]
    collector.up = False
    watched.export([])
    assert [traced() for _ in range(3)] == [True, False, False]  # the probe, then none
    now[0] += export.PROBE_SECONDS
    assert [traced() for _ in range(2)] == [True, False]
    collector.up = True
    watched.export([])  # the probe's spans reached it
    assert [traced() for _ in range(3)] == [True, True, True]
    # an export under way for longer than a collector takes: not reaching it
    watched._since = now[0]
    now[0] += export.STUCK_SECONDS + 0.1
    assert watched.reaching is False
