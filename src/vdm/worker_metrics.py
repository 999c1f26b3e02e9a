"""``/metrics`` for all the workers of one ``vdm server start --workers N``.

The workers share one listening socket: a scrape reaches whichever worker
accepts it, and each counts only its own requests, so a Prometheus counter
read from them by turns would jump between unrelated values.  In the
directory the workers share (:mod:`vdm.server.workers`) each worker
(:class:`WorkerMetrics`)

* writes the samples of its metrics to ``<pid>.json`` every ``INTERVAL``
  seconds, from one timer, never on a request's path, and once more when it
  stops;
* answers a scrape with its own live samples plus the other workers' files:
  counters and histograms summed over every worker that wrote one, those that
  have exited included (a sum must not go down when a worker is replaced;
  Prometheus's multiprocess mode does the same), gauges (requests in flight,
  open streams, queue depth) over the workers still running.

The dashboard reads the same files (:meth:`WorkerMetrics.figures`): counters
per route summed, the rings of recent requests merged by time.  A ring is a
few hundred KB: a worker writes its own only while a dashboard is open (the
worker answering one touches ``dashboard.watched`` there), and writes nothing
while it has nothing new.

Another worker's figures reach a scrape within ``INTERVAL``; a worker killed
outright loses what it counted since its last write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import msgspec
from prometheus_client import generate_latest
from prometheus_client.core import Metric

from vdm import ir
from vdm.metrics import RECENT_REQUESTS, Metrics, RouteStats, SpendToday

INTERVAL = 1.0
WATCHED = "dashboard.watched"  # touched while a dashboard polls; rings written then
WATCH_TTL = 10.0  # seconds after the last poll

log = logging.getLogger(__name__)


class Family(msgspec.Struct, array_like=True):
    name: str
    type: str
    documentation: str
    samples: list[tuple[str, dict[str, str], float]]


class Route(msgspec.Struct, array_like=True):
    """A route's counters, as the dashboard shows them."""

    door: str
    provider: str
    model: str
    requests: int
    errors: dict[str, int]
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    cache_hits: int
    spend: float = 0.0  # USD


# One entry of Metrics.recent (vdm.metrics.Recent), typed for decoding.
RecentEntry = tuple[
    float, str, str, str, int, float, float | None, ir.Usage | None, bool, str | None, str
]


class Snapshot(msgspec.Struct):
    pid: int
    families: list[Family]
    started: float = 0.0
    in_flight: int = 0
    open_streams: int = 0
    routes: list[Route] = []
    recent: list[RecentEntry] = []
    cooldowns: list[tuple[str, int, int]] = []  # (provider, status, count)
    # The spend of the UTC day ``spend_day`` (vdm.metrics.SpendToday).
    spend_day: int = 0
    spend_today: float = 0.0
    spend_projects: dict[str, float] = {}
    spend_models: dict[str, float] = {}


@dataclass
class Figures:
    """What the dashboard reads of :class:`~vdm.metrics.Metrics`, for all the
    workers together (the same names, so it reads either)."""

    started: float
    in_flight: int
    open_streams: int
    routes: dict[tuple[str, str, str], RouteStats]
    recent: list[RecentEntry]
    cooldowns: dict[tuple[str, int], int]
    today: SpendToday = field(default_factory=SpendToday)


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Snapshot)


def _families(metrics: Metrics) -> list[Family]:
    return [
        Family(m.name, m.type, m.documentation, [(s.name, s.labels, s.value) for s in m.samples])
        for m in metrics.registry.collect()
    ]


def snapshot(metrics: Metrics, *, ring: bool = True) -> Snapshot:
    """What a worker writes: its metric families and the dashboard's figures
    (the ring of recent requests only with ``ring``)."""
    routes = [
        Route(
            door,
            provider,
            model,
            s.requests,
            dict(s.errors),
            s.input_tokens,
            s.output_tokens,
            s.cached_tokens,
            s.cache_hits,
            s.spend,
        )
        for (door, provider, model), s in list(metrics.routes.items())
    ]
    return Snapshot(
        os.getpid(),
        _families(metrics),
        metrics.started,
        metrics.in_flight,
        metrics.open_streams,
        routes,
        list(metrics.recent) if ring else [],
        [(provider, status, n) for (provider, status), n in list(metrics.cooldowns.items())],
        metrics.today.day,
        metrics.today.total,
        dict(metrics.today.projects),
        dict(metrics.today.models),
    )


def figures(own: Metrics, others: Iterable[Snapshot], alive: set[int]) -> Figures:
    """``own`` (live) and ``others`` together, for the dashboard."""
    out = Figures(
        own.started,
        own.in_flight,
        own.open_streams,
        {key: _copy(s) for key, s in own.routes.items()},
        list(own.recent),
        dict(own.cooldowns),
    )
    mine = own.today
    out.today = SpendToday(mine.day)
    out.today.total = mine.total
    out.today.projects, out.today.models = dict(mine.projects), dict(mine.models)
    for snap in others:
        out.started = min(out.started, snap.started or out.started)
        if snap.pid in alive:
            out.in_flight += snap.in_flight
            out.open_streams += snap.open_streams
        for r in snap.routes:
            key = (r.door, r.provider, r.model)
            stats = out.routes.get(key)
            if stats is None:
                stats = out.routes[key] = RouteStats()
            stats.requests += r.requests
            for kind, n in r.errors.items():
                stats.errors[kind] = stats.errors.get(kind, 0) + n
            stats.input_tokens += r.input_tokens
            stats.output_tokens += r.output_tokens
            stats.cached_tokens += r.cached_tokens
            stats.cache_hits += r.cache_hits
            stats.spend += r.spend
        out.recent.extend(snap.recent)
        for provider, status, n in snap.cooldowns:
            out.cooldowns[provider, status] = out.cooldowns.get((provider, status), 0) + n
        _add_today(out.today, snap)
    out.recent.sort(key=lambda entry: entry[0])
    del out.recent[:-RECENT_REQUESTS]
    return out


