"""The doors: every client protocol the gateway speaks, one declaration each.

:data:`DOORS` is the registry; everything else here is derived from it: the
routes (:func:`match`), the cache's doors by path (:data:`CACHE_PATHS`) and
the headers a client may present its key in (:data:`KEY_HEADERS`).  Adding a
door is one module (a :class:`~vdm.doors.door.WireDoor` or
:class:`~vdm.doors.door.Door` named ``DOOR``) and one line in :data:`DOORS`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType

from vdm.cache.keys import DoorKey
from vdm.doors import anthropic, chat, grpc, responses
from vdm.doors.door import Decoded, Door, Relay, Rendering, Upstream, WireDoor, path_pattern

DOORS: tuple[Door, ...] = (
    anthropic.DOOR,
    chat.DOOR,
    responses.DOOR,
    grpc.DOOR,
)

ANTHROPIC: WireDoor = anthropic.DOOR  # the default error shape (vdm.server.routes)
CHAT: WireDoor = chat.DOOR  # the OpenAI API's error shape (the passthrough paths)
GRPC: Door = grpc.DOOR

WIRE: tuple[WireDoor, ...] = tuple(d for d in DOORS if isinstance(d, WireDoor))
BY_NAME: Mapping[str, Door] = MappingProxyType({d.name: d for d in DOORS})


def _routes(doors: tuple[WireDoor, ...]) -> tuple[dict[str, WireDoor], list[Route]]:
    exact: dict[str, WireDoor] = {}
    patterns: list[Route] = []
    for door in doors:
        for path in door.paths:
            pattern = path_pattern(path)
            if pattern is None:
                exact[path] = door
            else:
                patterns.append((pattern, door))
    return exact, patterns


Route = tuple[re.Pattern[str], WireDoor]
_EXACT, _PATTERNS = _routes(WIRE)
_NO_PARAMS: Mapping[str, str] = MappingProxyType({})


def match(path: str) -> tuple[WireDoor, Mapping[str, str]] | None:
    """The wire door serving ``path`` and its path parameters (exact paths
    in one dict lookup; Starlette-style patterns after them)."""
    door = _EXACT.get(path)
    if door is not None:
        return door, _NO_PARAMS
    for pattern, candidate in _PATTERNS:
        found = pattern.match(path)
        if found is not None:
            return candidate, found.groupdict()
    return None


# The cache's doors by path, for purges named by URL (exact paths only).
CACHE_PATHS: Mapping[str, DoorKey] = MappingProxyType(
    {path: d.cache for d in WIRE for path in d.paths if path_pattern(path) is None}
)
# Where a client may present a key besides Authorization: Bearer (any door's header).
KEY_HEADERS: tuple[str, ...] = tuple(dict.fromkeys(d.key_header for d in DOORS if d.key_header))

__all__ = [
    "ANTHROPIC",
    "BY_NAME",
    "CACHE_PATHS",
    "CHAT",
    "DOORS",
    "GRPC",
    "KEY_HEADERS",
    "WIRE",
    "Decoded",
    "Door",
    "Relay",
    "Rendering",
    "Upstream",
    "WireDoor",
    "match",
]
