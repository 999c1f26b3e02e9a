"""An OTLP/HTTP trace receiver on loopback: what a collector would have been sent.

It accepts ``POST /v1/traces`` (``application/x-protobuf``, gzip or not),
decodes the ``ExportTraceServiceRequest`` with ``opentelemetry-proto`` and keeps
every span as a :class:`Span`; a test waits on :meth:`Receiver.wait`, woken by
each export (no polling, no fixed sleep).
"""

from __future__ import annotations

import gzip
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as PbSpan

from tests.support.waiting import BOUND

KINDS = {PbSpan.SPAN_KIND_SERVER: "server", PbSpan.SPAN_KIND_CLIENT: "client"}


@dataclass
class Span:
    name: str
    kind: str
    trace_id: str  # hex
    span_id: str
    parent_id: str  # "" for a root
    attributes: dict[str, Any]
    events: dict[str, int]  # name -> epoch ns
    error: bool  # status ERROR
    start: int
    end: int
    resource: dict[str, Any]


def _value(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which == "array_value":
        return tuple(_value(v) for v in value.array_value.values)
    return getattr(value, which) if which else None


def _attributes(pairs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in pairs}


def decode(body: bytes) -> list[Span]:
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    spans = []
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for s in scope_spans.spans:
                spans.append(
                    Span(
                        name=s.name,
                        kind=KINDS.get(s.kind, str(s.kind)),
                        trace_id=s.trace_id.hex(),
                        span_id=s.span_id.hex(),
                        parent_id=s.parent_span_id.hex(),
                        attributes=_attributes(s.attributes),
                        events={e.name: e.time_unix_nano for e in s.events},
                        error=s.status.code == s.status.STATUS_CODE_ERROR,
                        start=s.start_time_unix_nano,
                        end=s.end_time_unix_nano,
                        resource=resource,
                    )
                )
    return spans


class Receiver:
    """The spans received so far, and a condition set by every export."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.paths: list[str] = []
        self.changed = threading.Condition()
        self.url = ""

    def add(self, path: str, spans: list[Span]) -> None:
        with self.changed:
            self.paths.append(path)
            self.spans.extend(spans)
            self.changed.notify_all()

    def wait(self, predicate: Callable[[list[Span]], bool], timeout: float = BOUND) -> list[Span]:
        """The spans once ``predicate`` holds for them (its last view after ``timeout``)."""
        with self.changed:
            self.changed.wait_for(lambda: predicate(self.spans), timeout)
            return list(self.spans)

    def trace(self, trace_id: str, count: int, timeout: float = BOUND) -> list[Span]:
        """The spans of ``trace_id``, once there are ``count`` of them."""
        spans = self.wait(lambda s: sum(x.trace_id == trace_id for x in s) >= count, timeout)
        return [s for s in spans if s.trace_id == trace_id]

    def requests(self, door: str, count: int, timeout: float = BOUND) -> list[Span]:
        """The request spans of ``door``, once there are ``count``."""

        def of(spans: list[Span]) -> list[Span]:
            return [s for s in spans if s.kind == "server" and s.attributes["vdm.door"] == door]

        return of(self.wait(lambda s: len(of(s)) >= count, timeout))

    def children(self, parent: Span) -> list[Span]:
        with self.changed:
            return sorted(
                (s for s in self.spans if s.parent_id == parent.span_id),
                key=lambda s: s.attributes.get("vdm.attempt", 0),
            )


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            if self.headers.get("content-encoding") == "gzip":
                body = gzip.decompress(body)
            if self.path != "/v1/traces":
                self.send_response(404)
                self.end_headers()
                return
            receiver.add(self.path, decode(body))
            answer = ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def otlp_receiver() -> Iterator[Receiver]:
    """A receiver listening on a free loopback port (``receiver.url``) until the block ends."""
    receiver = Receiver()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(receiver))
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


def traceparent(trace_id: str, span_id: str) -> str:
    return f"00-{trace_id}-{span_id}-01"
