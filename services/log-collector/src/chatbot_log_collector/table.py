"""The log collector's tables (SQLAlchemy Core; the migrations create them)."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()
BigInt = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
"""64-bit on PostgreSQL; SQLite's INTEGER is 64-bit already and only it autoincrements a primary key."""

LATENCY_BOUNDS_S = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
"""Upper bounds of the latency histograms' buckets; one more bucket holds everything slower."""
TTFT_BUCKETS = tuple(f"ttft_b{i}" for i in range(len(LATENCY_BOUNDS_S) + 1))
DURATION_BUCKETS = tuple(f"duration_b{i}" for i in range(len(LATENCY_BOUNDS_S) + 1))
AGGREGATE_KEY = ("minute", "model", "provider", "key_id", "owner")
COUNTERS = (
    "requests", "completed", "failed", "cancelled", "retries", "fallbacks",
    "input_tokens", "output_tokens", "cached_tokens", "cost_micros",
    "ttft_count", "ttft_sum_ms", *TTFT_BUCKETS, "duration_count", "duration_sum_ms", *DURATION_BUCKETS, "cache_hits",
)  # fmt: skip
"""The columns of `usage_minutes` that are sums (an upsert adds to each)."""

usage_events = sa.Table(
    "usage_events",
    metadata,
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
    sa.Column("deployment", sa.String(200)),
    sa.Column("route", sa.Text),
    sa.Column("cache", sa.String(8)),
    sa.UniqueConstraint("request_id", "type", "attempt", "at_us", name="uq_usage_events_natural"),
    sa.Index("ix_usage_events_at", "at_us"),
    sa.Index("ix_usage_events_owner_at", "owner", "at_us"),
)


def _aggregate_key() -> list[sa.Column[object]]:
    """The columns an aggregate row is keyed by (each table gets its own Column objects)."""
    return [
        sa.Column("minute", sa.BigInteger, nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("provider", sa.String(40), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("owner", sa.String(200), nullable=False),
    ]


usage_minutes = sa.Table(
    "usage_minutes",
    metadata,
    *_aggregate_key(),
    *(sa.Column(name, sa.BigInteger, nullable=False, server_default="0") for name in COUNTERS),
    sa.PrimaryKeyConstraint(*AGGREGATE_KEY, name="pk_usage_minutes"),
    sa.Index("ix_usage_minutes_owner", "owner", "minute"),
)

usage_minute_errors = sa.Table(
    "usage_minute_errors",
    metadata,
    *_aggregate_key(),
    sa.Column("code", sa.String(40), nullable=False),
    sa.Column("count", sa.BigInteger, nullable=False),
    sa.PrimaryKeyConstraint(*AGGREGATE_KEY, "code", name="pk_usage_minute_errors"),
)
