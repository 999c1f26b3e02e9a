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
from typing import Any, ClassVar
from urllib.parse import urlparse

from vdm.dirs import data_dir, user_config_path
from vdm.settings.kinds import Kind, Pattern, Seconds, Text, masked_url
from vdm.settings.load import read_section
from vdm.settings.spec import rows, setting

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


class ManagementToken(Kind):
    label = f"text of at least {_MIN_MANAGEMENT_TOKEN} characters"

    def parse(self, value: Any, where: str, problems: list[str]) -> str | None:
        if not isinstance(value, str) or len(value) < _MIN_MANAGEMENT_TOKEN:
            problems.append(
                f"{where}: must be a string of at least {_MIN_MANAGEMENT_TOKEN} "
                "characters (e.g. `openssl rand -hex 32`)"
            )
            return None
        return value


class DatabaseUrl(Kind):
    label = "URL (postgresql://, sqlite:///)"
    masks_url = True

    def parse(self, value: Any, where: str, problems: list[str]) -> str | None:
        scheme = urlparse(str(value)).scheme
        if scheme not in _SCHEMES:
            problems.append(
                f"{where}: expected a postgresql://… or sqlite:///… URL, got scheme {scheme!r}"
            )
            return None
        return str(value)

    def show(self, value: Any) -> str:
        return "-" if value is None else masked_url(str(value))


class EncryptionKey(Kind):
    label = f"Fernet key, or '{PLAIN}'"

    def parse(self, value: Any, where: str, problems: list[str]) -> str | None:
        if value != PLAIN and not is_fernet_key(value):
            problems.append(f"{where}: {FERNET_KEY_HELP} or '{PLAIN}' for plain text")
            return None
        return str(value)


def _key_file(values: Mapping[str, Any], context: Mapping[str, Any]) -> str:
    return str(default_key_file(context["env"]))


@dataclass(frozen=True)
class TenantSettings:
    """``[tenants]``: the control plane (projects, tokens, audit) and its database."""

    SECTION: ClassVar[str] = "tenants"
    ENV_PREFIX: ClassVar[str] = ""

    management_token: str | None = setting(
        None,
        ManagementToken(),
        "The operator's token: turns the control plane on ([Tenants](tenants.md)).",
        secret=True,
        example="m" * 32,
    )
    database_url: str | None = setting(
        None,
        DatabaseUrl(),
        "Database of projects, tokens and audit; none: a SQLite file in the data dir.",
        default_text="SQLite (WAL) at $XDG_DATA_HOME/vdm/vdm.db, else ~/.local/share/vdm/vdm.db",
        example="sqlite:///vdm-test.db",
    )
    database_schema: str | None = setting(
        None,
        Pattern(r"[A-Za-z_][A-Za-z0-9_]*", "a schema name is letters, digits and '_'"),
        "PostgreSQL schema (search_path) of vdm's tables.",
        example="vdm_test",
    )
    # Project credentials at rest: a Fernet key (VDM_ENCRYPTION_KEY), else the one in
    # encryption_key_file (generated there on first use, for an unshared database).
    encryption_key: str | None = setting(
        None,
        EncryptionKey(),
        f"Fernet key of project credentials at rest; '{PLAIN}': plain text "
        "([Security](security.md#data-at-rest)).",
        env="VDM_ENCRYPTION_KEY",
        secret=True,
        example="a2tra2tra2tra2tra2tra2tra2tra2tra2tra2tra2s=",
    )
    encryption_key_file: str = setting(
        "",
        Text(),
        "File of the generated key, used when no encryption-key is set.",
        env="VDM_ENCRYPTION_KEY_FILE",
        derive=_key_file,
        default_text="~/.config/vdm/encryption-key, generated (0600)",
        example="/run/secrets/vdm-key",
    )
    key_file_configured: bool = False  # the file was named by the operator (not generated)
    plain_credentials: bool = False  # VDM_ENCRYPTION_KEY=none: the operator's choice
    audit_log_file: str | None = setting(
        None, Text(), "Also append audit records to this file (JSON lines).", example="audit.log"
    )
    data_dir: str = ""  # where the default SQLite file lives
    # How often each instance looks for other instances' changes in the database and
    # says which revision it has (vdm.tenants.fleet); None: every second.
    refresh_interval: float | None = setting(
        None,
        Seconds(),
        "Seconds between looks for other instances' changes in the database "
        "([Deploying](deploying.md#what-the-instances-share-and-what-holds)).",
        env="TENANTS_REFRESH_INTERVAL",
        default_text="1",
        example=5.0,
    )

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
    read = read_section(rows(TenantSettings), table, env, sources, problems, {"env": env})
    values = read.values
    plain = values["encryption_key"] == PLAIN
    if plain:
        values["encryption_key"] = None
    return TenantSettings(
        **values,
        key_file_configured=read.given("encryption_key_file"),
        plain_credentials=plain,
        data_dir=str(data_dir(env)),
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
