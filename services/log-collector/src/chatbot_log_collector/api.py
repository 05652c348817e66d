"""The internal HTTP API, called by the gateway; the caller's identity comes in `x-chatbot-owner`/`x-chatbot-admin`."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, get
from litestar.datastructures import State
from litestar.params import FromPath, FromQuery, QueryParameter
from litestar.response import Stream

from chatbot_contracts.usage import (
    ExportFormat,
    Granularity,
    GroupBy,
    Latency,
    LoggedEvent,
    RequestLog,
    UsageBucket,
    UsageReport,
    UsageTotals,
)

from .store import EXPORTED, GRANULARITY_S, MAX_BUCKETS, EventStore, UsageGroup, exact_quantile, now_s, quantile
from .table import DURATION_BUCKETS, TTFT_BUCKETS

DAY_S = 86_400
LAST_INSTANT_S = 253_402_300_799
"""9999-12-31T23:59:59Z: the last instant a time may name."""
From = Annotated[str | None, QueryParameter(name="from", description="ISO 8601 time or Unix seconds (default: `to` minus a day)")]
To = Annotated[str | None, QueryParameter(name="to", description="ISO 8601 time or Unix seconds, exclusive (default: now)")]


class UsageError(Exception):
    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


def handle_error(_: Request[Any, Any, Any], exc: UsageError) -> Response[dict[str, Any]]:
    return Response({"error": {"message": exc.message, "type": "invalid_request_error", "code": exc.code}}, status_code=exc.status)


def _scope(request: Request[Any, Any, Any], owner: str | None) -> str | None:
    """Whose events the caller may see: its own, or (an admin) everyone's or the `owner` it names."""
    caller = request.headers.get("x-chatbot-owner")
    if not caller:
        raise UsageError(400, "x-chatbot-owner is missing: this API is the gateway's", "invalid_request")
    if request.headers.get("x-chatbot-admin") == "1":
        return owner
    return caller


