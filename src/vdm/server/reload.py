"""Reloading the configuration of a running gateway (SIGHUP, ``vdm server reload``).

The files (user and local ``vdm.toml``, ``./.env``) are read again and
validated as at start-up; a configuration with any problem changes nothing
(the caller logs one line naming it).  A good one is applied to *new*
requests: a new :class:`~vdm.pipeline.Gateway` (providers, keys, aliases,
default provider, fallbacks, middleware, retries and timeouts, the response
cache's rules) replaces the old one, which serves the requests it already
holds (streams included) to their end and is closed after the last one.
What did not change is carried over rather than rebuilt: a provider whose
settings are the same keeps its pooled connections, the middleware chain its
state, the response cache its entries; the key cooldowns are always shared.

Some settings are read once, when the process starts (:data:`RESTART_ONLY`:
sockets, connections, the control plane, the log format): a reload keeps
their running values and says, in one line, which of them changed and need
a restart.  So do ``--workers`` and the command-line options of
``vdm server start``, and the process's environment variables: a reload reads
files, the environment stays what it was at the start.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from typing import Any

from vdm.cache import ResponseCache
from vdm.config import Settings
from vdm.pipeline import Gateway
from vdm.providers import build

log = logging.getLogger("vdm.reload")

# Section -> fields read once at start-up (None: every field of the section).
RESTART_ONLY: dict[str, tuple[str, ...] | None] = {
    "server": (
        "host",
        "port",
        "log_format",
        "proxy_api_key",
        "redis_url",
        "redis_namespace",
        "events_queue_size",
        "events_stream_max_length",
        "shutdown_timeout",
    ),
    "grpc": None,  # its port, TLS, JWT secret and limits are set when it starts
    "tenants": None,  # the database, the management token, the control plane
}


def _fields(section: str, value: Any) -> tuple[str, ...]:
    names = RESTART_ONLY[section]
    return names if names is not None else tuple(f.name for f in dataclasses.fields(value))


def restart_only_changes(running: Settings, loaded: Settings) -> list[str]:
    """The restart-only settings whose value differs (their names, never their values)."""
    changed = []
    for section in RESTART_ONLY:
        old, new = getattr(running, section), getattr(loaded, section)
        for name in _fields(section, old):
            if getattr(old, name) != getattr(new, name):
                changed.append(f"{section}.{name.replace('_', '-')}")
    return changed


def effective(running: Settings, loaded: Settings) -> Settings:
    """``loaded``, with the restart-only settings kept at their running values."""
    kept: dict[str, Any] = {}
    for section in RESTART_ONLY:
        old, new = getattr(running, section), getattr(loaded, section)
        names = RESTART_ONLY[section]
        kept[section] = (
            old
            if names is None
            else dataclasses.replace(new, **{n: getattr(old, n) for n in names})
        )
    return dataclasses.replace(loaded, **kept)


def successor(old: Gateway, settings: Settings) -> Gateway:
    """A gateway for ``settings`` sharing what did not change with ``old``
    (call in the event loop; nothing of ``old`` is closed here)."""
    same_server = old.settings.server == settings.server
    providers = {}
    try:
        for name, provider in settings.providers.items():
            if same_server and old.settings.providers.get(name) == provider:
                providers[name] = old.providers[name]
            else:
                providers[name] = build(provider, settings.server, old.cooldowns, old.metrics.pool)
    except BaseException:
        for name, built in providers.items():
            if built is not old.providers.get(name):
                _close_later(built.close())
        raise
    cache = None
    if old.settings.cache == settings.cache:
        cache = old.cache  # its entries stay; its routing follows the new router below
    tracer = old.tracing.configured(settings.server.trace_content) if old.tracing else None
    gateway = Gateway(settings, providers, old.cooldowns, old.metrics, cache, old.tenants, tracer)
    if cache is None:
        gateway.cache = ResponseCache.build(
            settings.cache,
            settings.server.redis_url,
            gateway.router.resolve,
            settings.server.redis_namespace,
        )
    else:
        cache.resolve = gateway.router.resolve
    if old.settings.middleware == settings.middleware:
        gateway.chain = old.chain  # (a middleware's state, e.g. cached signatures, stays)
    return gateway


def _close_later(closing: Any) -> None:
    asyncio.get_running_loop().create_task(closing)


async def retire(old: Gateway, new: Gateway) -> None:
    """Close what ``old`` does not share with ``new``, once its last request ended."""
    await old.leases.idle()
    await old.catalog.close()
    kept = {id(p) for p in new.providers.values()}
    for provider in old.providers.values():
        if id(provider) not in kept:
            with contextlib.suppress(Exception):
                await provider.close()
    if old.cache is not new.cache:
        with contextlib.suppress(Exception):
            await old.cache.close()


def describe(old: Settings, new: Settings) -> str:
    """What a reload changed, for its one log line (names only, no secrets)."""
    parts = [f"default provider {new.default_provider}"]
    added = [n for n in new.providers if n not in old.providers]
    removed = [n for n in old.providers if n not in new.providers]
    changed = [
        n for n in new.providers if n in old.providers and old.providers[n] != new.providers[n]
    ]
    for label, names in (("added", added), ("removed", removed), ("changed", changed)):
        if names:
            parts.append(f"{label} {', '.join(names)}")
    parts.append(f"providers {', '.join(new.providers)}")
    if old.aliases != new.aliases or old.fallback_aliases != new.fallback_aliases:
        parts.append("aliases changed")
    return "; ".join(parts)
