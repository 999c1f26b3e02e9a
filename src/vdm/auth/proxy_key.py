"""``PROXY_API_KEY``: one shared secret every client must present."""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from vdm.errors import AuthenticationFailed


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key a client sent: ``x-api-key``, else ``Authorization: Bearer``."""
    key = headers.get("x-api-key")
    if key:
        return key
    authorization = headers.get("authorization")
    if authorization and authorization[:7].lower() == "bearer ":
        return authorization[7:].strip() or None
    return None


class ProxyKey:
    __slots__ = ("_expected",)

    def __init__(self, key: str) -> None:
        self._expected = key.encode()

    def matches(self, presented: str) -> bool:
        return hmac.compare_digest(presented.encode(), self._expected)

    def check(self, presented: str | None) -> None:
        # compare_digest on bytes of possibly different lengths is still
        # constant-time with respect to the expected key's content.
        if presented is None or not hmac.compare_digest(presented.encode(), self._expected):
            raise AuthenticationFailed(
                "invalid or missing API key: this gateway requires its PROXY_API_KEY "
                "as x-api-key or Authorization: Bearer"
            )