def _instant(value: str | None, name: str, default: int) -> int:
    """Seconds since the epoch from ISO 8601 (UTC when it names no zone) or a number of seconds, within 1970-9999."""
    if value is None or not value.strip():
        return default
    try:
        seconds = float(value)
    except ValueError:
        try:
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise UsageError(400, f"`{name}`={value[:64]!r} is neither an ISO 8601 time nor Unix seconds", "invalid_time") from None
        seconds = (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
    if not 0 <= seconds <= LAST_INSTANT_S:  # also false for nan
        raise UsageError(400, f"`{name}`={value[:64]!r} is not a time between 1970 and 9999", "invalid_time")
    return int(seconds)


def _range(start: str | None, end: str | None, granularity: str | None = None) -> tuple[int, int]:
    """`[from, to)` in Unix seconds; with a granularity, bounded to `MAX_BUCKETS` buckets (an export pages instead)."""
    end_s = _instant(end, "to", now_s() + 60)
    start_s = _instant(start, "from", end_s - DAY_S)
    if start_s >= end_s:
        raise UsageError(400, f"`from` ({_iso(start_s)}) must be before `to` ({_iso(end_s)})", "invalid_time")
    if granularity is not None and (end_s - start_s) // GRANULARITY_S[granularity] > MAX_BUCKETS:
        raise UsageError(
            400, f"{granularity} buckets over this range would be more than {MAX_BUCKETS}: narrow it or use a coarser granularity",
            "range_too_large",
        )  # fmt: skip
    return start_s, end_s


def _iso(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def _latency(counts: Sequence[int], count: int, sum_ms: int, exact: Sequence[float] | None = None) -> Latency:
    """Quantiles from every timing when they were read (`exact`, sorted), else interpolated within the histogram's buckets."""

    def ms(q: float) -> float | None:
        if exact is not None:
            value = exact_quantile(q, exact)
            return None if value is None else round(value, 1)
        seconds = quantile(q, counts)
        return None if seconds is None else round(seconds * 1000, 1)

    return Latency(count=count, mean_ms=round(sum_ms / count, 1) if count else None, p50_ms=ms(0.5), p95_ms=ms(0.95), p99_ms=ms(0.99))


def _totals(
    counters: dict[str, int], errors: dict[str, int], ttft_ms: Sequence[float] | None = None, duration_ms: Sequence[float] | None = None
) -> dict[str, Any]:
    c = counters
    return {
        "requests": c.get("requests", 0), "completed": c.get("completed", 0), "failed": c.get("failed", 0),
        "cancelled": c.get("cancelled", 0), "errors": dict(sorted(errors.items())), "retries": c.get("retries", 0),
        "fallbacks": c.get("fallbacks", 0), "input_tokens": c.get("input_tokens", 0), "output_tokens": c.get("output_tokens", 0),
        "cached_tokens": c.get("cached_tokens", 0), "cost_usd": c.get("cost_micros", 0) / 1_000_000,
        "cache_hits": c.get("cache_hits", 0),
        "time_to_first_token": _latency([c.get(b, 0) for b in TTFT_BUCKETS], c.get("ttft_count", 0), c.get("ttft_sum_ms", 0), ttft_ms),
        "duration": _latency([c.get(b, 0) for b in DURATION_BUCKETS], c.get("duration_count", 0), c.get("duration_sum_ms", 0), duration_ms),
    }  # fmt: skip


def report(groups: list[UsageGroup], start_s: int, end_s: int, group_by: GroupBy, granularity: Granularity) -> UsageReport:
    """The usage API's answer: one bucket per time and group, and the sums over all of them."""
    counters: dict[str, int] = {}
    errors: dict[str, int] = {}
    for group in groups:
        for name, value in group.counters.items():
            counters[name] = counters.get(name, 0) + value
        for code, value in group.errors.items():
            errors[code] = errors.get(code, 0) + value
    data = [UsageBucket(start=_iso(g.start), group=g.group, **_totals(g.counters, g.errors, g.ttft_ms, g.duration_ms)) for g in groups]
    ttft = None if any(g.ttft_ms is None for g in groups) else sorted(v for g in groups for v in g.ttft_ms or ())
    duration = None if any(g.duration_ms is None for g in groups) else sorted(v for g in groups for v in g.duration_ms or ())
    return UsageReport(
        start=_iso(start_s), end=_iso(end_s), group_by=group_by, granularity=granularity, data=data,
        totals=UsageTotals(**_totals(counters, errors, ttft, duration)),
    )  # fmt: skip


@get("/internal/v1/usage")
async def usage(
    request: Request[Any, Any, Any],
    state: State,
    start: From = None,
    end: To = None,
    group_by: FromQuery[GroupBy] = "model",
    granularity: FromQuery[Granularity] = "hour",
    owner: FromQuery[str | None] = None,
) -> UsageReport:
    start_s, end_s = _range(start, end, granularity)
    store: EventStore = state.store
    groups = await store.usage(start_s, end_s, group_by, granularity, _scope(request, owner))
    return report(groups, start_s, end_s, group_by, granularity)


@get("/internal/v1/usage/export")
async def export(
    request: Request[Any, Any, Any],
    state: State,
    start: From = None,
    end: To = None,
    format: FromQuery[ExportFormat] = "jsonl",
    owner: FromQuery[str | None] = None,
) -> Stream:
    start_s, end_s = _range(start, end)
    store: EventStore = state.store
    pages = store.export(start_s, end_s, _scope(request, owner))

    async def jsonl() -> AsyncIterator[bytes]:
        async for page in pages:
            yield b"".join(msgspec.json.encode(row) + b"\n" for row in page)

    async def comma_separated() -> AsyncIterator[bytes]:
        yield (",".join(EXPORTED) + "\r\n").encode()
        async for page in pages:
            buffer = io.StringIO()
            csv.writer(buffer).writerows([[("" if row[name] is None else row[name]) for name in EXPORTED] for row in page])
            yield buffer.getvalue().encode()

    name = f"usage-{_iso(start_s)}-{_iso(end_s)}.{format}".replace(":", "")
    return Stream(
        jsonl() if format == "jsonl" else comma_separated(),
        media_type="application/x-ndjson" if format == "jsonl" else "text/csv; charset=utf-8",
        headers={"content-disposition": f'attachment; filename="{name}"'},
    )


@get("/internal/v1/requests/{request_id:str}/log")
async def request_log(request: Request[Any, Any, Any], state: State, request_id: FromPath[str]) -> RequestLog:
    store: EventStore = state.store
    rows = await store.request_log(request_id, _scope(request, None))
    if not rows:
        raise UsageError(404, f"no events of request {request_id} (unknown, not yours, or past the log's retention)", "not_found")
    return RequestLog(request_id=request_id, events=msgspec.convert(rows, list[LoggedEvent]))


ROUTES = [usage, export, request_log]
