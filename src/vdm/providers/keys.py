"""Which key a provider call uses, and what happens when a key is refused.

A provider's keys form a pool used round-robin.  A key the upstream refuses
is benched (:class:`~vdm.providers.cooldowns.Cooldowns`): 401/403 for a long
cooldown, 429 for the upstream's ``retry-after`` (or a default), and the
same request moves on to the next key — all before any byte reaches the
client.  When every key is cooling down the call fails with
:class:`~vdm.errors.RateLimited`, whose ``retry-after`` is the soonest
key's return.

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
from vdm.providers.cooldowns import Cooldowns, MemoryCooldowns

T = TypeVar("T")

_BENCHED_STATUSES = frozenset({401, 403, 429})


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

    def pick(self) -> tuple[int, str]:
        """The next usable static key (index, key), round robin."""
        if not self.size:
            raise AuthenticationFailed(
                f"provider '{self._provider}' uses the client's own API key (!PASSTHRU); "
                "send it as x-api-key or Authorization: Bearer. Where the gateway asks for "
                "its own credential (PROXY_API_KEY, an API token, a JWT), send that in one "
                "of the two headers and the provider's key in the other: the gateway's "
                "credential is never forwarded"
            )
        now = time.time()
        until = self._cooldowns.until
        for _ in range(self.size):
            index = self._next
            self._next = index + 1 if index + 1 < self.size else 0
            if until(self._ids[index]) <= now:
                return index, self._keys[index]
        soonest = min(until(i) for i in self._ids)
        raise RateLimited(
            f"every API key of provider '{self._provider}' is cooling down after upstream "
            f"refusals; the first is usable again in {max(soonest - now, 0):.0f} s",
            provider=self._provider,
            retry_after=max(soonest - now, 0.0),
        )

    def key_for(self, client_key: str | None) -> str:
        """The key for a side call (a model list) that does not fail over."""
        if self.passthrough and client_key:
            return client_key
        return self.pick()[1]

    def bench(self, index: int, error: UpstreamStatusError) -> bool:
        """Cool key ``index`` down after ``error``; False if the error is not the key's fault."""
        return self.report(index, error.upstream_status, error.headers.get("retry-after"))

    def report(self, index: int, status: int, retry_after: str | None) -> bool:
        """Cool key ``index`` down if ``status`` says it was refused (401/403/429)."""
        if status not in _BENCHED_STATUSES:
            return False
        if status == 429:
            seconds = _retry_after(retry_after) or self._rate_cooldown
        else:
            seconds = self._auth_cooldown
        self._cooldowns.bench(self._ids[index], min(seconds, self._max_cooldown), status)
        return True

    def _soonest_other(self, index: int) -> float | None:
        """Seconds until the first key other than ``index`` is usable, if any."""
        ends = [self._cooldowns.until(k) for i, k in enumerate(self._ids) if i != index]
        return max(min(ends) - time.time(), 0.0) if ends else None

    async def call(
        self,
        client_key: str | None,
        attempt: Callable[[str], Awaitable[T]],
        upstream_key: str | None = None,
    ) -> T:
        """Run ``attempt(key)``, moving through the pool while keys are refused.
        A project's own ``upstream_key`` is used alone (never benched: it is not
        the pool's)."""
        if upstream_key:
            return await attempt(upstream_key)
        if self.passthrough and client_key:
            return await attempt(client_key)
        tried = 0
        while True:
            index, key = self.pick()
            try:
                return await attempt(key)
            except UpstreamStatusError as exc:
                if not self.bench(index, exc):
                    raise
                tried += 1
                if tried >= self.size:
                    if exc.upstream_status == 429:
                        # The client may come back when the first key may:
                        # this key when its upstream said, or another sooner.
                        waits = [
                            w
                            for w in (
                                _retry_after(exc.headers.get("retry-after")),
                                self._soonest_other(index),
                            )
                            if w is not None
                        ]
                        wait = min(waits) if waits else self._rate_cooldown
                        exc.headers["retry-after"] = str(max(1, int(wait + 0.999)))
                    raise


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``retry-after`` header (delta-seconds; HTTP dates ignored)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if 0 < seconds < 86_400 else None
