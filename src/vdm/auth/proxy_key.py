"""``PROXY_API_KEY``: one shared secret every client must present."""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence

from vdm.errors import AuthenticationFailed


def presented_key(headers: Mapping[str, str], key_headers: Sequence[str]) -> str | None:
    """The key a client sent: in the first of ``key_headers`` it sent (the
    doors' :data:`vdm.doors.KEY_HEADERS`: ``x-api-key``), else as
    ``Authorization: Bearer``."""
    for name in key_headers:
        value = headers.get(name)
        if value:
            return value
    return bearer(headers)


def bearer(headers: Mapping[str, str]) -> str | None:
    """The token of ``Authorization: Bearer``, if any."""
    authorization = headers.get("authorization")
    if authorization and authorization[:7].lower() == "bearer ":
        return authorization[7:].strip() or None
    return None


def check_length(credential: str, limit: int) -> None:
    """Refuse a credential longer than ``limit`` (``MAX_CREDENTIAL_LENGTH``)
    before anything decodes, hashes or compares it."""
    if len(credential) > limit:
        raise AuthenticationFailed(
            f"the API key or token presented is longer than {limit} characters "
            "(MAX_CREDENTIAL_LENGTH)"
        )


class ProxyKey:
    __slots__ = ("_expected",)

    def __init__(self, key: str) -> None:
        self._expected = key.encode()

    def matches(self, presented: str) -> bool:
        # compare_digest on bytes of possibly different lengths is still
        # constant-time with respect to the expected key's content.
        return hmac.compare_digest(presented.encode(), self._expected)

    def check(self, presented: str | None) -> None:
        if presented is None or not self.matches(presented):
            raise AuthenticationFailed(
                "invalid or missing API key: this gateway requires its PROXY_API_KEY "
                "as x-api-key or Authorization: Bearer"
            )
