"""budgets: max_budget_usd, budget_period, spend_usd and budget_started_at of
tokens and projects

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_TABLES = ("vdm_tokens", "vdm_projects")


def upgrade() -> None:
    for table in _TABLES:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("max_budget_usd", sa.Float, nullable=True))
            batch.add_column(sa.Column("budget_period", sa.String(16), nullable=True))
            batch.add_column(sa.Column("spend_usd", sa.Float, nullable=False, server_default="0"))
            batch.add_column(
                sa.Column("budget_started_at", sa.DateTime(timezone=True), nullable=True)
            )


def downgrade() -> None:
    for table in _TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("budget_started_at")
            batch.drop_column("spend_usd")
            batch.drop_column("budget_period")
            batch.drop_column("max_budget_usd")
