"""Alembic migrations, run at start-up and by ``vdm db upgrade`` / ``vdm db status``.

The environment (``migrations/env.py``) is given the live connection, so the
same async engine the gateway uses runs them (``run_sync``), no second URL.

Migrations run once, whoever starts first: every replica (and every worker of
``--workers N``) calls :func:`upgrade` at start-up, and so does ``vdm db
upgrade`` in an init container or a Job, all on this one code path.  Each
takes a lock first, then reads the revision, then migrates only what is
missing, so the second to come finds nothing left to do:

* PostgreSQL: a transaction-scoped advisory lock (``pg_advisory_xact_lock``)
  keyed by the schema, taken before anything else in the same transaction
  as the DDL, released by its commit or rollback (a crashed migrator cannot
  leave it held);
* SQLite: an exclusive ``flock`` on ``<database>.migrate.lock`` beside the
  file (processes on one machine are the only ones sharing a SQLite file).

A database whose revision this vdm does not know was migrated by a newer
vdm: :class:`SchemaTooNew`, and the process refuses to start rather than
serve from tables it does not understand.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from vdm.errors import StartRefused

VERSION_TABLE = "vdm_alembic_version"


class SchemaTooNew(StartRefused):
    def __init__(self, current: str, head: str) -> None:
        super().__init__(
            f"the database schema is at revision {current}, newer than this vdm knows "
            f"(its newest is {head}): upgrade vdm to the version that migrated it, "
            "or point DATABASE_URL at another database"
        )


def _config(schema: str | None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(resources.files("vdm.store") / "migrations"))
    cfg.attributes["schema"] = schema
    return cfg


@dataclass(frozen=True)
class Status:
    current: str | None
    head: str

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head


def lock_key(schema: str | None) -> int:
    """The advisory lock's key: one per schema, stable across versions (a signed 64-bit int)."""
    digest = hashlib.sha256(f"vdm.migrate:{schema or ''}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _sqlite_file(engine: AsyncEngine) -> Path | None:
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        return None
    return Path(database)


@contextlib.asynccontextmanager
async def _file_lock(path: Path) -> AsyncIterator[None]:
    """An exclusive ``flock`` on ``path`` (waited for in a thread, off the loop)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - no flock (Windows): one process per file there
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # (releases the lock)


def _current(sync_conn: Any, schema: str | None) -> str | None:
    ctx = MigrationContext.configure(
        sync_conn, opts={"version_table": VERSION_TABLE, "version_table_schema": schema}
    )
    return ctx.get_current_revision()


def _check_known(script: ScriptDirectory, current: str | None) -> None:
    if current is None:
        return
    try:
        known = script.get_revision(current) is not None
    except Exception:  # alembic: "Can't locate revision identified by ..."
        known = False
    if not known:
        head = script.get_current_head()
        assert head is not None
        raise SchemaTooNew(current, head)


async def upgrade(engine: AsyncEngine, schema: str | None = None) -> Status:
    """Bring the schema to the newest revision under the lock (a no-op when it
    is there); the status it leaves."""
    sqlite_file = _sqlite_file(engine)
    if sqlite_file is not None:
        async with _file_lock(sqlite_file.with_name(sqlite_file.name + ".migrate.lock")):
            return await _upgrade(engine, schema)
    return await _upgrade(engine, schema)


async def _upgrade(engine: AsyncEngine, schema: str | None) -> Status:
    cfg = _config(schema)
    script = ScriptDirectory.from_config(cfg)
    head = script.get_current_head()
    assert head is not None
    async with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            # First in the transaction: whoever comes second waits here, then
            # finds the schema made and the revision at head.
            await conn.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": lock_key(schema)}
            )
            if schema:
                await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        current = await conn.run_sync(_current, schema)
        _check_known(script, current)
        if current != head:
            await _run_upgrade(conn, cfg)
    return Status(head, head)


async def _run_upgrade(conn: AsyncConnection, cfg: Config) -> None:
    def run(sync_conn: Any) -> None:
        cfg.attributes["connection"] = sync_conn
        command.upgrade(cfg, "head")

    await conn.run_sync(run)


async def status(engine: AsyncEngine, schema: str | None = None) -> Status:
    script = ScriptDirectory.from_config(_config(schema))
    head = script.get_current_head()
    assert head is not None
    async with engine.connect() as conn:
        current = await conn.run_sync(_current, schema)
    _check_known(script, current)
    return Status(current, head)
