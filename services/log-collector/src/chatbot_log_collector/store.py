"""The event table and its per-minute aggregates.

Every `inference.events` entry becomes one row of `usage_events`, once: the row's natural key
(request, event type, attempt, time of the event) is unique, so a redelivered entry, or an
entry written twice by a producer that retried, inserts nothing. Only the rows that were new
are added into `usage_minutes` (and `usage_minute_errors`), in the same transaction, which is
what keeps the aggregates exact.

Money is kept in integer micro-dollars and latencies as counts per fixed bucket, so sums and
merges never round.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from chatbot_contracts import AnyInferenceEvent, Cancelled, Completed, Failed, FirstToken, GenerationStarted
from chatbot_contracts.database import open_engine, upgrade
from chatbot_contracts.tracing import trace_id_of
from chatbot_contracts.usage import Granularity, GroupBy

from .table import (
    AGGREGATE_KEY,
    COUNTERS,
    DURATION_BUCKETS,
    LATENCY_BOUNDS_S,
    TTFT_BUCKETS,
    usage_events,
    usage_minute_errors,
    usage_minutes,
)

MIGRATIONS = Path(__file__).with_name("migrations")
GRANULARITY_S: dict[str, int] = {"minute": 60, "hour": 3600, "day": 86400}
GROUP_COLUMN: dict[str, str] = {"model": "model", "provider": "provider", "key": "key_id", "owner": "owner"}
EXACT_UP_TO = 10_000
"""A usage report over at most this many answers reports exact latency quantiles, read from the raw events; a larger one
interpolates within the aggregates' histogram buckets."""
MAX_BUCKETS = 20_000
"""The most time buckets one usage query may return (a year by hour, two weeks by minute)."""
EXPORT_PAGE = 1000
EXPORTED = (
    "at", "request_id", "type", "attempt", "model", "provider", "upstream_model", "owner", "key_id", "conversation_id", "purpose",
    "input_tokens", "output_tokens", "cached_tokens", "cost_usd", "estimated", "queue_wait_ms", "ttft_ms", "duration_ms",
    "retries", "fallbacks", "code", "finish_reason", "error", "trace_id", "deployment", "route", "cache",
)  # fmt: skip
"""The fields of one exported or logged event, in order (the CSV header)."""


ROW_COLUMNS = tuple(column.name for column in usage_events.columns if column.name != "id")
"""The columns of an event's row (`_row`'s keys): all but the table's own id."""


class _StoredBefore(Exception):
    """Some of a batch's rows were stored already (a redelivered batch): its transaction is rolled back."""


def _micros(usd: float) -> int:
    return round(usd * 1_000_000)


def _row(entry_id: str, event: AnyInferenceEvent) -> dict[str, Any]:
    """The `usage_events` row of one event."""
    row: dict[str, Any] = {
        "entry_id": entry_id, "request_id": event.request_id, "type": type(event).__struct_config__.tag, "attempt": event.attempt,
        "at_us": round(event.at * 1_000_000), "model": event.model, "provider": event.provider, "upstream_model": event.upstream_model,
        "owner": event.owner, "key_id": event.key_id, "conversation_id": event.conversation_id, "purpose": event.purpose,
        "input_tokens": 0, "output_tokens": 0, "cached_tokens": 0, "cost_micros": 0, "estimated": False,
        "queue_wait_ms": None, "ttft_ms": None, "duration_ms": None, "retries": 0, "fallbacks": 0,
        "code": None, "finish_reason": None, "error": None, "trace_id": trace_id_of(event.traceparent),
        "deployment": event.deployment, "route": event.route, "cache": event.cache,
    }  # fmt: skip
    match event:
        case GenerationStarted():
            row["queue_wait_ms"] = event.queue_wait_s * 1000
        case FirstToken():
            row["ttft_ms"] = event.ttft_s * 1000
        case Completed() | Failed() | Cancelled():
            row.update(retries=event.retries, fallbacks=event.fallbacks, duration_ms=event.duration_s * 1000)
            if event.usage is not None:
                row.update(
                    input_tokens=event.usage.input_tokens, output_tokens=event.usage.output_tokens,
                    cached_tokens=event.usage.cached_tokens, cost_micros=_micros(event.usage.cost_usd), estimated=event.usage.estimated,
                )  # fmt: skip
            if isinstance(event, Completed):
                row.update(finish_reason=event.finish_reason, ttft_ms=None if event.ttft_s is None else event.ttft_s * 1000)
            elif isinstance(event, Failed):
                row.update(code=event.code, error=event.message[:2000])
        case _:
            pass
    return row


