"""Settings of the control plane: projects, tokens, audit and their storage.

Read once at start-up with the rest (:func:`vdm.config.load_settings`); every
problem names the environment variable or the TOML key ``[tenants]``.

The control plane is *on* when ``MANAGEMENT_TOKEN`` or ``DATABASE_URL`` is
set.  Off (the default), the gateway opens no database at all and nothing
on the request path changes.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from vdm.dirs import data_dir, user_config_path

KEYS = {
    "management-token",
    "database-url",
    "database-schema",
    "encryption-key",
    "encryption-key-file",
    "audit-log-file",
    "refresh-interval",
}
_SCHEMES = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgresql": "postgresql+asyncpg",
    "postgres": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
}
_MIN_MANAGEMENT_TOKEN = 16
PLAIN = "none"  # VDM_ENCRYPTION_KEY=none: project credentials in plain text
FERNET_KEY_HELP = (
    "expected a Fernet key (32 url-safe base64-encoded bytes; make one with "
    "`python -c 'from cryptography.fernet import Fernet; "
    "print(Fernet.generate_key().decode())'`)"
)


@dataclass(frozen=True)
class TenantSettings:
    management_token: str | None = None
    database_url: str | None = None  # as configured; None: the SQLite file below
    database_schema: str | None = None  # PostgreSQL schema (search_path) for vdm's tables
    # Project credentials at rest: a Fernet key (VDM_ENCRYPTION_KEY), else the one in
    # encryption_key_file (generated there on first use, for an unshared database).
    encryption_key: str | None = None
    encryption_key_file: str = ""
    key_file_configured: bool = False  # the file was named by the operator (not generated)
    plain_credentials: bool = False  # VDM_ENCRYPTION_KEY=none: the operator's choice
    audit_log_file: str | None = None
    data_dir: str = ""  # where the default SQLite file lives
    # How often each instance looks for other instances' changes in the database and
    # says which revision it has (vdm.tenants.fleet); None: every second.
    refresh_interval: float | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.management_token or self.database_url)

    @property
    def sqlalchemy_url(self) -> str:
        """The URL with the async driver SQLAlchemy needs."""
        if not self.database_url:
            return "sqlite+aiosqlite:///" + str(Path(self.data_dir) / "vdm.db")
        scheme, sep, rest = self.database_url.partition("://")
        return _SCHEMES.get(scheme, scheme) + sep + rest

    @property
    def shared(self) -> bool:
        """Several instances may share this database (PostgreSQL)."""
        return self.sqlalchemy_url.startswith("postgresql")


def tenant_settings(
    table: Any, env: Mapping[str, str], sources: dict[str, str], problems: list[str]
) -> TenantSettings:
    if not isinstance(table, dict):
        problems.append("tenants: must be a table")
        table = {}

    def pick(key: str, var: str) -> tuple[Any, str]:
        if env.get(var):
            sources[f"tenants.{key}"] = f"env {var}"
            return env[var], f"environment variable {var}"
        return table.get(key), f"{sources.get(f'tenants.{key}', 'config')}: tenants.{key}"

    token, token_src = pick("management-token", "MANAGEMENT_TOKEN")
    if token is not None and (not isinstance(token, str) or len(token) < _MIN_MANAGEMENT_TOKEN):
        problems.append(
            f"{token_src}: must be a string of at least {_MIN_MANAGEMENT_TOKEN} "
            "characters (e.g. `openssl rand -hex 32`)"
        )
        token = None
    url, url_src = pick("database-url", "DATABASE_URL")
    if url is not None:
        scheme = urlparse(str(url)).scheme
        if scheme not in _SCHEMES:
            problems.append(
                f"{url_src}: expected a postgresql://… or sqlite:///… URL, got scheme {scheme!r}"
            )
            url = None
    schema, schema_src = pick("database-schema", "DATABASE_SCHEMA")
    if schema is not None and not (
        isinstance(schema, str) and schema.replace("_", "a").isalnum() and not schema[0].isdigit()
    ):
        problems.append(f"{schema_src}: a schema name is letters, digits and '_'")
        schema = None
    key, key_src = pick("encryption-key", "VDM_ENCRYPTION_KEY")
    plain = key == PLAIN
    if plain:
        key = None
    elif key is not None and not is_fernet_key(key):
        problems.append(f"{key_src}: {FERNET_KEY_HELP} or '{PLAIN}' for plain text")
        key = None
    key_file, _ = pick("encryption-key-file", "VDM_ENCRYPTION_KEY_FILE")
    audit, _ = pick("audit-log-file", "AUDIT_LOG_FILE")
    refresh_raw, refresh_src = pick("refresh-interval", "TENANTS_REFRESH_INTERVAL")
    refresh: float | None = None
    if refresh_raw is not None:
        try:
            refresh = float(refresh_raw)
            if refresh <= 0:
                raise ValueError
        except (TypeError, ValueError):
            problems.append(
                f"{refresh_src}: expected a positive number of seconds, got {refresh_raw!r}"
            )
    return TenantSettings(
        management_token=token,
        database_url=str(url) if url else None,
        database_schema=schema,
        encryption_key=key,
        encryption_key_file=str(key_file or default_key_file(env)),
        key_file_configured=bool(key_file),
        plain_credentials=plain,
        audit_log_file=str(audit) if audit else None,
        data_dir=str(data_dir(env)),
        refresh_interval=refresh,
    )


def default_key_file(env: Mapping[str, str]) -> Path:
    """Where the generated key lives: next to the generated JWT secret."""
    return user_config_path(env).parent / "encryption-key"


def is_fernet_key(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        return len(base64.urlsafe_b64decode(value.encode())) == 32
    except (binascii.Error, ValueError):
        return False