def _add_today(today: SpendToday, snap: Snapshot) -> None:
    """A worker's spend today added to ``today`` (the same day only)."""
    if snap.spend_day != today.day:
        if snap.spend_day < today.day:
            return
        today.__init__(snap.spend_day)  # type: ignore[misc]
    today.total += snap.spend_today
    for mine, theirs in ((today.projects, snap.spend_projects), (today.models, snap.spend_models)):
        for key, cost in theirs.items():
            mine[key] = mine.get(key, 0.0) + cost


def _copy(stats: RouteStats) -> RouteStats:
    """The counters the dashboard reads (not the histograms), in a new object."""
    out = RouteStats()
    out.requests = stats.requests
    out.errors = dict(stats.errors)
    out.input_tokens = stats.input_tokens
    out.output_tokens = stats.output_tokens
    out.cached_tokens = stats.cached_tokens
    out.cache_hits = stats.cache_hits
    out.spend = stats.spend
    return out


def merge(own: Snapshot, others: Iterable[Snapshot], alive: set[int]) -> list[Metric]:
    """``own`` plus ``others``, sample by sample (see the module's docstring);
    families in the order ``own`` has them, then any only others have."""
    merged: dict[str, tuple[Metric, dict[tuple[str, tuple[tuple[str, str], ...]], float]]] = {}
    for snap in (own, *others):
        running = snap is own or snap.pid in alive
        for family in snap.families:
            if family.type == "gauge" and not running:
                continue
            entry = merged.get(family.name)
            if entry is None:
                entry = merged[family.name] = (
                    Metric(family.name, family.documentation, family.type),
                    {},
                )
            values = entry[1]
            for name, labels, value in family.samples:
                key = (name, tuple(sorted(labels.items())))
                values[key] = values.get(key, 0.0) + value
    out = []
    for metric, values in merged.values():
        for (name, pairs), value in values.items():
            metric.add_sample(name, dict(pairs), value)
        out.append(metric)
    return out


def is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # (someone else's process took the pid)
        return False
    return True


class WorkerMetrics:
    """One worker's side of the shared directory."""

    def __init__(self, metrics: Metrics, directory: Path) -> None:
        self.metrics = metrics
        self.directory = directory
        self.path = directory / f"{os.getpid()}.json"
        self.watched = directory / WATCHED
        self._timer: asyncio.TimerHandle | None = None
        self._written: tuple[object, ...] | None = None  # what the last write saw
        self._touched = 0.0

    def start(self) -> None:
        self.write()
        self._timer = asyncio.get_running_loop().call_later(INTERVAL, self._tick)

    def _tick(self) -> None:
        try:
            if self._state() != self._written:
                self.write()
        except OSError as exc:  # a full disk: the next tick tries again
            log.warning("cannot write this worker's metrics to %s: %s", self.path, exc)
        self._timer = asyncio.get_running_loop().call_later(INTERVAL, self._tick)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        with contextlib.suppress(OSError):
            self.write()

    def _state(self) -> tuple[object, ...]:
        """Changes when what a write would hold does (every finished request
        goes to the ring; a ring is wanted or not; requests begin or end
        waiting for an upstream connection, mid-request)."""
        m = self.metrics
        last = m.recent[-1] if m.recent else None
        waiting = sum(pool.waiting for pool in m.pools.values())
        return (last, len(m.recent), m.in_flight, m.open_streams, waiting, self._dashboard_open())

    def _dashboard_open(self) -> bool:
        try:
            return time.time() - self.watched.stat().st_mtime < WATCH_TTL
        except OSError:
            return False

    def write(self) -> None:
        """Replace this worker's file whole (a reader never sees half of one)."""
        state = self._state()
        data = _encoder.encode(snapshot(self.metrics, ring=bool(state[-1])))
        partial = self.path.with_suffix(".part")
        partial.write_bytes(data)
        os.replace(partial, self.path)
        self._written = state

    def others(self) -> list[Snapshot]:
        out = []
        for path in self.directory.glob("*.json"):
            if path == self.path:
                continue
            try:
                out.append(_decoder.decode(path.read_bytes()))
            except (OSError, msgspec.DecodeError) as exc:
                log.warning("skipping the worker metrics in %s: %s", path, exc)
        return out

    def exposition(self) -> bytes:
        others = self.others()
        alive = {s.pid for s in others if is_running(s.pid)}
        own = Snapshot(os.getpid(), _families(self.metrics))
        return generate_latest(_Collected(merge(own, others, alive)))  # type: ignore[arg-type]

    def figures(self) -> Figures:
        now = time.time()
        if now - self._touched >= INTERVAL:  # the other workers write their rings now
            with contextlib.suppress(OSError):
                self.watched.touch()
                self._touched = now
        others = self.others()
        return figures(self.metrics, others, {s.pid for s in others if is_running(s.pid)})


class _Collected:
    """What ``generate_latest`` needs of a registry: ``collect()``."""

    def __init__(self, metrics: list[Metric]) -> None:
        self.metrics = metrics

    def collect(self) -> list[Metric]:
        return self.metrics
