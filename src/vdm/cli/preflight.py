"""What ``vdm server start`` checks before it binds a port, and how a failure
of what it depends on is told: one line naming what failed (its URL, the
password masked, and the setting it came from) and how to fix it.

* the control plane's database answers (when the control plane is on), the
  first thing a start does that depends on another machine;
* the gRPC service's TLS certificate and key load together.

The gateway's own start-up would stop on the same faults, but as a
traceback in its log; checked here, a foreground start, a ``--daemon`` start
and ``--workers N`` all say it once, on stderr, before the "listening on"
line could be printed.  ``vdm db upgrade`` / ``status`` tell their failures
with the same words (:func:`database_failure`).
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from pathlib import Path

from vdm.cli.common import mask_url
from vdm.config import Settings
from vdm.extras import MissingExtra
from vdm.tenants.settings import TenantSettings

_DATABASE_TIMEOUT = 10.0


class StartProblem(Exception):
    """A dependency of the start failed; ``str()`` is the one line to print."""


def check(settings: Settings) -> None:
    """Raise :class:`StartProblem` for the first dependency that fails."""
    _tls(settings)
    if settings.tenants.enabled:
        _database(settings)


def _setting(settings: Settings, key: str, env_name: str) -> str:
    source = settings.sources.get(key, "")
    return env_name if source.endswith(env_name) or not source else f"{key} in {source}"


def database_failure(exc: BaseException, settings: Settings) -> str:
    """One line: which database failed, why, and what to do about it."""
    tenants = settings.tenants
    setting = _setting(settings, "tenants.database-url", "DATABASE_URL")
    url = tenants.database_url or tenants.sqlalchemy_url
    shown = mask_url(url)
    reason = _reason(exc)
    password = _password(url)
    if password:
        reason = reason.replace(password, "***")
    if not tenants.database_url:
        return (
            f"the control plane's SQLite database {shown} cannot be opened: {reason}; "
            f"check that its directory is writable (XDG_DATA_HOME), or set DATABASE_URL"
        )
    return (
        f"the database {shown} ({setting}) {reason}; fix {setting} (check it with "
        "`vdm db status`), or unset it to use the embedded SQLite file"
    )


def _password(url: str) -> str | None:
    from urllib.parse import urlparse

    try:
        return urlparse(url).password
    except ValueError:
        return None


def _reason(exc: BaseException) -> str:
    """Why a connection failed, in words (the deepest cause that says it)."""
    if isinstance(exc, ConnectionRefusedError) or (
        isinstance(exc, OSError) and "connect call failed" in str(exc).lower()
    ):
        return "refused the connection (is its server running, at that host and port?)"
    if isinstance(exc, socket.gaierror):
        return "has a host name that does not resolve"
    if isinstance(exc, TimeoutError):
        return f"did not answer within {_DATABASE_TIMEOUT:g} s (a firewall, or the wrong host?)"
    name = type(exc).__name__
    if name == "InvalidPasswordError":
        return "refused the user name or password"
    if name == "InvalidCatalogNameError":
        return "answered, but that database does not exist (create it, or fix its name)"
    if isinstance(exc, ModuleNotFoundError):
        return f"needs a driver that is not installed ({exc.name})"
    cause = exc.__cause__ or exc.__context__
    if cause is not None and cause is not exc and type(exc).__module__.startswith("sqlalchemy"):
        return _reason(cause)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"failed: {name}: {text}" if text else f"failed: {name}"


def _database(settings: Settings) -> None:
    tenants = settings.tenants
    try:
        asyncio.run(_connect(tenants))
    except MissingExtra:
        raise  # its own one line (the CLI's): which extra to install
    except Exception as exc:  # every failure is told in one line
        raise StartProblem(database_failure(exc, settings)) from exc


async def _connect(tenants: TenantSettings) -> None:
    from sqlalchemy import text

    from vdm.store.sql import create_engine

    engine = create_engine(tenants.sqlalchemy_url, tenants.database_schema)
    try:
        async with asyncio.timeout(_DATABASE_TIMEOUT), engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    finally:
        await engine.dispose()


def _tls(settings: Settings) -> None:
    grpc = settings.grpc
    if grpc.port is None or not (grpc.tls_cert or grpc.tls_key):
        return
    cert_setting = _setting(settings, "grpc.tls-cert", "GRPC_TLS_CERT")
    key_setting = _setting(settings, "grpc.tls-key", "GRPC_TLS_KEY")
    if not (grpc.tls_cert and grpc.tls_key):
        raise StartProblem(
            f"gRPC TLS needs both a certificate and a key: set {cert_setting} and {key_setting}"
        )
    cert = Path(grpc.tls_cert).expanduser()
    key = Path(grpc.tls_key).expanduser()
    for path, setting in ((cert, cert_setting), (key, key_setting)):
        if not path.is_file():
            raise StartProblem(f"the gRPC TLS file {path} ({setting}) does not exist")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (ssl.SSLError, OSError) as exc:
        raise StartProblem(
            f"the gRPC TLS certificate {cert} and key {key} ({cert_setting}, {key_setting}) "
            f"do not load together: {getattr(exc, 'reason', None) or exc}; give a PEM "
            "certificate (chain) and its private key"
        ) from exc
