"""Which key a provider call uses, and what happens when a key is refused.

A provider's keys form a pool used round robin.  A key the upstream refuses
is benched (:class:`~vdm.providers.cooldowns.Bench`) and the same request
moves on to the next key, all before any byte reaches the client:

* 401, or a 403 that names no model: the key, for ``KEY_AUTH_COOLDOWN``;
* a refusal that names the model asked for (403/404 model access, a 429
  whose message names it, an OpenAI ``model_not_found``): only the pair
  (key, model), so the key keeps serving the other models;
* 429 with a ``retry-after``: for that long (a *hard* bench, below);
* 429 without one: 1 s, doubled by each consecutive 429, at most
  ``KEY_RATE_LIMIT_COOLDOWN``.

Every bench is capped by ``KEY_COOLDOWN_MAX``, and one success clears the
bench it ended (and its backoff).

A bench only orders the keys: healthy ones first, round robin.  When every
key is benched the request still goes out, on the key whose bench ends first
(one such try per request), and the client gets that upstream's own answer:
a bad key keeps reaching the client as the upstream's 401, never as a rate
limit.  The one exception is a *hard* bench: while the upstream's own
``retry-after`` holds for every key, the call fails at once with
:class:`~vdm.errors.RateLimited`, whose ``retry-after`` is the first key's
return.  When a request ends on a 429, its ``retry-after`` says when the
first key may be used again (the upstream's own ``retry-after``, or the end
of the bench).

``!PASSTHRU`` means "use the client's own key" (``x-api-key`` or
``Authorization: Bearer``; never the credential that let the client into the
gateway, :mod:`vdm.auth.split`).  A client key is used for that one call only:
never benched, logged or stored.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from vdm.config import PASSTHROUGH_KEY, key_id
from vdm.errors import AuthenticationFailed, RateLimited, UpstreamStatusError
from vdm.providers.cooldowns import MAX_MODEL_LENGTH, Bench, Cooldowns, MemoryCooldowns
from vdm.providers.http import upstream_message

T = TypeVar("T")

# Refusals that are the key's (or the key's for one model)...
_KEY_STATUSES = frozenset({401, 403, 429})
# ... and those that bench the pair (key, model) when they name the model.
_MODEL_STATUSES = frozenset({403, 404, 429})
# The first bench of a 429 without retry-after; doubled per consecutive one.
FIRST_BACKOFF = 1.0


class KeyPool:
    __slots__ = (
        "_auth_cooldown",
        "_cooldowns",
        "_ids",
        "_keys",
        "_max_cooldown",
        "_next",
        "_provider",
        "_rate_cooldown",
        "passthrough",
        "size",
    )

    def __init__(
        self,
        provider: str,
        keys: tuple[str, ...],
        cooldowns: Cooldowns | None = None,
        *,
        auth_cooldown: float = 300.0,
        rate_limit_cooldown: float = 30.0,
        max_cooldown: float = 3600.0,
    ) -> None:
        self._provider = provider
        self.passthrough = PASSTHROUGH_KEY in keys
        self._keys = tuple(k for k in keys if k != PASSTHROUGH_KEY)
        self._ids = tuple(key_id(provider, k) for k in self._keys)
        self.size = len(self._keys)
        self._next = 0
        self._cooldowns = cooldowns if cooldowns is not None else MemoryCooldowns()
        self._auth_cooldown = auth_cooldown
        self._rate_cooldown = rate_limit_cooldown
        self._max_cooldown = max_cooldown

    # ------------------------------------------------------------ choosing

    def pick(self, model: str | None = None) -> tuple[int, str]:
        """The key (index, key) for a call: the next healthy one round robin,
        else the one whose bench ends first; RateLimited when the upstream's
        own retry-after holds for every key."""
        index = self._first(model)[0]
        return index, self._keys[index]

    def _first(self, model: str | None) -> tuple[int, bool]:
        """A call's first key (index, benched)."""
        if not self.size:
            raise AuthenticationFailed(
                f"provider '{self._provider}' uses the client's own API key (!PASSTHRU); "
                "send it as x-api-key or Authorization: Bearer. Where the gateway asks for "
                "its own credential (PROXY_API_KEY, an API token, a JWT), send that in one "
                "of the two headers and the provider's key in the other: the gateway's "
                "credential is never forwarded"
            )
        chosen = self._choose(model, 0)
        if chosen is None:
            wait = self._wait(model) or 0.0
            raise RateLimited(
                f"every API key of provider '{self._provider}' is cooling down as the "
                f"upstream asked (retry-after); the first is usable again in {wait:.0f} s",
                provider=self._provider,
                retry_after=wait,
            )
        return chosen

    def _choose(self, model: str | None, tried: int) -> tuple[int, bool] | None:
        """The next key (index, benched) for a request that has used the keys
        in bit mask ``tried``: a healthy one round robin, else the unused key
        whose bench, not the upstream's retry-after, ends first; None if none."""
        get = self._cooldowns.get
        ids = self._ids
        size = self.size
        now = time.time()
        index = self._next
        fallback = -1
        fallback_until = 0.0
        for _ in range(size):
            if not tried >> index & 1:
                bench = get(ids[index], model)
                if bench is None or bench.until <= now:
                    self._next = index + 1 if index + 1 < size else 0
                    return index, False
                if not bench.hard and (fallback < 0 or bench.until < fallback_until):
                    fallback, fallback_until = index, bench.until
            index = index + 1 if index + 1 < size else 0
        return (fallback, True) if fallback >= 0 else None

    def _wait(self, model: str | None, skip: int = -1) -> float | None:
        """Seconds until the first key's bench (for ``model``) ends, key
        ``skip`` aside; None when there is no other key."""
        get = self._cooldowns.get
        ends = [
            b.until if (b := get(kid, model)) is not None else 0.0
            for i, kid in enumerate(self._ids)
            if i != skip
        ]
        return max(min(ends) - time.time(), 0.0) if ends else None

    def key_for(self, client_key: str | None) -> str:
        """The key for a side call (a model list) that does not fail over."""
        if self.passthrough and client_key:
            return client_key
        return self.pick()[1]

    # ------------------------------------------------------------ benching

    def bench(self, index: int, error: UpstreamStatusError, model: str | None = None) -> bool:
        """Bench key ``index`` (or the pair with ``model``) after ``error``;
        False if the error is not the key's fault."""
        status = error.upstream_status
        scoped = (
            model
            if model is not None and status in _MODEL_STATUSES and _names_model(error, model)
            else None
        )
        if scoped is None and status not in _KEY_STATUSES:
            return False
        self._bench(index, status, error.headers.get("retry-after"), scoped)
        return True

    def report(self, index: int, status: int, retry_after: str | None) -> bool:
        """What a relayed answer with ``status`` says of key ``index``: a
        success clears its bench, a 401/403/429 benches it (True)."""
        if status < 400:
            self._cooldowns.clear(self._ids[index])
            return False
        if status not in _KEY_STATUSES:
            return False
        self._bench(index, status, retry_after, None)
        return True

    def _bench(self, index: int, status: int, retry_after: str | None, model: str | None) -> None:
        kid = self._ids[index]
        hard = False
        strikes = 0
        if status == 429:
            waited = _retry_after(retry_after)
            known = self._cooldowns.get(kid, model)
            strikes = known.strikes if known is not None and known.model == model else 0
            if waited is not None:
                seconds, hard = waited, True
            else:
                strikes += 1
                seconds = min(FIRST_BACKOFF * 2 ** min(strikes - 1, 30), self._rate_cooldown)
        else:
            seconds = self._auth_cooldown
        until = time.time() + min(seconds, self._max_cooldown)
        self._cooldowns.bench(Bench(kid, until, status, model, hard, strikes))

    # ------------------------------------------------------------ calling

    async def call(
        self,
        client_key: str | None,
        attempt: Callable[[str], Awaitable[T]],
        upstream_key: str | None = None,
        model: str | None = None,
    ) -> T:
        """Run ``attempt(key)`` for upstream ``model``, moving through the pool
        while keys are refused.  A project's own ``upstream_key`` is used alone
        (never benched: it is not the pool's)."""
        if upstream_key:
            return await attempt(upstream_key)
        if self.passthrough and client_key:
            return await attempt(client_key)
        index, benched = self._first(model)
        tried = 0
        while True:
            try:
                result = await attempt(self._keys[index])
            except UpstreamStatusError as exc:
                if not self.bench(index, exc, model):
                    raise
                tried |= 1 << index
                chosen = None if benched else self._choose(model, tried)
                if chosen is None:
                    if exc.upstream_status == 429:
                        self._hint(exc, index, model)
                    raise
                index, benched = chosen
                continue
            self._cooldowns.clear(self._ids[index], model)
            return result

    def _hint(self, exc: UpstreamStatusError, index: int, model: str | None) -> None:
        """Set the ``retry-after`` of the 429 a request ends on: the client may
        come back when the first key may (this one when its upstream said, or
        when its bench ends; another key sooner)."""
        own = _retry_after(exc.headers.get("retry-after"))
        if own is None:
            bench = self._cooldowns.get(self._ids[index], model)
            own = max(bench.until - time.time(), 0.0) if bench is not None else 0.0
        other = self._wait(model, skip=index)
        wait = own if other is None else min(own, other)
        exc.headers["retry-after"] = str(max(1, int(wait + 0.999)))


def _names_model(error: UpstreamStatusError, model: str) -> bool:
    """Whether the upstream's refusal is about ``model`` rather than the key."""
    if len(model) > MAX_MODEL_LENGTH:
        return False
    return error.code == "model_not_found" or model in upstream_message(error.body)


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``retry-after`` header (delta-seconds; HTTP dates ignored)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if 0 < seconds < 86_400 else None
