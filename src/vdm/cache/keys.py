"""What makes two requests the same answer: the cache key, and what a request asks.

A key is ``vdm:cache:{tenant}:{door}:{provider}:{model}:{digest}``: who asks
(the project, the hash of the client's key, or ``anonymous``; ``shared``
when tenants share), which door (its stream grammar), the route after
aliases, and a SHA-256 over an explicit list of the request's fields — the
ones that change the answer, never ``metadata``/``user`` and the like (each
door declares its list: :class:`DoorKey`).  Each
part is percent-quoted, so a purge can match parts with a glob (model names
may hold ``:``) in memory and in Redis alike.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import msgspec

from vdm.errors import InvalidRequest

PREFIX = "cache:"  # (Redis keys get the REDIS_NAMESPACE in front: vdm:cache:…)
SHARED = "shared"
ANONYMOUS = "anonymous"


@dataclass(frozen=True, slots=True)
class DoorKey:
    """What of a door's requests changes the answer: its ``fields`` (and
    ``headers``), declared with the door (:mod:`vdm.doors`).  ``model`` is
    the name the client sent: it is echoed in the answer's bytes."""

    door: str
    fields: tuple[str, ...]
    headers: tuple[str, ...] = ()


_encode = msgspec.json.Encoder(order="sorted").encode


def tenant(project_id: str | None, client_key: str | None, shared: bool) -> str:
    """Whose entries these are: tenants never see each other's unless ``shared``."""
    if shared:
        return SHARED
    if project_id is not None:
        return "project-" + project_id
    if client_key:
        return "key-" + hashlib.sha256(client_key.encode()).hexdigest()[:16]
    return ANONYMOUS


def digest(door: DoorKey, parsed: Mapping[str, Any], headers: Mapping[str, str]) -> str:
    picked = [[name, parsed[name]] for name in door.fields if name in parsed]
    sent = [[name, headers[name]] for name in door.headers if name in headers]
    return hashlib.sha256(_encode([door.door, picked, sent])).hexdigest()


def key(tenant_id: str, door: str, provider: str, model: str, request_digest: str) -> str:
    return PREFIX + ":".join(
        quote(part, safe="") for part in (tenant_id, door, provider, model, request_digest)
    )


def pattern(
    tenant_id: str | None,
    door: str | None,
    provider: str | None,
    model: str | None,
    request_digest: str | None,
) -> str:
    """A glob over keys; ``None`` matches any value of that part."""
    return PREFIX + ":".join(
        "*" if part is None else quote(part, safe="")
        for part in (tenant_id, door, provider, model, request_digest)
    )


@dataclass(frozen=True, slots=True)
class Ask:
    """What a request's ``Cache-Control`` asks: read entries up to ``max_age``
    seconds old (None: any unexpired one; 0: none), store for ``ttl`` (None: don't)."""

    max_age: int | None
    ttl: int | None


def cache_control(value: str | None, model_ttl: int | None, max_ttl: int) -> Ask | None:
    """The request's wish, or None when it asks nothing and its model has no TTL.

    ``max-age=N`` (N > 0): answers up to N seconds old are served, a new one is
    stored for N seconds; ``max-age=0`` / ``no-cache``: a fresh answer, stored
    (when a TTL applies); ``no-store``: the cache is not used at all."""
    if value is None:
        return Ask(None, min(model_ttl, max_ttl)) if model_ttl else None
    max_age: int | None = None
    fresh = False
    for directive in value.split(","):
        name, _, arg = directive.strip().partition("=")
        name = name.strip().lower()
        if name == "no-store":
            return None
        if name == "no-cache":
            fresh = True
        elif name == "max-age":
            arg = arg.strip().strip('"')
            if not arg.isdigit() or len(arg) > 12:
                raise InvalidRequest(
                    f"Cache-Control: max-age must be a whole number of seconds (got {arg!r})"
                )
            max_age = int(arg)
    if max_age is None and not model_ttl:
        return None  # a directive that is not about vdm's cache
    ttl = max_age or model_ttl
    return Ask(0 if fresh else max_age, min(ttl, max_ttl) if ttl else None)
