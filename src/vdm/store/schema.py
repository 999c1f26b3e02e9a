"""The control plane's tables (SQLAlchemy Core), the one source the migrations follow.

Times are stored timezone-aware where the database can (PostgreSQL) and read
back as UTC everywhere (:func:`vdm.store.sql.utc`).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

projects = Table(
    "vdm_projects",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("is_active", Boolean, nullable=False, default=True),
    # provider -> stored credential ("fernet:…" when VDM_ENCRYPTION_KEY is set, else "plain:…")
    Column("credentials", JSON, nullable=False),
    Column("deactivated_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("max_budget_usd", Float),
    Column("budget_period", String(16)),
    Column("spend_usd", Float, nullable=False, default=0.0),
    Column("budget_started_at", DateTime(timezone=True)),
)

tokens = Table(
    "vdm_tokens",
    metadata,
    Column("id", String(36), primary_key=True),
    Column(
        "project_id",
        String(36),
        ForeignKey("vdm_projects.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("token_hash", String(64), nullable=False, unique=True),  # sha256 hex of the secret
    Column("hint", String(32), nullable=False),  # obfuscated form, for display
    Column("name", String(200)),
    Column("is_active", Boolean, nullable=False, default=True),
    Column("expires_at", DateTime(timezone=True)),
    Column("max_requests", Integer),
    Column("rpm", Integer),
    Column("tpm", Integer),
    Column("allowed_models", JSON),
    Column("allowed_providers", JSON),
    Column("request_count", Integer, nullable=False, default=0),
    Column("cache_hit_count", Integer, nullable=False, default=0),
    Column("last_used_at", DateTime(timezone=True)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("max_budget_usd", Float),
    Column("budget_period", String(16)),
    Column("spend_usd", Float, nullable=False, default=0.0),
    Column("budget_started_at", DateTime(timezone=True)),
)

audit_events = Table(
    "vdm_audit_events",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("ts", DateTime(timezone=True), nullable=False),
    Column("actor", String(200), nullable=False),
    Column("action", String(100), nullable=False),
    Column("outcome", String(20), nullable=False),
    Column("request_id", String(128)),
    Column("client_ip", String(64)),
    Column("project_id", String(36)),
    Column("token_id", String(36)),
    Column("target", String(200)),
    Column("details", JSON),
    Index("ix_vdm_audit_ts", "ts"),
)

# One row: a counter bumped by every change of a project or token, so other
# instances sharing the database know when to reload (no Redis needed).
revision = Table(
    "vdm_revision",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("value", Integer, nullable=False),
)

# One row per running gateway process with a control plane (a replica, a worker):
# the revision it has loaded and a beat it bumps every refresh interval, so a
# change can wait until every live instance has it (vdm.tenants.fleet).
instances = Table(
    "vdm_instances",
    metadata,
    Column("id", String(200), primary_key=True),
    Column("revision", Integer, nullable=False),
    Column("beat", Integer, nullable=False),
    Column("seen_at", Float, nullable=False),  # epoch seconds, by the instance's own clock
)

__all__ = ["Text", "audit_events", "instances", "metadata", "projects", "revision", "tokens"]
