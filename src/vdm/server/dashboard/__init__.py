"""``/dashboard/``: one live page for operators, and its JSON snapshot.

The page (``index.html``, ``dashboard.js``, ``dashboard.css`` beside this
module, shipped as package data: no CDN, no build step) polls
``/dashboard/api/snapshot`` once a second.  Polling rather than SSE: ``fetch``
can send the ``Authorization`` header (``EventSource`` cannot), and an idle
tab costs nothing between polls.

The snapshot is built only when asked, from what the gateway already keeps:
:class:`vdm.metrics.Metrics` (counters and its ring of recent requests), the
key cooldowns (keys by hash only, :func:`vdm.config.key_id`) and, with the
control plane on, the audit log's latest events.  Under ``--workers N`` the
counters and the ring are all the workers' (:mod:`vdm.worker_metrics`); the
key states are the answering worker's, unless Redis shares them.

Access: the static files hold no data and are served to anyone; the snapshot
wants ``Authorization: Bearer MANAGEMENT_TOKEN`` when one is set, else the
proxy key when ``PROXY_API_KEY`` is set, else nothing.
"""

from __future__ import annotations

import time
from importlib.resources import files
from typing import TYPE_CHECKING, Any, Protocol

from vdm import __version__
from vdm.config import PASSTHROUGH_KEY, key_id
from vdm.metrics import Metrics, Recent

if TYPE_CHECKING:
    from vdm.config import Settings
    from vdm.pipeline import Gateway
    from vdm.providers.cooldowns import Bench
    from vdm.worker_metrics import Figures, WorkerMetrics


class App(Protocol):
    """What the dashboard reads of the running app (:class:`vdm.server.app.App`)."""

    @property
    def settings(self) -> Settings: ...
    @property
    def gateway(self) -> Gateway | None: ...
    @property
    def metrics(self) -> Metrics: ...
    @property
    def shared_metrics(self) -> WorkerMetrics | None: ...
    @property
    def plane(self) -> Any: ...  # vdm.tenants.service.ControlPlane, when the control plane is on


PREFIX = "/dashboard"
SNAPSHOT = PREFIX + "/api/snapshot"
RECENT_SHOWN = 50  # recent requests in a snapshot (the ring keeps more, for percentiles)
AUDIT_SHOWN = 20
_AUTH_STATUSES = frozenset({401, 403, 404})
# Only the shipped files run: no inline script, nothing from elsewhere.
CSP = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'"

# path -> (file name, content type); read once, on first request.
ASSETS = {
    PREFIX: ("index.html", "text/html; charset=utf-8"),
    PREFIX + "/dashboard.js": ("dashboard.js", "text/javascript; charset=utf-8"),
    PREFIX + "/dashboard.css": ("dashboard.css", "text/css; charset=utf-8"),
}
_cache: dict[str, bytes] = {}


def is_dashboard(path: str) -> bool:
    """``path`` (trailing slash stripped) is the dashboard's."""
    return path == PREFIX or path.startswith(PREFIX + "/")


def asset(path: str) -> tuple[bytes, str] | None:
    """A shipped file's bytes and content type, or None for no such asset."""
    entry = ASSETS.get(path)
    if entry is None:
        return None
    name, content_type = entry
    body = _cache.get(name)
    if body is None:
        body = _cache[name] = files(__name__).joinpath(name).read_bytes()
    return body, content_type


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an ascending list (None when empty)."""
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def _ms(seconds: float | None) -> float | None:
    return round(seconds * 1000, 1) if seconds is not None else None


def _latency(entries: list[Recent]) -> dict[str, float | None]:
    """p50/p95 of total time, upstream time and the gateway's overhead (total -
    upstream) over the ring's entries of one route."""
    total = sorted(e[5] for e in entries)
    upstream = sorted(e[6] for e in entries if e[6] is not None)
    overhead = sorted(max(e[5] - e[6], 0.0) for e in entries if e[6] is not None)
    return {
        "p50_ms": _ms(percentile(total, 0.5)),
        "p95_ms": _ms(percentile(total, 0.95)),
        "upstream_p50_ms": _ms(percentile(upstream, 0.5)),
        "upstream_p95_ms": _ms(percentile(upstream, 0.95)),
        "overhead_p50_ms": _ms(percentile(overhead, 0.5)),
        "overhead_p95_ms": _ms(percentile(overhead, 0.95)),
    }


def figures(app: App) -> Metrics | Figures:
    """This process's metrics, or with ``--workers N`` all the workers'."""
    shared = app.shared_metrics
    return shared.figures() if shared is not None else app.metrics


