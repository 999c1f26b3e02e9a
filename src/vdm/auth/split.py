"""Which of a client's credentials is the gateway's, and which may go upstream.

A client may send two credentials, ``x-api-key`` and ``Authorization: Bearer``.
The rule: **the credential that lets a client into the gateway never leaves
it.**  When the gateway checks credentials (``PROXY_API_KEY``, API tokens,
JWTs), the gateway's is the first of the two it would take (``x-api-key``
first): one equal to ``PROXY_API_KEY``, an ``sk-vdm-…`` token when tokens are
on, a JWT when JWTs are accepted; failing that, the one the client sent first,
which the check then refuses.  A ``!PASSTHRU`` provider gets the *other* one,
and only if it is no gateway credential of any kind: never a value equal to
``PROXY_API_KEY`` or ``MANAGEMENT_TOKEN``, never an ``sk-vdm-…`` token, never
a JWT while the gateway accepts JWTs.  When the gateway checks nothing, the
client's one credential (``x-api-key``, else the bearer) is the provider's,
with the same exclusions.

``x-api-key`` stands for every door's key header (:data:`vdm.doors.KEY_HEADERS`,
handed in as ``key_headers``): a client's key headers are read in that order,
the bearer last.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from vdm.auth.proxy_key import ProxyKey, bearer
from vdm.tenants.secrets import TOKEN_PREFIX


def looks_like_jwt(credential: str) -> bool:
    return credential.startswith("eyJ") and credential.count(".") == 2


class CredentialSplit:
    __slots__ = ("_checks", "_jwts", "_key_headers", "_secrets", "_tokens")

    def __init__(
        self,
        secrets: Sequence[ProxyKey | None],
        *,
        key_headers: Sequence[str],
        checks: bool,
        tokens: bool = False,
        jwts: bool = False,
    ) -> None:
        self._key_headers = tuple(key_headers)
        self._secrets = tuple(s for s in secrets if s is not None)
        self._checks = checks  # does the gateway authenticate its clients?
        self._tokens = tokens
        self._jwts = jwts

    def _is_gateways(self, credential: str) -> bool:
        """Would the gateway take ``credential`` as its own (or is it one of ours)?"""
        if credential.startswith(TOKEN_PREFIX):
            return True
        if self._jwts and looks_like_jwt(credential):
            return True
        return bool(self._secrets) and any(secret.matches(credential) for secret in self._secrets)

    def presented(self, headers: Mapping[str, str]) -> list[str | None]:
        """The client's credentials: its key headers', in order, then its bearer."""
        found: list[str | None] = [headers.get(name) or None for name in self._key_headers]
        found.append(bearer(headers))
        return found

    def gateway(self, headers: Mapping[str, str]) -> str | None:
        """The credential the gateway checks."""
        return self._gateway(self.presented(headers))[1]

    def _gateway(self, presented: list[str | None]) -> tuple[int, str | None]:
        for at, credential in enumerate(presented):
            if credential is not None and self._is_gateways(credential):
                return at, credential
        for at, credential in enumerate(presented):
            if credential is not None:
                return at, credential
        return -1, None

    def provider(self, headers: Mapping[str, str]) -> str | None:
        """The credential a ``!PASSTHRU`` provider may get, if any."""
        if not self._checks:  # the first credential that is none of the gateway's
            for name in self._key_headers:
                credential = headers.get(name)
                if credential and not self._is_gateways(credential):
                    return credential
            credential = bearer(headers)
            return None if credential is None or self._is_gateways(credential) else credential
        presented = self.presented(headers)  # every credential but the one the gateway checks
        taken, _ = self._gateway(presented)
        if taken < 0:
            return None
        del presented[taken]
        for credential in presented:
            if credential is not None and not self._is_gateways(credential):
                return credential
        return None
