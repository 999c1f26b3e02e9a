"""Settings of the response cache (``[cache]`` in TOML, ``CACHE_*`` in the environment).

Read once at start-up with the rest (:func:`vdm.config.load_settings`); every
problem names the environment variable or the TOML key.  The cache is off
until a request asks for it (``Cache-Control: max-age=N``) or ``models``
gives its routed model a TTL.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

KEYS = {"backend", "models", "shared", "max-bytes", "max-ttl"}
BACKENDS = ("memory", "redis")


@dataclass(frozen=True)
class CacheSettings:
    backend: str = "memory"  # "redis" needs REDIS_URL (the default when it is set)
    models: Mapping[str, int] = field(default_factory=dict)  # "provider:model" -> TTL seconds
    shared: bool = False  # True: tenants share entries (same request, same answer)
    max_bytes: int = 64 * 1024 * 1024  # memory backend bound (LRU beyond it)
    max_ttl: int = 86400  # no entry lives longer, whatever a client's max-age says


def _positive_int(value: Any, source: str, problems: list[str]) -> int | None:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        problems.append(f"{source}: must be a positive whole number (got {value!r})")
        return None
    return value


def _models(value: Any, source: str, problems: list[str]) -> dict[str, int]:
    """A table ``{"provider:model" = ttl}`` (TOML) or ``provider:model=ttl,...`` (env)."""
    if isinstance(value, str):
        table: dict[str, Any] = {}
        for item in filter(None, (part.strip() for part in value.split(","))):
            name, sep, ttl = item.rpartition("=")
            if not sep or not name:
                problems.append(f"{source}: {item!r} is not provider:model=SECONDS")
                continue
            table[name.strip()] = ttl.strip()
        value = table
    if not isinstance(value, dict):
        problems.append(f'{source}: must be a table of "provider:model" = seconds')
        return {}
    out: dict[str, int] = {}
    for name, ttl in value.items():
        if ":" not in name:
            problems.append(f"{source}: {name!r} must be provider:model (the routed model)")
            continue
        seconds = _positive_int(ttl, f"{source} {name!r}", problems)
        if seconds is not None:
            out[name] = seconds
    return out


def cache_settings(
    table: Any,
    env: Mapping[str, str],
    sources: dict[str, str],
    problems: list[str],
    redis_url: str | None,
) -> CacheSettings:
    if not isinstance(table, dict):
        problems.append("cache: must be a table")
        table = {}

    def pick(key: str, var: str) -> tuple[Any, str]:
        if env.get(var):
            sources[f"cache.{key}"] = f"env {var}"
            return env[var], f"environment variable {var}"
        return table.get(key), f"{sources.get(f'cache.{key}', 'config')}: cache.{key}"

    defaults = CacheSettings()
    backend, backend_src = pick("backend", "CACHE_BACKEND")
    if backend is None:
        backend = "redis" if redis_url else "memory"
    elif backend not in BACKENDS:
        problems.append(f"{backend_src}: must be one of {', '.join(BACKENDS)} (got {backend!r})")
        backend = "memory"
    elif backend == "redis" and not redis_url:
        problems.append(f"{backend_src}: the redis backend needs REDIS_URL")
    models, models_src = pick("models", "CACHE_MODELS")
    shared, shared_src = pick("shared", "CACHE_SHARED")
    if isinstance(shared, str):
        shared = {
            "true": True,
            "1": True,
            "yes": True,
            "false": False,
            "0": False,
            "no": False,
        }.get(shared.strip().lower(), shared)
    if shared is not None and not isinstance(shared, bool):
        problems.append(f"{shared_src}: must be true or false (got {shared!r})")
        shared = False
    max_bytes, bytes_src = pick("max-bytes", "CACHE_MAX_BYTES")
    max_ttl, ttl_src = pick("max-ttl", "CACHE_MAX_TTL")
    return CacheSettings(
        backend=backend,
        models=_models(models, models_src, problems) if models is not None else {},
        shared=bool(shared),
        max_bytes=(_positive_int(max_bytes, bytes_src, problems) or defaults.max_bytes)
        if max_bytes is not None
        else defaults.max_bytes,
        max_ttl=(_positive_int(max_ttl, ttl_src, problems) or defaults.max_ttl)
        if max_ttl is not None
        else defaults.max_ttl,
    )
