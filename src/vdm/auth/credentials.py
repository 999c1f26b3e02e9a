"""Which check a presented credential goes to, for the HTTP doors.

One seam for every credential kind: a checker resolves the credential to a
:class:`~vdm.tenants.registry.Principal` (project, token, limits) or raises a
``GatewayError`` (401/403/429).  Today:

* ``sk-vdm-…`` — a virtual token, checked by the in-memory
  :class:`~vdm.tenants.registry.TokenRegistry` (control plane on);
* anything else — ``PROXY_API_KEY`` when set (the simple mode; no principal);
* ``MANAGEMENT_TOKEN`` — the operator's own credential (``vdm health``,
  ``vdm test``, ``vdm wrap``), admitted like ``PROXY_API_KEY`` (no principal):
  whoever holds it can make tokens anyway;
* nothing matched while the control plane is on — 401.

* a JWT (``eyJ….….…``) — :class:`JwtAdmission`: the tokens ``vdm token
  generate`` issues for gRPC, verified with the same secret and revocation list,
  when the gateway checks credentials at all (``PROXY_API_KEY`` or the control
  plane on); it is asked before the proxy key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

from vdm.auth.proxy_key import ProxyKey, check_length
from vdm.auth.split import CredentialSplit, looks_like_jwt
from vdm.config import ServerSettings
from vdm.errors import AuthenticationFailed
from vdm.tenants.secrets import TOKEN_PREFIX

if TYPE_CHECKING:
    from vdm.auth.jwt import Verifier
    from vdm.tenants.audit import AuditLog
    from vdm.tenants.registry import Principal


class Authenticator(Protocol):
    async def admit(
        self, credential: str, *, request_id: str, client_ip: str | None
    ) -> Principal: ...


class JwtAdmission:
    """A verified JWT as a principal: its ``sub`` is the project name, its
    ``jti`` the token; no upstream keys of its own (the gateway's are used)."""

    __slots__ = ("_audit", "_verifier")

    def __init__(self, verifier: Verifier, audit: AuditLog | None = None) -> None:
        self._verifier = verifier
        self._audit = audit

    async def admit(self, credential: str, *, request_id: str, client_ip: str | None) -> Principal:
        from vdm.auth.jwt import TokenRejected
        from vdm.tenants.registry import Principal

        try:
            claims = self._verifier.verify(credential)
        except TokenRejected as exc:
            if self._audit is not None:
                self._audit.record(
                    actor="anonymous",
                    action="proxy.authenticate",
                    outcome="denied",
                    request_id=request_id,
                    client_ip=client_ip,
                    details={"reason": f"jwt {exc.reason}"},
                )
            raise AuthenticationFailed(exc.message) from None
        return Principal(
            project_id=f"jwt:{claims.subject}",
            project_name=claims.subject,
            token_id=claims.jti,
            upstream_keys={},
        )


MAX_CREDENTIAL_LENGTH: int = ServerSettings.max_credential_length  # (the default)


class Credentials:
    """The gateway's check of its clients' credentials; ``split`` tells which
    credential it checks and which may go to a ``!PASSTHRU`` provider
    (:mod:`vdm.auth.split`: the one checked never does).  The operator's
    ``MANAGEMENT_TOKEN`` is accepted like ``PROXY_API_KEY`` (no project)."""

    __slots__ = (
        "_audit",
        "_jwt",
        "_max_length",
        "_operator",
        "_proxy_key",
        "_required",
        "_tokens",
        "split",
    )

    def __init__(
        self,
        proxy_key: ProxyKey | None,
        tokens: Authenticator | None = None,
        *,
        jwt: Authenticator | None = None,
        audit: AuditLog | None = None,
        management_key: ProxyKey | None = None,
        max_length: int = MAX_CREDENTIAL_LENGTH,
        key_headers: Sequence[str],
    ) -> None:
        self._max_length = max_length
        self._proxy_key = proxy_key
        self._operator = management_key
        self._tokens = tokens
        self._jwt = jwt
        self._audit = audit
        # A JWT alone never turns checking on: it is one more accepted credential.
        self._required = tokens is not None
        self.split = CredentialSplit(
            (proxy_key, management_key),
            key_headers=key_headers,
            checks=True,
            tokens=tokens is not None,
            jwts=jwt is not None,
        )

    async def check(
        self, headers: Mapping[str, str], request_id: str, client_ip: str | None
    ) -> Principal | None:
        presented = self.split.gateway(headers)
        if presented is not None:
            try:
                check_length(presented, self._max_length)
            except AuthenticationFailed:
                self._deny("credential too long", request_id, client_ip)
                raise
            if self._tokens is not None and presented.startswith(TOKEN_PREFIX):
                return await self._tokens.admit(
                    presented, request_id=request_id, client_ip=client_ip
                )
            if self._jwt is not None and looks_like_jwt(presented):
                return await self._jwt.admit(presented, request_id=request_id, client_ip=client_ip)
            if self._operator is not None and self._operator.matches(presented):
                return None
        if self._proxy_key is not None:
            try:
                self._proxy_key.check(presented)
            except AuthenticationFailed:
                self._deny("wrong or missing PROXY_API_KEY", request_id, client_ip)
                raise
            return None
        if self._required:
            self._deny("no API token", request_id, client_ip)
            raise AuthenticationFailed(
                "this gateway requires an API token (sk-vdm-…) as x-api-key or "
                "Authorization: Bearer"
            )
        return None

    def _deny(self, reason: str, request_id: str, client_ip: str | None) -> None:
        if self._audit is not None:
            self._audit.record(
                actor="anonymous",
                action="proxy.authenticate",
                outcome="denied",
                request_id=request_id,
                client_ip=client_ip,
                details={"reason": reason},
            )
