"""Key cooldowns: which API keys are benched, until when, and how firmly.

A :class:`Bench` is about one key (``model`` None) or one key for one model
(a refusal that named the model).  The key pool (:mod:`vdm.providers.keys`)
decides what a refusal costs; this module only keeps the record.  Keys are
known here by :func:`vdm.config.key_id` (a hash), never by their value.

The hot path only reads in-memory dicts (:meth:`MemoryCooldowns.get`).

* :class:`MemoryCooldowns` — one process.
* :class:`RedisCooldowns` — every gateway instance using the same Redis: a
  bench is written as ``<ns>:cooldown:{key_id}`` (``REDIS_NAMESPACE``), or
  ``<ns>:cooldown:{key_id}/{model}`` for a pair, expiring with the bench, so
  an instance that starts later loads the live ones.

Every bench is a ``key.cooldown`` event on the bus (:mod:`vdm.events`), and so
is the success that clears one; each instance applies the others'
(:meth:`MemoryCooldowns.follow`), so one instance's 429 benches the key for
all.  If Redis is unreachable the local view keeps working and the failure is
logged once per outage.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Protocol

import msgspec

from vdm.events import KEY_COOLDOWN
from vdm.redis_link import RedisLink

if TYPE_CHECKING:
    from vdm.events import Bus, Event

log = logging.getLogger("vdm.keys")

# Pairs (key, model) kept per key at most: the models come from clients, and a
# hostile one could name a new model on every request.
MAX_PAIRS_PER_KEY = 64
# A model name longer than this is never benched by name (nor stored in Redis).
MAX_MODEL_LENGTH = 200


class Bench(msgspec.Struct):
    """Key ``key`` (for ``model`` only, when set) is benched until ``until``
    (``time.time()``) after HTTP ``status``.

    ``hard``: the upstream's own ``retry-after`` is in force, so the key is not
    used before ``until``; otherwise the bench only puts the key after the
    healthy ones.  ``strikes``: consecutive 429s without a ``retry-after``
    (the backoff's exponent); a success clears the bench and them.
    """

    key: str
    until: float
    status: int
    model: str | None = None
    hard: bool = False
    strikes: int = 0


_encode = msgspec.json.Encoder().encode
_decode_stored = msgspec.json.Decoder(Bench | float).decode


class Cooldowns(Protocol):
    def get(self, key_id: str, model: str | None = None) -> Bench | None:
        """The bench ruling ``key_id`` for ``model`` (the key's own or the pair's,
        whichever ends later), expired or not; None if there is none."""
        ...

    def until(self, key_id: str) -> float:
        """Wall-clock time until which the key itself is benched; 0 if not."""
        ...

    def bench(self, bench: Bench) -> None: ...

    def clear(self, key_id: str, model: str | None = None) -> None:
        """A success: forget the key's own bench and its pair with ``model``."""
        ...

    def benches(self) -> Iterator[Bench]: ...

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class MemoryCooldowns:
    def __init__(self) -> None:
        self._keys: dict[str, Bench] = {}
        self._pairs: dict[str, dict[str, Bench]] = {}
        # Told of each bench made here (metrics); not of those learnt from others.
        self.on_bench: Callable[[str, int], None] | None = None
        self.bus: Bus | None = None

    def follow(self, bus: Bus) -> None:
        """Publish this instance's benches on ``bus`` and apply the other instances'."""
        self.bus = bus
        bus.subscribe("cooldowns", [KEY_COOLDOWN], self._learn, scope="instance", others_only=True)

    async def _learn(self, events: list[Event]) -> None:
        for event in events:
            try:
                bench = msgspec.convert(event.data, Bench)
            except (msgspec.ValidationError, TypeError):
                log.warning("ignoring a malformed key.cooldown event from %s", event.source)
                continue
            if event.data.get("clear"):
                self._forget(bench.key, bench.model)
            else:
                self._apply(bench)

    # ------------------------------------------------------------ reading

    def get(self, key_id: str, model: str | None = None) -> Bench | None:
        own = self._keys.get(key_id)
        if model is not None and self._pairs:
            pairs = self._pairs.get(key_id)
            if pairs:
                pair = pairs.get(model)
                if pair is not None and (own is None or pair.until > own.until):
                    return pair
        return own

    def until(self, key_id: str) -> float:
        own = self._keys.get(key_id)
        return own.until if own is not None else 0.0

    def benches(self) -> Iterator[Bench]:
        """Every bench known here (the dashboard)."""
        yield from self._keys.values()
        for pairs in self._pairs.values():
            yield from pairs.values()

    # ------------------------------------------------------------ writing

    def _apply(self, bench: Bench) -> None:
        """Keep ``bench`` unless a longer one is already known (benches made on
        several instances at once end at the latest)."""
        if bench.model is None:
            known = self._keys.get(bench.key)
            if known is None or bench.until >= known.until:
                self._keys[bench.key] = bench
            return
        pairs = self._pairs.setdefault(bench.key, {})
        known = pairs.get(bench.model)
        if known is not None and bench.until < known.until:
            return
        if known is None and len(pairs) >= MAX_PAIRS_PER_KEY:
            _make_room(pairs)
        pairs[bench.model] = bench

    def _forget(self, key_id: str, model: str | None) -> bool:
        found = self._keys.pop(key_id, None) is not None
        if model is not None and self._pairs:
            pairs = self._pairs.get(key_id)
            if pairs and pairs.pop(model, None) is not None:
                found = True
                if not pairs:
                    del self._pairs[key_id]
        return found

    def bench(self, bench: Bench) -> None:
        self._apply(bench)
        seconds = bench.until - time.time()
        scope = f" for model {bench.model!r}" if bench.model is not None else ""
        log.warning(
            "key %s benched%s for %.0f s after HTTP %d", bench.key, scope, seconds, bench.status
        )
        if self.on_bench is not None:
            self.on_bench(bench.key, bench.status)
        if self.bus is not None:
            self.bus.publish(KEY_COOLDOWN, msgspec.to_builtins(bench))

    def clear(self, key_id: str, model: str | None = None) -> None:
        if not (self._keys or self._pairs) or not self._forget(key_id, model):
            return
        log.info("key %s is answering again%s", key_id, f" for model {model!r}" if model else "")
        if self.bus is not None:
            # ("until" and "status" for instances of the previous release, which
            # read them and apply the longest bench: a no-op.)
            self.bus.publish(
                KEY_COOLDOWN,
                {"key": key_id, "model": model, "clear": True, "until": 0.0, "status": 0},
            )
        self._cleared(key_id, model)

    def _cleared(self, key_id: str, model: str | None) -> None:
        """(A shared store forgets it too.)"""

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None


def _make_room(pairs: dict[str, Bench]) -> None:
    """Drop the ended benches of a full pair table, or else the one ending first."""
    now = time.time()
    ended = [model for model, bench in pairs.items() if bench.until <= now]
    for model in ended:
        del pairs[model]
    if not ended:
        del pairs[min(pairs, key=lambda m: pairs[m].until)]


class RedisCooldowns(MemoryCooldowns):
    def __init__(self, url: str, namespace: str = "vdm") -> None:
        super().__init__()
        self._prefix = f"{namespace}:cooldown:"
        self._link = RedisLink(url, "key cooldowns", "using this instance's view")

    def _name(self, key_id: str, model: str | None) -> str:
        return self._prefix + key_id + ("/" + model if model is not None else "")

    async def start(self) -> None:
        """Load the cooldowns other instances set before this one started."""
        redis = self._link.client
        try:
            async for name in redis.scan_iter(match=self._prefix + "*", count=500):
                value = await redis.get(name)
                if value is None:
                    continue
                self._load(name.decode()[len(self._prefix) :], value)
        except Exception as exc:  # Redis down at start: run on the local view
            self._link.trouble(exc)

    def _load(self, name: str, value: bytes) -> None:
        try:
            stored = _decode_stored(value)
        except (msgspec.DecodeError, msgspec.ValidationError):
            log.warning("ignoring a malformed key cooldown in redis: %s", name)
            return
        if isinstance(stored, float):  # the previous release's form: the key's end alone
            stored = Bench(name, stored, 0)
        self._apply(stored)

    def bench(self, bench: Bench) -> None:
        super().bench(bench)
        self._link.background(self._keep(bench))

    async def _keep(self, bench: Bench) -> None:
        try:
            ttl_ms = max(int((bench.until - time.time()) * 1000), 1)
            await self._link.client.set(
                self._name(bench.key, bench.model), _encode(bench), px=ttl_ms
            )
            self._link.ok()
        except Exception as exc:
            self._link.trouble(exc)

    def _cleared(self, key_id: str, model: str | None) -> None:
        names = [self._name(key_id, None)]
        if model is not None:
            names.append(self._name(key_id, model))
        self._link.background(self._drop(names))

    async def _drop(self, names: list[str]) -> None:
        try:
            await self._link.client.delete(*names)
            self._link.ok()
        except Exception as exc:
            self._link.trouble(exc)

    async def close(self) -> None:
        await self._link.close()