def routes(app: App, view: Metrics | Figures | None = None) -> list[dict[str, Any]]:
    """Per provider and model (all doors merged): counters since start and
    latency percentiles over the recent ring."""
    view = view if view is not None else figures(app)
    merged: dict[tuple[str, str], dict[str, Any]] = {}
    for (_, provider, model), s in view.routes.items():
        row = merged.setdefault(
            (provider, model),
            {
                "provider": provider or "-",
                "model": model or "-",
                "requests": 0,
                "errors": 0,
                "input_tokens": 0,
                "output_tokens": 0,
                "cached_tokens": 0,
                "cache_hits": 0,
                "spend_usd": 0.0,
            },
        )
        row["requests"] += s.requests
        row["errors"] += sum(s.errors.values())
        row["input_tokens"] += s.input_tokens
        row["output_tokens"] += s.output_tokens
        row["cached_tokens"] += s.cached_tokens
        row["cache_hits"] += s.cache_hits
        row["spend_usd"] += s.spend
    ring: dict[tuple[str, str], list[Recent]] = {}
    for entry in view.recent:
        ring.setdefault((entry[2], entry[3]), []).append(entry)
    out = []
    for key in sorted(merged):
        row = merged[key]
        row["cache_hit_rate"] = (
            round(row["cache_hits"] / row["requests"], 3) if row["requests"] else None
        )
        row.update(_latency(ring.get(key, [])))
        out.append(row)
    return out


def keys(app: App) -> list[dict[str, Any]]:
    """Every configured provider key by its hash: ok, cooling (429) or benched
    (refused: 401/403/404), and for how long; then each live bench of a key for
    one model (a refusal that named it), with its ``model``."""
    gateway = app.gateway
    if gateway is None:
        return []
    cooldowns = gateway.cooldowns
    now = time.time()
    out = []
    providers: dict[str, str] = {}  # key id -> provider
    for provider, settings in app.settings.providers.items():
        for secret in settings.api_keys:
            if secret == PASSTHROUGH_KEY:
                continue
            kid = key_id(provider, secret)
            providers[kid] = provider
            out.append(_key_row(provider, kid, None, cooldowns.get(kid), now))
    for bench in cooldowns.benches():
        owner = providers.get(bench.key)
        if bench.model is not None and owner is not None and bench.until > now:
            out.append(_key_row(owner, bench.key, bench.model, bench, now))
    return out


def _key_row(
    provider: str, kid: str, model: str | None, bench: Bench | None, now: float
) -> dict[str, Any]:
    left = bench.until - now if bench is not None else 0.0
    status = bench.status if bench is not None else None
    state = "ok" if left <= 0 else ("benched" if status in _AUTH_STATUSES else "cooling")
    return {
        "provider": provider,
        "key": kid.partition(":")[2],
        "model": model,
        "state": state,
        "seconds_left": round(max(left, 0.0), 1),
        "last_status": status,
    }


def _recent(view: Metrics | Figures) -> list[dict[str, Any]]:
    ring = view.recent
    shown = [ring[i] for i in range(max(len(ring) - RECENT_SHOWN, 0), len(ring))]
    out = []
    for ts, door, provider, model, status, total, upstream, usage, hit, error, rid in reversed(
        shown
    ):
        out.append(
            {
                "time": time.strftime("%H:%M:%S", time.gmtime(ts))
                + f".{int(ts * 1000) % 1000:03d}",
                "door": door,
                "provider": provider or "-",
                "model": model or "-",
                "status": status,
                "total_ms": _ms(total),
                "upstream_ms": _ms(upstream),
                "input_tokens": usage.input_tokens if usage else None,
                "output_tokens": usage.output_tokens if usage else None,
                "cache_hit": hit,
                "error": error,
                "request_id": rid,
            }
        )
    return out


def _audit(app: App) -> list[dict[str, Any]] | None:
    if app.plane is None:
        return None
    from vdm.tenants.audit import to_json

    events = list(app.plane.audit.recent)[-AUDIT_SHOWN:]
    return [to_json(e) for e in reversed(events)]


def snapshot(app: App) -> dict[str, Any]:
    """Everything the page shows, in one JSON object."""
    view = figures(app)
    rows = routes(app, view)
    totals = {
        name: sum(r[name] for r in rows)
        for name in (
            "requests",
            "errors",
            "input_tokens",
            "output_tokens",
            "cached_tokens",
            "cache_hits",
            "spend_usd",
        )
    }
    return {
        "version": __version__,
        "uptime_seconds": round(time.time() - view.started, 3),
        "in_flight": view.in_flight,
        "open_streams": view.open_streams,
        "totals": totals,
        "routes": rows,
        "keys": keys(app),
        "key_cooldowns": sum(view.cooldowns.values()),
        "recent": _recent(view),
        "audit": _audit(app),
        "spend_today": _today(view),
    }


def _today(view: Metrics | Figures, top: int = 5) -> dict[str, Any]:
    """The spend of the current UTC day (of the priced requests): in all, and
    the top projects and models."""
    today = view.today
    if today.day != int(time.time() // 86400):
        return {"usd": 0.0, "projects": [], "models": []}

    def ranked(table: dict[str, float]) -> list[dict[str, Any]]:
        best = sorted(table.items(), key=lambda kv: -kv[1])[:top]
        return [{"name": name, "usd": round(usd, 6)} for name, usd in best]

    return {
        "usd": round(today.total, 6),
        "projects": ranked(today.projects),
        "models": ranked(today.models),
    }
