"""The API key table (only hashes of secrets are stored)."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("secret_sha256", sa.String(64), nullable=False, unique=True),
    sa.Column("prefix", sa.String(16), nullable=False),
    sa.Column("owner", sa.String(200), nullable=False, index=True),
    sa.Column("models", sa.JSON),
    sa.Column("rpm", sa.Integer),
    sa.Column("tpm", sa.Integer),
    sa.Column("budget_usd", sa.Float),
    sa.Column("budget_period", sa.String(8)),
    sa.Column("max_running", sa.Integer),
    sa.Column("max_streams", sa.Integer),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("revoked_at", sa.DateTime(timezone=True)),
)

owner_limits = sa.Table(
    "owner_limits",
    metadata,
    sa.Column("owner", sa.String(200), primary_key=True),
    sa.Column("rpm", sa.Integer),
    sa.Column("tpm", sa.Integer),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)
