"""JWT bearer tokens for the gRPC door: HS256, issued by ``vdm token generate``.

Claims: ``sub`` (who: per-subject limits key on it), ``iss`` (always
:data:`ISSUER`), ``iat``, ``exp`` and ``jti`` (the token's id, for
revocation), all required.  Only HS256 is accepted, so a token cannot pick
its own algorithm (``none``, or RS256 with the secret as a "public key").

The secret comes from ``VDM_JWT_SECRET`` / ``VDM_JWT_SECRET_FILE`` /
``[grpc] jwt-secret(-file)`` (resolved by :mod:`vdm.config`); with none of
them, one is generated on first use into the user's config dir
(``~/.config/vdm/jwt-secret``, mode 0600) and never printed.

:class:`Verifier` raises :class:`TokenRejected` whose message says which
check failed (missing, malformed, expired, bad signature, revoked) and
nothing else: never the token, the secret or the expected values.
"""

from __future__ import annotations

import os
import re
import secrets
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import jwt

from vdm.config import GrpcSettings
from vdm.dirs import user_config_path
from vdm.secret_file import read_or_create

ISSUER = "vdm"
ALGORITHM = "HS256"
_REQUIRED = ["sub", "iss", "iat", "exp", "jti"]
_CACHE_LIMIT = 1024

Reason = Literal["missing", "malformed", "expired", "bad signature", "revoked"]


class TokenRejected(Exception):
    """Authentication failed; ``reason`` is one of :data:`Reason`."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason} token: {detail}")
        self.reason = reason
        self.message = f"{reason} token: {detail}"


@dataclass(frozen=True, slots=True)
class Principal:
    """A verified caller."""

    subject: str
    jti: str
    expires_at: int


class RevocationCheck(Protocol):
    def is_revoked(self, jti: str) -> bool: ...


# ---------------------------------------------------------------- the secret


def secret_path(env: Mapping[str, str]) -> Path:
    return user_config_path(env).parent / "jwt-secret"


def load_secret(settings: GrpcSettings, env: Mapping[str, str] | None = None) -> str:
    """The configured secret, else the generated one (created now when missing;
    start-up only: file I/O, see :mod:`vdm.secret_file`)."""
    if settings.jwt_secret:
        return settings.jwt_secret
    path = secret_path(os.environ if env is None else env)
    return read_or_create(path, lambda: secrets.token_urlsafe(48))[0]


# ---------------------------------------------------------------- issuing

_DURATION = re.compile(r"^\s*(\d+)\s*(s|min|h|d|w|m|mo|y)?\s*$", re.IGNORECASE)
_UNIT_SECONDS = {
    "s": 1,
    "min": 60,
    "h": 3600,
    "d": 86400,
    "w": 7 * 86400,
    "m": 30 * 86400,
    "mo": 30 * 86400,
    "y": 365 * 86400,
}


def parse_duration(text: str) -> int:
    """``30d`` -> seconds.  Units: s, min, h, d (the default), w, m or mo
    (months of 30 days, as vibectl-server reads ``6m``), y (365 days)."""
    match = _DURATION.match(text)
    if not match or int(match.group(1)) <= 0:
        raise ValueError(
            f"not a duration: {text!r} (examples: 3600s, 90min, 12h, 30d, 2w, "
            "6m for six months, 1y)"
        )
    return int(match.group(1)) * _UNIT_SECONDS[(match.group(2) or "d").lower()]


def issue(
    secret: str, subject: str, expires_in: int, *, now: float | None = None
) -> tuple[str, dict[str, Any]]:
    """A signed token for ``subject`` and its claims."""
    if not subject.strip():
        raise ValueError("the subject must not be empty")
    issued = int(time.time() if now is None else now)
    claims = {
        "sub": subject,
        "iss": ISSUER,
        "iat": issued,
        "exp": issued + expires_in,
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM), claims


# ---------------------------------------------------------------- verifying


class Verifier:
    """Checks a presented token on every call: signature, claims, revocation.

    Decoded tokens are remembered (bounded) so a client's repeated calls cost
    a dict lookup; expiry and revocation are still checked every time.
    """

    __slots__ = ("_cache", "_key", "_revocations")

    def __init__(self, secret: str, revocations: RevocationCheck) -> None:
        self._key = secret
        self._revocations = revocations
        self._cache: dict[str, Principal] = {}

    def verify(self, token: str | None) -> Principal:
        if not token:
            raise TokenRejected(
                "missing",
                "send gRPC metadata 'authorization: Bearer <jwt>' "
                "(create one with `vdm token generate SUBJECT`)",
            )
        principal = self._cache.get(token)
        if principal is None:
            principal = self._decode(token)
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            self._cache[token] = principal
        if principal.expires_at <= time.time():
            when = datetime.fromtimestamp(principal.expires_at, UTC).isoformat()
            raise TokenRejected("expired", f"it expired at {when}; ask for a new one")
        if self._revocations.is_revoked(principal.jti):
            raise TokenRejected("revoked", "this token was revoked (`vdm token revoke`)")
        return principal

    def _decode(self, token: str) -> Principal:
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],
                issuer=ISSUER,
                options={"require": _REQUIRED},
            )
        except jwt.ExpiredSignatureError:
            raise TokenRejected("expired", "ask for a new one") from None
        except jwt.InvalidSignatureError:
            raise TokenRejected(
                "bad signature", "the token was not signed with this server's secret"
            ) from None
        except jwt.InvalidAlgorithmError:
            raise TokenRejected("malformed", f"only {ALGORITHM} tokens are accepted") from None
        except jwt.MissingRequiredClaimError as exc:
            raise TokenRejected("malformed", f"claim '{exc.claim}' is required") from None
        except jwt.InvalidIssuerError:
            raise TokenRejected("malformed", "the token was not issued by vdm") from None
        except jwt.ImmatureSignatureError:
            raise TokenRejected("malformed", "the token is issued in the future") from None
        except jwt.PyJWTError:
            raise TokenRejected("malformed", "not a valid JWT") from None
        subject, jti, exp = claims.get("sub"), claims.get("jti"), claims["exp"]  # exp: required
        if not isinstance(subject, str) or not subject or not isinstance(jti, str) or not jti:
            raise TokenRejected("malformed", "claims 'sub' and 'jti' must be non-empty strings")
        return Principal(subject, jti, int(exp))


def bearer(authorization: str | None) -> str | None:
    """The token of an ``authorization`` value; raises when it is not ``Bearer <jwt>``."""
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise TokenRejected("malformed", "the authorization metadata must be 'Bearer <jwt>'")
    return token.strip()
