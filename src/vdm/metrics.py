"""Request metrics of this instance: Prometheus text at ``/metrics``.

Each finished request is also published on the event bus
(``request.finished``, a :class:`vdm.totals.Finished`) when
one is attached, for the deployment-wide running totals (:mod:`vdm.totals`).

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

Bounded whatever clients send (docs/security-limits.md): a model is a label
value only when it is configured (an alias's target, a fallback, an Azure
deployment, ``METRICS_MODELS``) or listed by its provider
(:class:`ModelLabels`); any other name is counted as :data:`OTHER`, in the
routes, the dashboard's ring and the running totals alike.  At most
:data:`MAX_ROUTES` ``(door, provider, model)`` routes are kept; later ones are
counted as ``(door, provider, other)``.  The exposition is built off the event
loop (:meth:`Metrics.exposition` reads copies of the tables, so a thread may
run it while requests are counted).
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from vdm.errors import GatewayError
from vdm.events import KINDS, REQUEST_FINISHED
from vdm.totals import MAX_ROUTES, NANO, OTHER, Finished

if TYPE_CHECKING:
    from vdm import ir
    from vdm.config import Settings
    from vdm.events import Bus
    from vdm.routing import Route

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_ROUTE_LABELS = ("door", "provider", "model")
RECENT_REQUESTS = 1000  # the dashboard's ring of finished requests (and its percentiles)
# OTHER: the label of every model not configured or listed; MAX_ROUTES: the
# (door, provider, model) routes kept, about 7 KB of exposition each.


def configured_models(settings: Settings, resolve: Callable[[str], Route]) -> set[tuple[str, str]]:
    """The ``(provider, model)`` pairs the settings name: aliases' targets,
    fallback chains, Azure deployments, the cache's per-model TTLs, the gRPC
    default model and ``METRICS_MODELS``."""
    names = [
        *settings.fallbacks,
        *(a for alternatives in settings.fallbacks.values() for a in alternatives),
        *settings.cache.models,
        *settings.server.metrics_models,
        *([settings.grpc.default_model] if settings.grpc.default_model else []),
    ]
    pairs = set()
    for name in names:
        try:
            route = resolve(name)
        except GatewayError:
            continue
        pairs.add((route.provider, route.model))
    for provider, table in (*settings.aliases.items(), *settings.fallback_aliases.items()):
        pairs.update((provider, model) for model in table.values())
    for provider, p in settings.providers.items():
        pairs.update((provider, model) for model in p.deployments)
    return pairs


def _as_given(provider: str, model: str) -> str:
    return model


class ModelLabels:
    """Which model names are label values: ``configured`` ``(provider, model)``
    pairs, and whatever ``listed(provider, model)`` (the providers' own model
    lists) says; every other name is :data:`OTHER`.  Built by the gateway."""

    __slots__ = ("_configured", "_listed")

    def __init__(
        self,
        configured: Iterable[tuple[str, str]],
        listed: Callable[[str, str], bool] | None = None,
    ) -> None:
        self._configured: dict[str, frozenset[str]] = {}
        for provider, model in configured:
            self._configured[provider] = self._configured.get(provider, frozenset()) | {model}
        self._listed = listed

    def __call__(self, provider: str, model: str) -> str:
        if not model or model in self._configured.get(provider, ()):
            return model
        if self._listed is not None and self._listed(provider, model):
            return model
        return OTHER


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
        out: list[tuple[str, float]] = []
        running = 0
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
        "requests",
        "spend",
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
        self.spend = 0.0  # USD, of the requests that had a price (vdm.pricing)
        self.total = Histogram()
        self.ttft = Histogram()
        self.upstream = Histogram()


class SpendToday:
    """Spend of the current UTC day, in all and per project and per model, for
    the dashboard (reset when the day changes; at most :data:`MAX_ROUTES`
    projects and models each, later ones counted in the total only)."""

    __slots__ = ("day", "models", "projects", "total")

    def __init__(self, day: int = 0) -> None:
        self.day = day
        self.total = 0.0
        self.projects: dict[str, float] = {}
        self.models: dict[str, float] = {}  # "provider:model"

    def add(self, when: float, cost: float, project: str | None, model: str) -> None:
        day = int(when // 86400)
        if day != self.day:
            self.__init__(day)  # type: ignore[misc]
        self.total += cost
        for table, key in ((self.projects, project), (self.models, model)):
            if key is not None and (key in table or len(table) < MAX_ROUTES):
                table[key] = table.get(key, 0.0) + cost


class UpstreamPool:
    """One provider's pool of upstream connections: the requests waiting for a
    free connection now, and how long each that waited did (those that found
    one free are not observed).  Written by its connector
    (:func:`vdm.providers.http.make_session`), only when a request waits."""

    __slots__ = ("waiting", "waits")

    def __init__(self) -> None:
        self.waiting = 0
        self.waits = Histogram()


class Metrics:
    """The app's counters; one instance per :class:`vdm.server.app.App`."""

    def __init__(self) -> None:
        self.started = time.time()
        self.routes: dict[tuple[str, str, str], RouteStats] = {}
        self.retries: dict[str, int] = {}
        self.failovers: dict[tuple[str, str], int] = {}
        self.cooldowns: dict[tuple[str, int], int] = {}
        # Provider -> its connection pool's waits; kept across reloads (and a
        # provider's session rebuilt by one goes on counting in the same).
        self.pools: dict[str, UpstreamPool] = {}
        self.in_flight = 0
        self.open_streams = 0
        # The last requests, newest last, for the dashboard: one tuple append per
        # request; formatted only when the dashboard asks (vdm.server.dashboard).
        self.recent: deque[Recent] = deque(maxlen=RECENT_REQUESTS)
        self.today = SpendToday()  # the dashboard's spend today
        self.bus: Bus | None = None  # vdm.events: told of each finished request
        # The model's label: as given here; the gateway (vdm.pipeline.Gateway) sets
        # its ModelLabels. MAX_ROUTES holds either way.
        self.model_label: Callable[[str, str], str] = _as_given
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)  # type: ignore[arg-type]

    # ------------------------------------------------------------ recording

    def _route(self, door: str, provider: str, model: str) -> RouteStats:
        key = (door, provider, model)
        stats = self.routes.get(key)
        if stats is None:
            if len(self.routes) >= MAX_ROUTES and model:
                return self._route(door, provider, OTHER)  # (door x provider of these at most)
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
        cost: float | None = None,
        project: str | None = None,
    ) -> None:
        """A request that reached a provider ended (streamed ones when the stream ends);
        ``cost``: USD, None when unpriced."""
        model = self.model_label(provider, model)
        stats = self._route(door, provider, model)
        if cache_hit:
            stats.cache_hits += 1
        stats.requests += 1
        stats.statuses[status] = stats.statuses.get(status, 0) + 1
        stats.total.observe(total)
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
        now = time.time()
        if cost is not None:
            stats.spend += cost
            self.today.add(now, cost, project, f"{provider}:{model}")
        if self.bus is not None:
            self.bus.publish(
                REQUEST_FINISHED,
                Finished(
                    door,
                    provider,
                    model,
                    total,
                    error is not None,
                    usage.input_tokens or 0 if usage else 0,
                    usage.output_tokens or 0 if usage else 0,
                    usage.cache_read_input_tokens or 0 if usage else 0,
                    round(cost * NANO) if cost is not None else 0,
                ),
            )
        self.recent.append(
            (
                now,
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
        if self.bus is not None:
            self.bus.publish(REQUEST_FINISHED, Finished(door, provider, "", total, True, 0, 0, 0))

    def retry(self, provider: str) -> None:
        self.retries[provider] = self.retries.get(provider, 0) + 1

    def failover(self, source: str, target: str) -> None:
        key = (source, target)
        self.failovers[key] = self.failovers.get(key, 0) + 1

    def cooldown(self, key_id: str, status: int) -> None:
        """A provider key was benched (``key_id`` is ``provider:hash``)."""
        key = (key_id.partition(":")[0], status)
        self.cooldowns[key] = self.cooldowns.get(key, 0) + 1

    def pool(self, provider: str) -> UpstreamPool:
        """``provider``'s connection-pool counters (made on first use; the
        providers are the configured ones, so the labels stay bounded)."""
        pool = self.pools.get(provider)
        if pool is None:
            pool = self.pools[provider] = UpstreamPool()
        return pool

    # ------------------------------------------------------------ exposition

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def collect(self) -> Iterator[Metric]:
        """Build the metric families (only when scraped)."""
        yield from self._route_metrics()
        yield from self._retry_metrics()
        yield from self._pool_metrics()
        yield GaugeMetricFamily(
            "vdm_in_flight_requests", "Requests being served", value=self.in_flight
        )
        yield GaugeMetricFamily(
            "vdm_open_streams", "Streamed responses being sent", value=self.open_streams
        )
        if self.bus is not None:
            yield from _bus_metrics(self.bus)

    def _route_metrics(self) -> Iterator[Metric]:
        """Per route (door, provider, model): requests by status, errors by
        type, tokens, cache hits and the three latency histograms."""
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
        spend = CounterMetricFamily(
            "vdm_spend_usd",
            "Spend in US dollars of the requests with a known price (vdm.pricing)",
            labels=_ROUTE_LABELS,
        )
        cache_hits = CounterMetricFamily(
            "vdm_cache_hits", "Requests answered from the response cache", labels=_ROUTE_LABELS
        )
        # (Copies, taken whole while the thread holds the GIL: the loop may add
        # a route or a status meanwhile.)
        for (door, provider, model), s in list(self.routes.items()):
            labels = [door, provider, model]
            for status, count in list(s.statuses.items()):
                requests.add_metric([*labels, str(status)], count)
            for kind, count in list(s.errors.items()):
                errors.add_metric([*labels, kind], count)
            if s.cache_hits:
                cache_hits.add_metric(labels, s.cache_hits)
            if model:  # routed: tokens may have been used
                tokens.add_metric([*labels, "input"], s.input_tokens)
                tokens.add_metric([*labels, "output"], s.output_tokens)
                tokens.add_metric([*labels, "cached"], s.cached_tokens)
                spend.add_metric(labels, s.spend)
            for name, hist in (
                ("request_duration", s.total),
                ("time_to_first_token", s.ttft),
                ("upstream_duration", s.upstream),
            ):
                if any(hist.counts):
                    hists[name].add_metric(labels, hist.cumulative(), hist.sum)
        yield requests
        yield errors
        yield tokens
        yield spend
        yield cache_hits
        yield from hists.values()

    def _retry_metrics(self) -> Iterator[Metric]:
        """What went wrong upstream and was worked around: retries, failovers,
        benched keys."""
        retries = CounterMetricFamily(
            "vdm_retries", "Attempts retried on the same provider", labels=("provider",)
        )
        for provider, count in list(self.retries.items()):
            retries.add_metric([provider], count)
        failovers = CounterMetricFamily(
            "vdm_failovers", "Fallbacks to another route", labels=("from_provider", "to_provider")
        )
        for (source, target), count in list(self.failovers.items()):
            failovers.add_metric([source, target], count)
        cooldowns = CounterMetricFamily(
            "vdm_key_cooldowns",
            "Provider keys benched after an upstream refusal",
            labels=("provider", "status"),
        )
        for (provider, status), count in list(self.cooldowns.items()):
            cooldowns.add_metric([provider, str(status)], count)
        yield retries
        yield failovers
        yield cooldowns

    def _pool_metrics(self) -> Iterator[Metric]:
        waiting = GaugeMetricFamily(
            "vdm_upstream_connections_waiting",
            "Requests waiting for a free upstream connection (all the provider's "
            "max-connections are busy)",
            labels=("provider",),
        )
        waits = HistogramMetricFamily(
            "vdm_upstream_connection_wait_seconds",
            "Time a request waited for a free upstream connection (only the requests that waited)",
            labels=("provider",),
        )
        for provider, pool in list(self.pools.items()):
            waiting.add_metric([provider], pool.waiting)
            waits.add_metric([provider], pool.waits.cumulative(), pool.waits.sum)
        yield waiting
        yield waits


def _bus_metrics(bus: Bus) -> Iterator[Metric]:
    published = CounterMetricFamily(
        "vdm_events_published", "Events queued on the event bus", labels=("kind",)
    )
    dropped = CounterMetricFamily(
        "vdm_events_dropped", "Events dropped because the bus queue was full", labels=("kind",)
    )
    for kind in KINDS:
        published.add_metric([kind], bus.published.get(kind, 0))
        dropped.add_metric([kind], bus.dropped[kind])
    failed = CounterMetricFamily(
        "vdm_events_failed", "Events a consumer gave up on after retries", labels=("consumer",)
    )
    for sub in bus.subscriptions:
        failed.add_metric([sub.name], bus.failed[sub.name])
    yield published
    yield dropped
    yield failed
    yield GaugeMetricFamily(
        "vdm_event_queue_depth",
        "Events queued in this process, not yet handed on",
        value=bus.depth(),
    )
