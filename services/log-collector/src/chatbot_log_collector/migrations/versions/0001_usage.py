"""The event table and the per-minute aggregates.

Revision ID: l0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "l0001"
down_revision = None
branch_labels = None
depends_on = None

BigInt = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
KEY = ("minute", "model", "provider", "key_id", "owner")
BUCKETS = 11
COUNTERS = (
    "requests", "completed", "failed", "cancelled", "retries", "fallbacks", "input_tokens", "output_tokens", "cached_tokens",
    "cost_micros", "ttft_count", "ttft_sum_ms", *(f"ttft_b{i}" for i in range(BUCKETS)),
    "duration_count", "duration_sum_ms", *(f"duration_b{i}" for i in range(BUCKETS)),
)  # fmt: skip


def _key_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("minute", sa.BigInteger, nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("provider", sa.String(40), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("owner", sa.String(200), nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "usage_events",
        sa.Column("id", BigInt, primary_key=True, autoincrement=True),
        sa.Column("entry_id", sa.String(40), nullable=False),
        sa.Column("request_id", sa.String(64), nullable=False),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("at_us", sa.BigInteger, nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("provider", sa.String(40), nullable=False),
        sa.Column("upstream_model", sa.String(200), nullable=False),
        sa.Column("owner", sa.String(200), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("conversation_id", sa.String(64)),
        sa.Column("purpose", sa.String(16), nullable=False),
        sa.Column("input_tokens", sa.Integer, nullable=False),
        sa.Column("output_tokens", sa.Integer, nullable=False),
        sa.Column("cached_tokens", sa.Integer, nullable=False),
        sa.Column("cost_micros", sa.BigInteger, nullable=False),
        sa.Column("estimated", sa.Boolean, nullable=False),
        sa.Column("queue_wait_ms", sa.Float),
        sa.Column("ttft_ms", sa.Float),
        sa.Column("duration_ms", sa.Float),
        sa.Column("retries", sa.Integer, nullable=False),
        sa.Column("fallbacks", sa.Integer, nullable=False),
        sa.Column("code", sa.String(40)),
        sa.Column("finish_reason", sa.String(20)),
        sa.Column("error", sa.Text),
        sa.Column("trace_id", sa.String(32)),
        sa.UniqueConstraint("request_id", "type", "attempt", "at_us", name="uq_usage_events_natural"),
    )
    op.create_index("ix_usage_events_at", "usage_events", ["at_us"])
    op.create_index("ix_usage_events_owner_at", "usage_events", ["owner", "at_us"])
    op.create_table(
        "usage_minutes",
        *_key_columns(),
        *(sa.Column(name, sa.BigInteger, nullable=False, server_default="0") for name in COUNTERS),
        sa.PrimaryKeyConstraint(*KEY, name="pk_usage_minutes"),
    )
    op.create_index("ix_usage_minutes_owner", "usage_minutes", ["owner", "minute"])
    op.create_table(
        "usage_minute_errors",
        *_key_columns(),
        sa.Column("code", sa.String(40), nullable=False),
        sa.Column("count", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint(*KEY, "code", name="pk_usage_minute_errors"),
    )


def downgrade() -> None:
    op.drop_table("usage_minute_errors")
    op.drop_index("ix_usage_minutes_owner", table_name="usage_minutes")
    op.drop_table("usage_minutes")
    op.drop_index("ix_usage_events_owner_at", table_name="usage_events")
    op.drop_index("ix_usage_events_at", table_name="usage_events")
    op.drop_table("usage_events")
