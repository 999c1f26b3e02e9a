"""Settings of the response cache (``[cache]`` in TOML, ``CACHE_*`` in the environment).

Read once at start-up with the rest (:func:`vdm.config.load_settings`); every
problem names the environment variable or the TOML key.  The cache is off
until a request asks for it (``Cache-Control: max-age=N``) or ``models``
gives its routed model a TTL.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar

from vdm.settings.kinds import Choice, Flag, Int, Kind
from vdm.settings.load import read_section
from vdm.settings.spec import rows, setting

BACKENDS = ("memory", "redis")


def _positive_int(value: Any, source: str, problems: list[str]) -> int | None:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        problems.append(f"{source}: must be a positive whole number (got {value!r})")
        return None
    return value


class CacheModels(Kind):
    """A table ``{"provider:model" = ttl}`` (TOML) or ``provider:model=ttl,...`` (env)."""

    label = 'table of "provider:model" = seconds (env: provider:model=SECONDS,...)'

    def env_text(self, value: Any) -> str:
        return ",".join(f"{name}={ttl}" for name, ttl in value.items())

    def show(self, value: Any) -> str:
        return ", ".join(f"{m}={ttl}s" for m, ttl in value.items()) or "-"

    def parse(self, value: Any, where: str, problems: list[str]) -> dict[str, int]:
        if isinstance(value, str):
            table: dict[str, Any] = {}
            for item in filter(None, (part.strip() for part in value.split(","))):
                name, sep, ttl = item.rpartition("=")
                if not sep or not name:
                    problems.append(f"{where}: {item!r} is not provider:model=SECONDS")
                    continue
                table[name.strip()] = ttl.strip()
            value = table
        if not isinstance(value, dict):
            problems.append(f'{where}: must be a table of "provider:model" = seconds')
            return {}
        out: dict[str, int] = {}
        for name, ttl in value.items():
            if ":" not in name:
                problems.append(f"{where}: {name!r} must be provider:model (the routed model)")
                continue
            seconds = _positive_int(ttl, f"{where} {name!r}", problems)
            if seconds is not None:
                out[name] = seconds
        return out


def _backend(values: Mapping[str, Any], context: Mapping[str, Any]) -> str:
    return "redis" if context.get("redis_url") else "memory"


@dataclass(frozen=True)
class CacheSettings:
    """``[cache]``: the response cache."""

    SECTION: ClassVar[str] = "cache"
    ENV_PREFIX: ClassVar[str] = "CACHE_"

    backend: str = setting(
        "memory",
        Choice(BACKENDS, "backend"),
        "Where entries live; redis needs server.redis-url.",
        derive=_backend,
        default_text="redis with server.redis-url, else memory",
        example="redis",
    )
    models: Mapping[str, int] = setting(
        {},
        CacheModels(),
        "A TTL per routed model, cached without the client asking ([Response cache](cache.md)).",
        example={"openai:gpt-4o": 120},
    )
    shared: bool = setting(
        False, Flag(), "Tenants share entries (same request, same answer).", example=True
    )
    max_bytes: int = setting(
        64 * 1024 * 1024, Int(1), "Memory backend bound in bytes (LRU beyond it).", example=1024
    )
    max_ttl: int = setting(
        86400, Int(1), "No entry lives longer, whatever a client's max-age says.", example=600
    )


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
    read = read_section(
        rows(CacheSettings), table, env, sources, problems, {"redis_url": redis_url}
    )
    settings = CacheSettings(**read.values)
    if settings.backend == "redis" and not redis_url:
        problems.append(f"{read.where['backend']}: the redis backend needs REDIS_URL")
        settings = replace(settings, backend="memory")
    return settings
