"""Request metrics: Prometheus text at ``/metrics``, JSON totals at
``/metrics/running-totals``.

Recording is plain attribute arithmetic on small per-route objects (one dict
lookup per finished request, keyed by ``(door, provider, model)``); nothing
is formatted, locked or allocated per request beyond the first request of a
route.  The event loop is single-threaded, so no lock is needed.  Prometheus
metric families are built only when somebody scrapes (:meth:`Metrics.collect`
is a ``prometheus_client`` collector on a registry of this app's own, so two
apps in one process never share state).

Latencies, in seconds:

* ``total`` — from the request's arrival to the last byte sent;
* ``ttft`` — from the arrival to the upstream's first event / first body chunk;
* ``upstream`` — from the start of the attempt that answered to the upstream's
  last byte; ``total - upstream`` is what the gateway added (body read,
  routing, conversion, retries).
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

if TYPE_CHECKING:
    from vdm import ir

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_P95_WINDOW = 1000  # running totals' p95 is over each route's last this many requests
_ROUTE_LABELS = ("door", "provider", "model")
RECENT_REQUESTS = 1000  # the dashboard's ring of finished requests (and its percentiles)


# (time.time(), door, provider, model, status, total s, upstream s, usage, cache hit,
#  error kind, request id): one finished request in Metrics.recent.
Recent = tuple[
    float, str, str, str, int, float, "float | None", "ir.Usage | None", bool, "str | None", str
]


class Histogram:
    """Counts per bucket (not cumulative; the last one is +Inf) and a sum."""

    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(BUCKETS, seconds)] += 1
        self.sum += seconds

    def cumulative(self) -> list[tuple[str, float]]:
        out, running = [], 0
        for bound, count in zip((*map(str, BUCKETS), "+Inf"), self.counts, strict=True):
            running += count
            out.append((bound, running))
        return out


class RouteStats:
    """Everything recorded for one ``(door, provider, model)``."""

    __slots__ = (
        "cache_hits",
        "cached_tokens",
        "errors",
        "input_tokens",
        "output_tokens",
        "recent",
        "requests",
        "statuses",
        "total",
        "ttft",
        "upstream",
    )

    def __init__(self) -> None:
        self.requests = 0
        self.statuses: dict[int, int] = {}
        self.errors: dict[str, int] = {}
        self.input_tokens = 0
        self.output_tokens = 0
        self.cached_tokens = 0
        self.cache_hits = 0  # answered from the response cache
        self.total = Histogram()
        self.ttft = Histogram()
        self.upstream = Histogram()
        self.recent: deque[float] = deque(maxlen=_P95_WINDOW)


class Metrics:
    """The app's counters; one instance per :class:`vdm.server.app.App`."""

    def __init__(self) -> None:
        self.started = time.time()
        self.routes: dict[tuple[str, str, str], RouteStats] = {}
        self.retries: dict[str, int] = {}
        self.failovers: dict[tuple[str, str], int] = {}
        self.cooldowns: dict[tuple[str, int], int] = {}
        self.in_flight = 0
        self.open_streams = 0
        # The last requests, newest last, for the dashboard: one tuple append per
        # request; formatted only when the dashboard asks (vdm.server.dashboard).
        self.recent: deque[Recent] = deque(maxlen=RECENT_REQUESTS)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)  # type: ignore[arg-type]

    # ------------------------------------------------------------ recording

    def _route(self, door: str, provider: str, model: str) -> RouteStats:
        key = (door, provider, model)
        stats = self.routes.get(key)
        if stats is None:
            stats = self.routes[key] = RouteStats()
        return stats

    def finished(
        self,
        door: str,
        provider: str,
        model: str,
        status: int,
        total: float,
        ttft: float | None,
        upstream: float | None,
        usage: ir.Usage | None,
        error: str | None,
        *,
        cache_hit: bool = False,
        request_id: str = "",
    ) -> None:
        """A request that reached a provider ended (streamed ones when the stream ends)."""
        stats = self._route(door, provider, model)
        if cache_hit:
            stats.cache_hits += 1
        stats.requests += 1
        stats.statuses[status] = stats.statuses.get(status, 0) + 1
        stats.total.observe(total)
        stats.recent.append(total)
        if ttft is not None:
            stats.ttft.observe(ttft)
        if upstream is not None:
            stats.upstream.observe(upstream)
        if usage is not None:
            stats.input_tokens += usage.input_tokens or 0
            stats.output_tokens += usage.output_tokens or 0
            stats.cached_tokens += usage.cache_read_input_tokens or 0
        if error is not None:
            stats.errors[error] = stats.errors.get(error, 0) + 1
        self.recent.append(
            (
                time.time(),
                door,
                provider,
                model,
                status,
                total,
                upstream,
                usage,
                cache_hit,
                error,
                request_id,
            )
        )

    def failed(
        self, door: str, provider: str, status: int, kind: str, total: float, request_id: str = ""
    ) -> None:
        """A request that ended with an error status (``provider`` may be empty:
        it failed before routing)."""
        self.recent.append(
            (time.time(), door, provider, "", status, total, None, None, False, kind, request_id)
        )
        stats = self._route(door, provider, "")
        stats.requests += 1
        stats.statuses[status] = stats.statuses.get(status, 0) + 1
        stats.errors[kind] = stats.errors.get(kind, 0) + 1
        stats.total.observe(total)
        stats.recent.append(total)

    def retry(self, provider: str) -> None:
        self.retries[provider] = self.retries.get(provider, 0) + 1

    def failover(self, source: str, target: str) -> None:
        key = (source, target)
        self.failovers[key] = self.failovers.get(key, 0) + 1

    def cooldown(self, key_id: str, status: int) -> None:
        """A provider key was benched (``key_id`` is ``provider:hash``)."""
        key = (key_id.partition(":")[0], status)
        self.cooldowns[key] = self.cooldowns.get(key, 0) + 1

    # ------------------------------------------------------------ exposition

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def collect(self) -> Iterator[Metric]:
        """Build the metric families (only when scraped)."""
        requests = CounterMetricFamily(
            "vdm_requests",
            "Requests by door, provider, model and HTTP status",
            labels=(*_ROUTE_LABELS, "status"),
        )
        errors = CounterMetricFamily(
            "vdm_errors", "Failed requests by error type", labels=(*_ROUTE_LABELS, "type")
        )
        tokens = CounterMetricFamily(
            "vdm_tokens",
            "Tokens: input (not read from a cache), output, cached (cache reads)",
            labels=(*_ROUTE_LABELS, "type"),
        )
        hists = {
            name: HistogramMetricFamily(f"vdm_{name}_seconds", doc, labels=_ROUTE_LABELS)
            for name, doc in (
                ("request_duration", "Total time from arrival to the last byte sent"),
                ("time_to_first_token", "Time from arrival to the upstream's first event"),
                (
                    "upstream_duration",
                    "Time from the answering attempt's start to the upstream's last byte",
                ),
            )
        }
        for (door, provider, model), s in self.routes.items():
            labels = [door, provider, model]
            for status, count in s.statuses.items():
                requests.add_metric([*labels, str(status)], count)
            for kind, count in s.errors.items():
                errors.add_metric([*labels, kind], count)
            if model:  # routed: tokens may have been used
                tokens.add_metric([*labels, "input"], s.input_tokens)
                tokens.add_metric([*labels, "output"], s.output_tokens)
                tokens.add_metric([*labels, "cached"], s.cached_tokens)
            for name, hist in (
                ("request_duration", s.total),
                ("time_to_first_token", s.ttft),
                ("upstream_duration", s.upstream),
            ):
                if any(hist.counts):
                    hists[name].add_metric(labels, hist.cumulative(), hist.sum)
        retries = CounterMetricFamily(
            "vdm_retries", "Attempts retried on the same provider", labels=("provider",)
        )
        for provider, count in self.retries.items():
            retries.add_metric([provider], count)
        failovers = CounterMetricFamily(
            "vdm_failovers", "Fallbacks to another route", labels=("from_provider", "to_provider")
        )
        for (source, target), count in self.failovers.items():
            failovers.add_metric([source, target], count)
        cooldowns = CounterMetricFamily(
            "vdm_key_cooldowns",
            "Provider keys benched after an upstream refusal",
            labels=("provider", "status"),
        )
        for (provider, status), count in self.cooldowns.items():
            cooldowns.add_metric([provider, str(status)], count)
        yield requests
        yield errors
        yield tokens
        yield from hists.values()
        yield retries
        yield failovers
        yield cooldowns
        yield GaugeMetricFamily(
            "vdm_in_flight_requests", "Requests being served", value=self.in_flight
        )
        yield GaugeMetricFamily(
            "vdm_open_streams", "Streamed responses being sent", value=self.open_streams
        )

    def running_totals(
        self, provider: str | None = None, model: str | None = None, door: str | None = None
    ) -> dict[str, Any]:
        """Totals per provider and model since start (all doors unless ``door``)."""
        merged: dict[tuple[str, str], list[RouteStats]] = {}
        for (d, p, m), stats in self.routes.items():
            if (door and d != door) or (provider and p != provider) or (model and m != model):
                continue
            merged.setdefault((p, m), []).append(stats)
        by_provider: dict[str, list[RouteStats]] = {}
        for (p, _), group in merged.items():
            by_provider.setdefault(p, []).extend(group)
        providers = {
            p or "-": {
                **_totals(by_provider[p]),
                "models": {
                    m or "-": _totals(group) for (q, m), group in sorted(merged.items()) if q == p
                },
            }
            for p in sorted(by_provider)
        }
        grand = _totals([s for group in merged.values() for s in group])
        return {
            "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
            "uptime_seconds": round(time.time() - self.started, 1),
            "filters": {
                k: v for k, v in (("provider", provider), ("model", model), ("door", door)) if v
            },
            "totals": grand,
            "providers": providers,
        }


def _totals(group: list[RouteStats]) -> dict[str, Any]:
    requests = sum(s.requests for s in group)
    seconds = sum(s.total.sum for s in group)
    recent = sorted(x for s in group for x in s.recent)
    p95 = recent[min(len(recent) - 1, int(0.95 * len(recent)))] if recent else None
    return {
        "requests": requests,
        "errors": sum(sum(s.errors.values()) for s in group),
        "input_tokens": sum(s.input_tokens for s in group),
        "output_tokens": sum(s.output_tokens for s in group),
        "cached_tokens": sum(s.cached_tokens for s in group),
        "avg_latency_ms": round(seconds / requests * 1000, 1) if requests else None,
        "p95_latency_ms": round(p95 * 1000, 1) if p95 is not None else None,
    }
