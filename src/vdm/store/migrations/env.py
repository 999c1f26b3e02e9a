"""Alembic environment: vdm always hands in a live connection (see vdm.store.migrate)."""

from __future__ import annotations

from alembic import context

from vdm.store.schema import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table="vdm_alembic_version",
    version_table_schema=context.config.attributes.get("schema"),
)
with context.begin_transaction():
    context.run_migrations()
