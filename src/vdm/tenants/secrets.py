"""Token secrets and project credentials: how they are made, stored and shown.

* A token is ``sk-vdm-`` + 43 url-safe random characters (256 bits).  Only its
  SHA-256 is stored: with that much entropy a slow hash buys nothing, and a
  fast one keeps the lookup a dict access.
* Project credentials are encrypted with Fernet when ``VDM_ENCRYPTION_KEY`` is
  set (``fernet:…``), kept as ``plain:…`` otherwise, and only ever shown
  obfuscated.
"""

from __future__ import annotations

import hashlib
import secrets

TOKEN_PREFIX = "sk-vdm-"


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def obfuscate(secret: str) -> str:
    """Enough to recognise a secret, never enough to use it."""
    if len(secret) <= 12:
        return "****"
    head = len(TOKEN_PREFIX) + 4 if secret.startswith(TOKEN_PREFIX) else 4
    return f"{secret[:head]}…{secret[-4:]}"


class CredentialError(Exception):
    """A stored credential that this instance cannot read (wrong or missing key)."""


class Cipher:
    """Encrypts project credentials at rest (when a key is configured)."""

    def __init__(self, key: str | None) -> None:
        from cryptography.fernet import Fernet  # only when the control plane is on

        self._fernet = Fernet(key.encode()) if key else None

    def seal(self, secret: str) -> str:
        if self._fernet is None:
            return "plain:" + secret
        return "fernet:" + self._fernet.encrypt(secret.encode()).decode()

    def open(self, stored: str) -> str:
        kind, _, value = stored.partition(":")
        if kind == "plain":
            return value
        if kind != "fernet":
            raise CredentialError("unknown credential format")
        if self._fernet is None:
            raise CredentialError(
                "a project credential is encrypted; set VDM_ENCRYPTION_KEY "
                "to the key it was stored with"
            )
        from cryptography.fernet import InvalidToken

        try:
            return self._fernet.decrypt(value.encode()).decode()
        except InvalidToken:
            raise CredentialError(
                "a project credential does not decrypt with VDM_ENCRYPTION_KEY (was it changed?)"
            ) from None
