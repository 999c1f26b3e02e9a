"""The response cache: complete answers served again, per tenant, opt-in.

The pipeline asks :meth:`ResponseCache.plan` only when a request carries
``Cache-Control`` or the cache has per-model TTLs (one check otherwise).  A
plan names the entry (:mod:`vdm.cache.keys`); :meth:`lookup` replays a
stored answer — the exact bytes the door sent the first time, a stream as a
stream of the same protocol — and :meth:`recorded` stores a new one once it
is known to be whole: status 200, a stop reason, no error, and (streams)
relayed to its last byte.  An aborted, truncated or failed answer is never
stored.  Passthrough and converted answers are stored alike, as bytes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from vdm.cache import keys
from vdm.cache.keys import Ask, DoorKey
from vdm.cache.settings import CacheSettings
from vdm.cache.store import MemoryStore, RedisStore, Store
from vdm.outcome import Outcome, Reply

if TYPE_CHECKING:
    from vdm.routing import Route

log = logging.getLogger("vdm.cache")

HEADER = "x-vdm-cache"
_MAX_ENTRY = 32 * 1024 * 1024  # an answer larger than this is not stored


class Entry(msgspec.Struct, array_like=True):
    created: float  # epoch seconds (a client's max-age is checked against it)
    stream: bool
    content_type: str
    body: bytes
    stop_reason: str | None


_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(Entry).decode


@dataclass(frozen=True, slots=True)
class Plan:
    key: str
    ask: Ask
    provider: str
    model: str


def _whole(outcome: Outcome | None) -> bool:
    return outcome is not None and outcome.error is None and outcome.stop_reason is not None


async def _replay(body: bytes) -> AsyncIterator[bytes]:
    yield body


class ResponseCache:
    def __init__(
        self, settings: CacheSettings, store: Store, resolve: Callable[[str], Route]
    ) -> None:
        self.models = dict(settings.models)
        self.shared = settings.shared
        self.max_ttl = settings.max_ttl
        self.store = store
        self.resolve = resolve  # the router's (a configuration reload points it at the new one)
        self._max_entry = min(_MAX_ENTRY, settings.max_bytes)

    @classmethod
    def build(
        cls,
        settings: CacheSettings,
        redis_url: str | None,
        resolve: Callable[[str], Route],
        namespace: str = "vdm",
    ) -> ResponseCache:
        store: Store
        if settings.backend == "redis" and redis_url:
            store = RedisStore(redis_url, namespace)
        else:
            store = MemoryStore(settings.max_bytes)
        return cls(settings, store, resolve)

    async def close(self) -> None:
        await self.store.close()

    # ------------------------------------------------------------ the request path

    def plan(
        self,
        door: DoorKey,
        parsed: Mapping[str, Any],
        headers: Mapping[str, str],
        route: Route,
        project_id: str | None,
        client_key: str | None,
    ) -> Plan | None:
        """The entry this request reads and writes, or None when it uses no cache."""
        ask = keys.cache_control(
            headers.get("cache-control"),
            self.models.get(f"{route.provider}:{route.model}"),
            self.max_ttl,
        )
        if ask is None or (ask.max_age == 0 and ask.ttl is None):
            return None
        tenant = keys.tenant(project_id, client_key, self.shared)
        key = keys.key(
            tenant, door.door, route.provider, route.model, keys.digest(door, parsed, headers)
        )
        return Plan(key, ask, route.provider, route.model)

    async def lookup(self, plan: Plan) -> Reply | None:
        """The stored answer, replayed, if there is one fresh enough for the request."""
        if plan.ask.max_age == 0:
            return None
        data = await self.store.get(plan.key)
        if data is None:
            return None
        try:
            entry = _decode(data)
        except msgspec.MsgspecError:
            log.warning("cache: unreadable entry dropped")
            return None
        if plan.ask.max_age is not None and time.time() - entry.created > plan.ask.max_age:
            return None
        headers = {
            "content-type": entry.content_type,
            HEADER: "hit",
            "x-vdm-provider": plan.provider,
            "x-vdm-model": plan.model,
        }
        outcome = Outcome(  # (cost: nothing was spent upstream on a hit)
            provider=plan.provider, model=plan.model, stop_reason=entry.stop_reason, cost=0.0
        )
        if entry.stream:
            headers["cache-control"] = "no-cache"
            return Reply(200, headers, stream=_replay(entry.body), outcome=outcome)
        return Reply(200, headers, body=entry.body, outcome=outcome)

    async def recorded(self, plan: Plan, work: Awaitable[Reply]) -> Reply:
        """``work``'s reply, marked a miss; stored once it turns out whole."""
        reply = await work
        reply.headers[HEADER] = "miss"
        if plan.ask.ttl is None or reply.status != 200:
            return reply
        if reply.stream is None:
            if _whole(reply.outcome) and len(reply.body) <= self._max_entry:
                await self._put(plan, reply, False, reply.body)
        else:
            reply.stream = self._tee(plan, reply, reply.stream)
        return reply

    async def _tee(
        self, plan: Plan, reply: Reply, stream: AsyncIterator[bytes]
    ) -> AsyncIterator[bytes]:
        """Relay ``stream`` and keep a copy; store it only if it ran to its end."""
        parts: list[bytes] | None = []
        size = 0
        finished = False
        try:
            async for chunk in stream:
                if parts is not None:
                    size += len(chunk)
                    if size > self._max_entry:
                        parts = None
                    else:
                        parts.append(chunk)
                yield chunk
            finished = True
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
        if finished and parts is not None and _whole(reply.outcome):
            await self._put(plan, reply, True, b"".join(parts))

    async def _put(self, plan: Plan, reply: Reply, stream: bool, body: bytes) -> None:
        assert plan.ask.ttl is not None and reply.outcome is not None
        entry = Entry(
            time.time(),
            stream,
            reply.headers.get("content-type", "application/json"),
            body,
            reply.outcome.stop_reason,
        )
        await self.store.put(plan.key, _encode(entry), plan.ask.ttl)

    # ------------------------------------------------------------ management

    async def purge(
        self,
        doors: Mapping[str, DoorKey],
        *,
        url: str,
        prefix: str | None,
        model: str | None,
        project: str | None,
        body: Mapping[str, Any] | None,
        headers: Mapping[str, str],
    ) -> bool | int:
        """Exact (``url`` + the request ``body``: True if it was cached) or every
        entry of the ``doors`` (by path) under ``prefix``, narrowed to a ``model`` (routed as a
        request would be) and a ``project``.  Raises ValueError on a bad request."""
        tenant = None
        if project is not None:
            tenant = keys.SHARED if self.shared else keys.tenant(project, None, False)
        if prefix is None:
            door = doors.get(url)
            if door is None:
                return False  # nothing is cached under any other path
            if body is None or not isinstance(body.get("model"), str):
                raise ValueError("an exact purge needs the request's body (with its model)")
            route = self.resolve(body["model"])
            lowered = {k.lower(): v for k, v in headers.items()}
            pattern = keys.pattern(
                tenant, door.door, route.provider, route.model, keys.digest(door, body, lowered)
            )
            return await self.store.purge(pattern) > 0
        provider = upstream = None
        if model is not None:
            route = self.resolve(model)
            provider, upstream = route.provider, route.model
        deleted = 0
        for path, door in doors.items():
            if path.startswith(prefix):
                deleted += await self.store.purge(
                    keys.pattern(tenant, door.door, provider, upstream, None)
                )
        return deleted


__all__ = ["HEADER", "Plan", "ResponseCache"]
