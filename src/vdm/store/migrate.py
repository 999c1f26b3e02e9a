"""Alembic migrations, run at start-up and by ``vdm db upgrade`` / ``vdm db status``.

The environment (``migrations/env.py``) is given the live connection, so the
same async engine the gateway uses runs them (``run_sync``), no second URL.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

VERSION_TABLE = "vdm_alembic_version"


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


async def upgrade(engine: AsyncEngine, schema: str | None = None) -> None:
    """Bring the schema to the newest revision (a no-op when it is there)."""
    cfg = _config(schema)
    async with engine.begin() as conn:
        if schema and engine.dialect.name == "postgresql":
            await conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))

        def run(sync_conn: Any) -> None:
            cfg.attributes["connection"] = sync_conn
            command.upgrade(cfg, "head")

        await conn.run_sync(run)


async def status(engine: AsyncEngine, schema: str | None = None) -> Status:
    head = ScriptDirectory.from_config(_config(schema)).get_current_head()
    assert head is not None
    async with engine.connect() as conn:

        def current(sync_conn: Any) -> str | None:
            ctx = MigrationContext.configure(
                sync_conn, opts={"version_table": VERSION_TABLE, "version_table_schema": schema}
            )
            return ctx.get_current_revision()

        return Status(await conn.run_sync(current), head)
