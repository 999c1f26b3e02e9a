"""Which key a provider call uses.

A provider's keys form a pool used round-robin.  ``!PASSTHRU`` means "use the
client's own key" (``x-api-key`` or ``Authorization: Bearer``).
"""

from __future__ import annotations

from itertools import cycle

from vdm.config import PASSTHROUGH_KEY
from vdm.errors import AuthenticationFailed


class KeyPool:
    __slots__ = ("_cycle", "_provider", "passthrough", "size")

    def __init__(self, provider: str, keys: tuple[str, ...]) -> None:
        self._provider = provider
        self.passthrough = PASSTHROUGH_KEY in keys
        static = tuple(k for k in keys if k != PASSTHROUGH_KEY)
        self.size = len(static)
        self._cycle = cycle(static) if static else None

    def pick(self, client_key: str | None) -> str:
        if self.passthrough and client_key:
            return client_key
        if self._cycle is not None:
            return next(self._cycle)
        raise AuthenticationFailed(
            f"provider '{self._provider}' uses the client's own API key (!PASSTHRU); "
            "send it as x-api-key or Authorization: Bearer"
        )