def _bucket(seconds: float) -> int:
    """The histogram bucket of a latency: the first bound it does not exceed, or the overflow bucket."""
    return bisect.bisect_left(LATENCY_BOUNDS_S, seconds)


def _aggregate(rows: Iterable[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The per-minute deltas of the terminal events among `rows`: counters, and errors by class."""
    minutes: dict[tuple[Any, ...], dict[str, Any]] = {}
    errors: dict[tuple[Any, ...], int] = {}
    for row in rows:
        if row["type"] not in ("completed", "failed", "cancelled"):
            continue
        key = (row["at_us"] // 60_000_000 * 60, row["model"], row["provider"], row["key_id"], row["owner"])
        total = minutes.setdefault(key, dict(zip(AGGREGATE_KEY, key, strict=True)) | dict.fromkeys(COUNTERS, 0))
        total["requests"] += 1
        total[row["type"]] += 1
        total["cache_hits"] += row["cache"] == "hit"
        for name in ("retries", "fallbacks", "input_tokens", "output_tokens", "cached_tokens", "cost_micros"):
            total[name] += row[name]
        if row["ttft_ms"] is not None:
            total["ttft_count"] += 1
            total["ttft_sum_ms"] += round(row["ttft_ms"])
            total[TTFT_BUCKETS[_bucket(row["ttft_ms"] / 1000)]] += 1
        total["duration_count"] += 1
        total["duration_sum_ms"] += round(row["duration_ms"])
        total[DURATION_BUCKETS[_bucket(row["duration_ms"] / 1000)]] += 1
        if row["type"] == "failed":
            errors[(*key, row["code"])] = errors.get((*key, row["code"]), 0) + 1
    error_rows = [dict(zip((*AGGREGATE_KEY, "code"), key, strict=True)) | {"count": n} for key, n in sorted(errors.items())]
    return [minutes[key] for key in sorted(minutes)], error_rows


def quantile(q: float, counts: Sequence[int]) -> float | None:
    """The `q` quantile (seconds) of a latency histogram, interpolated within its bucket like Prometheus does."""
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for i, count in enumerate(counts):
        if count and seen + count >= rank:
            lower = LATENCY_BOUNDS_S[i - 1] if i > 0 else 0.0
            if i == len(LATENCY_BOUNDS_S):
                return lower  # the overflow bucket has no upper bound
            return lower + (LATENCY_BOUNDS_S[i] - lower) * (rank - seen) / count
        seen += count
    return LATENCY_BOUNDS_S[-1]


def exact_quantile(q: float, values: Sequence[float]) -> float | None:
    """The `q` quantile of `values` (sorted), interpolated linearly between the two nearest ranks."""
    if not values:
        return None
    position = q * (len(values) - 1)
    low = int(position)
    high = min(low + 1, len(values) - 1)
    return values[low] + (values[high] - values[low]) * (position - low)


@dataclass
class UsageGroup:
    """The sums of one time bucket and group."""

    start: int
    group: str
    counters: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    ttft_ms: list[float] | None = None
    """Every time to first token of the group (sorted), when the report is small enough to read them: exact quantiles."""
    duration_ms: list[float] | None = None


class EventStore:
    """The collector's database: records batches of events, answers usage and log queries."""

    def __init__(self, url: str) -> None:
        self.engine: AsyncEngine = open_engine(url)
        insert = postgresql.insert if self.engine.dialect.name == "postgresql" else sqlite.insert
        # The statements are built once, so SQLAlchemy caches their compiled form, where a multi-row `.values(rows)` was compiled anew for
        # every batch (a fifth of the collector's CPU at load). On SQLite the rows' INSERT is executed with a list of
        # rows (executemany); on PostgreSQL a batch is one statement with one array per column (`INSERT … SELECT
        # unnest(…), …`), its parameters processed once a batch, not once a row. RETURNING says which rows were new.
        natural = (usage_events.c.request_id, usage_events.c.type, usage_events.c.attempt, usage_events.c.at_us)
        self._by_column = self.engine.dialect.name == "postgresql"
        added = insert(usage_events)
        if self._by_column:
            arrays = (sa.func.unnest(sa.bindparam(name, type_=postgresql.ARRAY(usage_events.c[name].type))) for name in ROW_COLUMNS)
            added = added.from_select(list(ROW_COLUMNS), sa.select(*arrays))
        self._add_events = added.on_conflict_do_nothing(index_elements=list(natural)).returning(*natural)
        # Where the driver counts the rows an executemany inserted (SQLite's does), a batch goes first as the same
        # INSERT without RETURNING, compiled once and run by the driver for each row (`exec_driver_sql`): none of
        # SQLAlchemy's work per row's parameters, which was a third of `record`'s CPU (`bench/README.md`, Round 20).
        # When every row was new, as nearly always, that is all; when some were not, the batch is stored again
        # with RETURNING, which says which.
        self._add_new_events: tuple[str, tuple[str, ...]] | None = None
        if self.engine.dialect.supports_sane_multi_rowcount and self.engine.dialect.positional:
            plain = insert(usage_events).on_conflict_do_nothing(index_elements=list(natural))
            compiled = plain.compile(dialect=self.engine.dialect, column_keys=list(ROW_COLUMNS))
            self._add_new_events = (compiled.string, tuple(compiled.positiontup or ()))
        minutes = insert(usage_minutes)
        self._add_minutes = minutes.on_conflict_do_update(
            index_elements=list(AGGREGATE_KEY), set_={name: usage_minutes.c[name] + minutes.excluded[name] for name in COUNTERS}
        )
        errors = insert(usage_minute_errors)
        self._add_errors = errors.on_conflict_do_update(
            index_elements=[*AGGREGATE_KEY, "code"], set_={"count": usage_minute_errors.c.count + errors.excluded["count"]}
        )

    async def migrate(self) -> None:
        async with self.engine.begin() as connection:
            await connection.run_sync(upgrade, MIGRATIONS)

    async def close(self) -> None:
        await self.engine.dispose()

    async def record(self, events: Sequence[tuple[str, AnyInferenceEvent]]) -> int:
        """Store a batch of `(entry id, event)`; returns how many were new. All or nothing: one transaction."""
        if not events:
            return 0
        rows = [_row(entry_id, event) for entry_id, event in events]
        if self._add_new_events is not None:
            statement, order = self._add_new_events
            try:
                async with self.engine.begin() as connection:
                    inserted = await connection.exec_driver_sql(statement, [tuple(row[name] for name in order) for row in rows])
                    if inserted.rowcount != len(rows):
                        raise _StoredBefore
                    await self._add_up(connection, rows)
                return len(rows)
            except _StoredBefore:
                pass
        async with self.engine.begin() as connection:
            batch = {name: [row[name] for row in rows] for name in ROW_COLUMNS} if self._by_column else rows
            new = {tuple(key) for key in (await connection.execute(self._add_events, batch)).all()}
            fresh: dict[tuple[Any, ...], dict[str, Any]] = {}
            for row in rows:
                key = (row["request_id"], row["type"], row["attempt"], row["at_us"])
                if key in new:
                    fresh.setdefault(key, row)  # twice in one batch: once
            await self._add_up(connection, fresh.values())
        return len(fresh)

    async def _add_up(self, connection: Any, new_rows: Iterable[dict[str, Any]]) -> None:
        """Add the terminal events among `new_rows` (each stored just now) into the per-minute aggregates."""
        minutes, errors = _aggregate(new_rows)
        if minutes:
            await connection.execute(self._add_minutes, minutes)
        if errors:
            await connection.execute(self._add_errors, errors)

    async def usage(self, start_s: int, end_s: int, group_by: GroupBy, granularity: Granularity, owner: str | None) -> list[UsageGroup]:
        """Sums per time bucket and group over `[start_s, end_s)`, of one owner or (None) everyone."""
        size = GRANULARITY_S[granularity]
        column = GROUP_COLUMN[group_by]
        groups: dict[tuple[int, str], UsageGroup] = {}

        def scoped(table: sa.Table, *selected: Any) -> sa.Select[Any]:
            bucket = (table.c.minute - table.c.minute % size).label("bucket")
            query = sa.select(bucket, table.c[column].label("grp"), *selected).where(table.c.minute >= start_s, table.c.minute < end_s)
            if owner is not None:
                query = query.where(table.c.owner == owner)
            return query.group_by(bucket, table.c[column])

        async with self.engine.connect() as connection:
            await self._timings(connection, groups, start_s, end_s, size, column, owner)
            sums = [sa.func.sum(usage_minutes.c[name]).label(name) for name in COUNTERS]
            for row in (await connection.execute(scoped(usage_minutes, *sums))).mappings():
                group = groups.setdefault((row["bucket"], row["grp"]), UsageGroup(start=row["bucket"], group=row["grp"]))
                group.counters = {name: int(row[name] or 0) for name in COUNTERS}
            counted = scoped(usage_minute_errors, usage_minute_errors.c.code, sa.func.sum(usage_minute_errors.c.count).label("n"))
            for row in (await connection.execute(counted.group_by(usage_minute_errors.c.code))).mappings():
                group = groups.setdefault((row["bucket"], row["grp"]), UsageGroup(start=row["bucket"], group=row["grp"]))
                group.errors[row["code"]] = int(row["n"])
        for group in groups.values():
            # Raw events are kept for less time than the aggregates: exact only where they account for every count.
            if group.ttft_ms is not None and len(group.ttft_ms) != group.counters.get("ttft_count", 0):
                group.ttft_ms = None
            if group.duration_ms is not None and len(group.duration_ms) != group.counters.get("duration_count", 0):
                group.duration_ms = None
        return [groups[key] for key in sorted(groups)]

    async def _timings(
        self,
        connection: Any,
        groups: dict[tuple[int, str], UsageGroup],
        start_s: int,
        end_s: int,
        size: int,
        column: str,
        owner: str | None,
    ) -> None:
        """The raw timings of a report with at most `EXACT_UP_TO` terminal events, into its groups (none past that)."""
        first, last = -(-start_s // 60) * 60, -(-end_s // 60) * 60  # the events whose minute lies in [start_s, end_s)
        query = sa.select(
            usage_events.c.at_us, usage_events.c[column].label("grp"), usage_events.c.ttft_ms, usage_events.c.duration_ms
        ).where(
            usage_events.c.type.in_(("completed", "failed", "cancelled")),
            usage_events.c.at_us >= first * 1_000_000,
            usage_events.c.at_us < last * 1_000_000,
        )
        if owner is not None:
            query = query.where(usage_events.c.owner == owner)
        rows = (await connection.execute(query.limit(EXACT_UP_TO + 1))).all()
        if len(rows) > EXACT_UP_TO:
            return
        for at_us, grp, ttft_ms, duration_ms in rows:
            minute = at_us // 60_000_000 * 60
            group = groups.setdefault((minute - minute % size, grp), UsageGroup(start=minute - minute % size, group=grp))
            group.ttft_ms = group.ttft_ms if group.ttft_ms is not None else []
            group.duration_ms = group.duration_ms if group.duration_ms is not None else []
            if ttft_ms is not None:
                group.ttft_ms.append(float(ttft_ms))
            if duration_ms is not None:
                group.duration_ms.append(float(duration_ms))
        for group in groups.values():
            group.ttft_ms = sorted(group.ttft_ms) if group.ttft_ms is not None else []
            group.duration_ms = sorted(group.duration_ms) if group.duration_ms is not None else []

    async def request_log(self, request_id: str, owner: str | None) -> list[dict[str, Any]]:
        """Every stored event of one request, in order (empty: none, or not `owner`'s)."""
        query = sa.select(usage_events).where(usage_events.c.request_id == request_id)
        if owner is not None:
            query = query.where(usage_events.c.owner == owner)
        async with self.engine.connect() as connection:
            rows = (await connection.execute(query.order_by(usage_events.c.at_us, usage_events.c.id))).mappings().all()
        return [exported(row) for row in rows]

    async def export(self, start_s: int, end_s: int, owner: str | None) -> AsyncIterator[list[dict[str, Any]]]:
        """The events of `[start_s, end_s)` in pages, oldest first (keyset pagination: memory stays flat)."""
        after = 0
        while True:
            query = sa.select(usage_events).where(
                usage_events.c.id > after, usage_events.c.at_us >= start_s * 1_000_000, usage_events.c.at_us < end_s * 1_000_000
            )
            if owner is not None:
                query = query.where(usage_events.c.owner == owner)
            async with self.engine.connect() as connection:
                rows = (await connection.execute(query.order_by(usage_events.c.id).limit(EXPORT_PAGE))).mappings().all()
            if not rows:
                return
            yield [exported(row) for row in rows]
            after = rows[-1]["id"]

    async def forget(self, events_before_s: float, aggregates_before_s: float) -> tuple[int, int]:
        """Delete events and aggregates older than the retention limits; returns how many rows of each went."""
        async with self.engine.begin() as connection:
            events = await connection.execute(sa.delete(usage_events).where(usage_events.c.at_us < int(events_before_s * 1_000_000)))
            minutes = 0
            for table in (usage_minutes, usage_minute_errors):
                minutes += (await connection.execute(sa.delete(table).where(table.c.minute < int(aggregates_before_s)))).rowcount
        return events.rowcount, minutes


def exported(row: Any) -> dict[str, Any]:
    """One event as the usage API shows it: times in seconds since the epoch and cost in dollars."""
    out = {name: row[name] for name in EXPORTED if name in row}
    out["at"] = row["at_us"] / 1_000_000
    out["cost_usd"] = row["cost_micros"] / 1_000_000
    out["estimated"] = bool(row["estimated"])
    return {name: out.get(name) for name in EXPORTED}


def now_s() -> int:
    return int(time.time())
