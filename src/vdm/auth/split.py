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
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from vdm.auth.proxy_key import ProxyKey, bearer
from vdm.tenants.secrets import TOKEN_PREFIX


def looks_like_jwt(credential: str) -> bool:
    return credential.startswith("eyJ") and credential.count(".") == 2


class CredentialSplit:
    __slots__ = ("_checks", "_jwts", "_secrets", "_tokens")

    def __init__(
        self,
        secrets: Sequence[ProxyKey | None],
        *,
        checks: bool,
        tokens: bool = False,
        jwts: bool = False,
    ) -> None:
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
        return any(secret.matches(credential) for secret in self._secrets)

    def gateway(self, headers: Mapping[str, str]) -> str | None:
        """The credential the gateway checks."""
        api_key, token = headers.get("x-api-key") or None, bearer(headers)
        for credential in (api_key, token):
            if credential is not None and self._is_gateways(credential):
                return credential
        return api_key or token

    def provider(self, headers: Mapping[str, str]) -> str | None:
        """The credential a ``!PASSTHRU`` provider may get, if any."""
        api_key, token = headers.get("x-api-key") or None, bearer(headers)
        candidates: tuple[str | None, ...] = (api_key, token)
        if self._checks:
            candidates = (token,) if self.gateway(headers) == api_key else (api_key,)
        for credential in candidates:
            if credential is not None and not self._is_gateways(credential):
                return credential
        return None
