"""A key's own bounds on running requests and open streams (null: the gateway's defaults).

Revision ID: g0003
Revises: g0002
"""

import sqlalchemy as sa
from alembic import op

revision = "g0003"
down_revision = "g0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as table:
        table.add_column(sa.Column("max_running", sa.Integer))
        table.add_column(sa.Column("max_streams", sa.Integer))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as table:
        table.drop_column("max_streams")
        table.drop_column("max_running")
