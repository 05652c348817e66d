"""Which deployment of an alias served each event, why it was chosen, and the response cache's part in it (and the
answers the cache gave, per minute).

Revision ID: l0002
Revises: l0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "l0002"
down_revision = "l0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("usage_events") as table:
        table.add_column(sa.Column("deployment", sa.String(200)))
        table.add_column(sa.Column("route", sa.Text))
        table.add_column(sa.Column("cache", sa.String(8)))
    with op.batch_alter_table("usage_minutes") as table:
        table.add_column(sa.Column("cache_hits", sa.BigInteger, nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("usage_minutes") as table:
        table.drop_column("cache_hits")
    with op.batch_alter_table("usage_events") as table:
        table.drop_column("cache")
        table.drop_column("route")
        table.drop_column("deployment")
