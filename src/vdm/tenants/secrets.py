"""Token secrets and project credentials: how they are made, stored and shown.

* A token is ``sk-vdm-`` + 43 url-safe random characters (256 bits).  Only its
  SHA-256 is stored: with that much entropy a slow hash buys nothing, and a
  fast one keeps the lookup a dict access.
* Project credentials are encrypted with Fernet (``fernet:…``) and only ever
  shown obfuscated.  The key (:func:`load_key`): ``VDM_ENCRYPTION_KEY``, else
  the file ``VDM_ENCRYPTION_KEY_FILE`` names, else one generated on first use
  into ``~/.config/vdm/encryption-key`` (mode 0600) — for an unshared
  database only: instances sharing PostgreSQL must be given the same key.
  ``VDM_ENCRYPTION_KEY=none`` keeps them as ``plain:…`` (said once, at start-up).
  Rows stored in plain text before a key was in use are still read, and sealed
  at the next start (:meth:`vdm.tenants.service.ControlPlane.open`).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from pathlib import Path
from typing import TYPE_CHECKING

from vdm.secret_file import read_or_create

if TYPE_CHECKING:
    from vdm.tenants.settings import TenantSettings

log = logging.getLogger("vdm.tenants")

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

    @property
    def encrypts(self) -> bool:
        return self._fernet is not None

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
                "a project credential is encrypted, and VDM_ENCRYPTION_KEY=none; "
                "set VDM_ENCRYPTION_KEY to the key it was stored with"
            )
        from cryptography.fernet import InvalidToken

        try:
            return self._fernet.decrypt(value.encode()).decode()
        except InvalidToken:
            raise CredentialError(
                "a project credential does not decrypt with this instance's key "
                "(VDM_ENCRYPTION_KEY, VDM_ENCRYPTION_KEY_FILE or ~/.config/vdm/encryption-key): "
                "was it changed or lost?"
            ) from None


def load_key(settings: TenantSettings) -> str | None:
    """The Fernet key for project credentials, or None for plain text (the
    operator's explicit choice).  Start-up only (file I/O); raises RuntimeError
    with what to set when no usable key can be had."""
    from vdm.tenants.settings import FERNET_KEY_HELP, is_fernet_key

    if settings.plain_credentials:
        log.warning(
            "project credentials are stored in plain text (VDM_ENCRYPTION_KEY=none): "
            "anyone who can read the database can use them"
        )
        return None
    if settings.encryption_key:
        return settings.encryption_key
    path = Path(settings.encryption_key_file)
    if settings.shared and not settings.key_file_configured and not path.exists():
        raise RuntimeError(
            "the database is shared (PostgreSQL), so every instance needs the same key "
            "for project credentials: set VDM_ENCRYPTION_KEY (or VDM_ENCRYPTION_KEY_FILE) "
            "on each, or VDM_ENCRYPTION_KEY=none to store them in plain text"
        )
    if settings.key_file_configured and not path.exists():
        raise RuntimeError(f"VDM_ENCRYPTION_KEY_FILE: {path} does not exist")
    key, made = read_or_create(path, _new_key)
    if made:
        log.info(
            "generated the encryption key for project credentials in %s (mode 0600); "
            "back it up with the database: without it, stored keys cannot be read",
            path,
        )
    if not is_fernet_key(key):
        raise RuntimeError(f"{path}: {FERNET_KEY_HELP}")
    return key


def _new_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()
