"""Running totals per door, provider and model — for the whole deployment.

``/metrics/running-totals`` answers from here.  The totals are a consumer of
the ``request.finished`` events (:mod:`vdm.events`), not of this process's
counters: with a Redis bus the consumer is shared, so each request of every
instance is counted once, into Redis (``vdm:totals``), and any instance
reports the same numbers.  Without Redis the same consumer keeps them in
memory, per process (each of ``--workers N`` its own).  (``/metrics`` stays per
instance, its workers together: Prometheus scrapes each one.)

The p95 is over each route's last :data:`P95_WINDOW` requests.

Bounded as ``/metrics`` is: the events carry a model only when it is a label
(:class:`vdm.metrics.ModelLabels`, else :data:`OTHER`), and at most
:data:`MAX_ROUTES` routes are kept in memory; later ones are counted as
``(door, provider, other)``.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from vdm.errors import Unavailable
from vdm.events import REQUEST_FINISHED, Bus, Event
from vdm.redis_link import RedisLink

P95_WINDOW = 1000
OTHER = "other"  # the model label of every name not configured or listed
MAX_ROUTES = 256  # (door, provider, model) routes kept (here and in vdm.metrics)
Key = tuple[str, str, str]  # (door, provider, model)
Stats = tuple[dict[str, int], float, list[float]]  # counters, latency sum, recent latencies
_SEP = "\x1f"  # between door, provider and model in Redis field names
_COUNTERS = (
    "requests",
    "errors",
    "input_tokens",
    "output_tokens",
    "cached_tokens",
    "spend_nusd",
)
NANO = 1_000_000_000  # spend is counted in billionths of a dollar (an integer, for HINCRBY)


class Finished(NamedTuple):
    """The data of a ``request.finished`` event (vdm.metrics publishes one per
    request: a tuple, a JSON array on Redis, rather than a dict)."""

    door: str
    provider: str
    model: str
    seconds: float
    error: bool
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    spend_nusd: int = 0  # USD * NANO, of a priced request


@dataclass
class _Route:
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_COUNTERS, 0))
    seconds: float = 0.0
    recent: list[float] = field(default_factory=list)


def _fold(events: list[Event]) -> dict[Key, _Route]:
    """One batch of events summed per route (one write per route, not per event)."""
    routes: dict[Key, _Route] = {}
    for event in events:
        door, provider, model, seconds, error, tokens_in, tokens_out, cached, *more = event.data
        # (a Finished here; a plain list when it came through Redis, from an older
        # instance without the spend)
        key = (str(door), str(provider), str(model))
        route = routes.get(key)
        if route is None:
            route = routes[key] = _Route()
        counts = route.counts
        counts["requests"] += 1
        counts["errors"] += 1 if error else 0
        counts["input_tokens"] += int(tokens_in)
        counts["output_tokens"] += int(tokens_out)
        counts["cached_tokens"] += int(cached)
        counts["spend_nusd"] += int(more[0]) if more else 0
        route.seconds += float(seconds)
        route.recent.append(float(seconds))
    return routes


class RunningTotals:
    """In memory (one instance); :class:`RedisTotals` shares them."""

    def __init__(self) -> None:
        self.started = time.time()
        self._counts: dict[Key, dict[str, int]] = {}
        self._seconds: dict[Key, float] = {}
        self._recent: dict[Key, deque[float]] = {}

    def follow(self, bus: Bus) -> None:
        bus.subscribe("totals", [REQUEST_FINISHED], self.add, scope="shared")

    async def add(self, events: list[Event]) -> None:
        for key, route in _fold(events).items():
            if key not in self._counts and len(self._counts) >= MAX_ROUTES and key[2]:
                key = (key[0], key[1], OTHER)
            counts = self._counts.setdefault(key, dict.fromkeys(_COUNTERS, 0))
            for name, n in route.counts.items():
                counts[name] += n
            self._seconds[key] = self._seconds.get(key, 0.0) + route.seconds
            self._recent.setdefault(key, deque(maxlen=P95_WINDOW)).extend(route.recent)

    async def _load(self) -> tuple[float, dict[Key, Stats]]:
        return self.started, {
            key: (counts, self._seconds[key], list(self._recent[key]))
            for key, counts in self._counts.items()
        }

    async def close(self) -> None:
        return None

    async def report(
        self, provider: str | None = None, model: str | None = None, door: str | None = None
    ) -> dict[str, Any]:
        """Totals per provider and model (all doors unless ``door``)."""
        started, routes = await self._load()
        merged: dict[tuple[str, str], list[Stats]] = {}
        for (d, p, m), stats in routes.items():
            if (door and d != door) or (provider and p != provider) or (model and m != model):
                continue
            merged.setdefault((p, m), []).append(stats)
        by_provider: dict[str, list[Any]] = {}
        for (p, _), group in merged.items():
            by_provider.setdefault(p, []).extend(group)
        providers = {
            p or "-": {
                **_summary(by_provider[p]),
                "models": {
                    m or "-": _summary(group) for (q, m), group in sorted(merged.items()) if q == p
                },
            }
            for p in sorted(by_provider)
        }
        return {
            "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "uptime_seconds": round(time.time() - started, 1),
            "filters": {
                k: v for k, v in (("provider", provider), ("model", model), ("door", door)) if v
            },
            "totals": _summary([s for group in merged.values() for s in group]),
            "providers": providers,
        }


class RedisTotals(RunningTotals):
    """The deployment's totals in Redis: counters in one hash (``<ns>:totals``), each route's recent
    latencies in a capped list; the first instance to count sets ``since``."""

    def __init__(self, url: str, namespace: str) -> None:
        super().__init__()
        self._hash = f"{namespace}:totals"
        self._since = f"{namespace}:totals:since"
        self._recent_prefix = f"{namespace}:totals:recent:"
        self._link = RedisLink(
            url, "the running totals", "/metrics/running-totals answers 503", socket_timeout=5
        )
        self._redis: Any = self._link.client

    async def _add(self, events: list[Event]) -> None:
        pipe = self._redis.pipeline(transaction=False)
        pipe.set(self._since, repr(min(e.ts for e in events)), nx=True)
        for key, route in _fold(events).items():
            prefix = _SEP.join(key) + _SEP
            for name, n in route.counts.items():
                if n:
                    pipe.hincrby(self._hash, prefix + name, n)
            pipe.hincrbyfloat(self._hash, prefix + "seconds", route.seconds)
            pipe.lpush(self._recent_prefix + _SEP.join(key), *route.recent)
            pipe.ltrim(self._recent_prefix + _SEP.join(key), 0, P95_WINDOW - 1)
        await pipe.execute()

    async def add(self, events: list[Event]) -> None:
        try:
            await self._add(events)
        except Exception as exc:
            self._link.trouble(exc)
            raise  # (the bus tries the batch again)
        self._link.ok()

    async def _load(self) -> tuple[float, dict[Key, Stats]]:
        try:
            loaded = await self._read()
        except Exception as exc:
            self._link.trouble(exc)
            raise Unavailable(
                "the running totals are kept in Redis, which this instance cannot reach now"
            ) from None
        self._link.ok()
        return loaded

    async def _read(self) -> tuple[float, dict[Key, Stats]]:
        raw = await self._redis.hgetall(self._hash)
        since = await self._redis.get(self._since)
        counts: dict[Key, dict[str, int]] = {}
        seconds: dict[Key, float] = {}
        for name, value in raw.items():
            door, provider, model, counter = name.decode().split(_SEP)
            key = (door, provider, model)
            if counter == "seconds":
                seconds[key] = float(value)
            else:
                counts.setdefault(key, dict.fromkeys(_COUNTERS, 0))[counter] = int(value)
        keys = sorted(counts)
        pipe = self._redis.pipeline(transaction=False)
        for key in keys:
            pipe.lrange(self._recent_prefix + _SEP.join(key), 0, -1)
        recents = await pipe.execute() if keys else []
        routes = {
            key: (counts[key], seconds.get(key, 0.0), [float(x) for x in recent])
            for key, recent in zip(keys, recents, strict=True)
        }
        return (float(since) if since else self.started), routes

    async def close(self) -> None:
        await self._link.close()


def build(redis_url: str | None, namespace: str) -> RunningTotals:
    return RedisTotals(redis_url, namespace) if redis_url else RunningTotals()


def _summary(group: list[Stats]) -> dict[str, Any]:
    requests = sum(c["requests"] for c, _, _ in group)
    seconds = sum(s for _, s, _ in group)
    recent = sorted(x for _, _, r in group for x in r)
    p95 = recent[min(len(recent) - 1, int(0.95 * len(recent)))] if recent else None
    return {
        "requests": requests,
        "errors": sum(c["errors"] for c, _, _ in group),
        "input_tokens": sum(c["input_tokens"] for c, _, _ in group),
        "output_tokens": sum(c["output_tokens"] for c, _, _ in group),
        "cached_tokens": sum(c["cached_tokens"] for c, _, _ in group),
        "spend_usd": round(sum(c.get("spend_nusd", 0) for c, _, _ in group) / NANO, 9),
        "avg_latency_ms": round(seconds / requests * 1000, 1) if requests else None,
        "p95_latency_ms": round(p95 * 1000, 1) if p95 is not None else None,
    }
