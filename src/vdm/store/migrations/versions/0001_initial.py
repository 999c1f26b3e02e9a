"""projects, tokens, audit events, revision counter

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "vdm_projects",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("is_active", sa.Boolean, nullable=False),
        sa.Column("credentials", sa.JSON, nullable=False),
        sa.Column("deactivated_at", _TS),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
    )
    op.create_table(
        "vdm_tokens",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column(
            "project_id",
            sa.String(36),
            sa.ForeignKey("vdm_projects.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("hint", sa.String(32), nullable=False),
        sa.Column("name", sa.String(200)),
        sa.Column("is_active", sa.Boolean, nullable=False),
        sa.Column("expires_at", _TS),
        sa.Column("max_requests", sa.Integer),
        sa.Column("rpm", sa.Integer),
        sa.Column("tpm", sa.Integer),
        sa.Column("allowed_models", sa.JSON),
        sa.Column("allowed_providers", sa.JSON),
        sa.Column("request_count", sa.Integer, nullable=False),
        sa.Column("cache_hit_count", sa.Integer, nullable=False),
        sa.Column("last_used_at", _TS),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("updated_at", _TS, nullable=False),
    )
    op.create_index("ix_vdm_tokens_project_id", "vdm_tokens", ["project_id"])
    op.create_table(
        "vdm_audit_events",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("ts", _TS, nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("action", sa.String(100), nullable=False),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("request_id", sa.String(128)),
        sa.Column("client_ip", sa.String(64)),
        sa.Column("project_id", sa.String(36)),
        sa.Column("token_id", sa.String(36)),
        sa.Column("target", sa.String(200)),
        sa.Column("details", sa.JSON),
    )
    op.create_index("ix_vdm_audit_ts", "vdm_audit_events", ["ts"])
    revision_table = op.create_table(
        "vdm_revision",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("value", sa.Integer, nullable=False),
    )
    op.bulk_insert(revision_table, [{"id": 1, "value": 0}])


def downgrade() -> None:
    op.drop_table("vdm_revision")
    op.drop_index("ix_vdm_audit_ts", "vdm_audit_events")
    op.drop_table("vdm_audit_events")
    op.drop_index("ix_vdm_tokens_project_id", "vdm_tokens")
    op.drop_table("vdm_tokens")
    op.drop_table("vdm_projects")
