"""The usage API's bodies: what the log collector answers and the gateway passes on (`/api/v1/usage`, `/api/v1/requests/{id}/log`)."""

from __future__ import annotations

from typing import Literal

import msgspec

GroupBy = Literal["model", "provider", "key", "owner"]
Granularity = Literal["minute", "hour", "day"]
ExportFormat = Literal["jsonl", "csv"]


class Latency(msgspec.Struct, kw_only=True):
    """A latency distribution; quantiles are interpolated within fixed buckets (0.1 s … 120 s), like Prometheus's."""

    count: int
    mean_ms: float | None
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None


class UsageTotals(msgspec.Struct, kw_only=True):
    requests: int
    """Generations that ended (completed + failed + cancelled)."""
    completed: int
    failed: int
    cancelled: int
    errors: dict[str, int]
    """Failed generations by error class (`rate_limited`, `timeout`, …)."""
    retries: int
    fallbacks: int
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    cost_usd: float
    cache_hits: int = 0
    """Requests answered from the response cache (counted in `requests`, at no cost)."""
    time_to_first_token: Latency
    duration: Latency


class UsageBucket(UsageTotals, kw_only=True):
    start: str
    """The bucket's first instant (ISO 8601, UTC)."""
    group: str
    """The model alias, provider, key id or owner the bucket sums."""


class UsageReport(msgspec.Struct, kw_only=True):
    start: str
    end: str
    group_by: GroupBy
    granularity: Granularity
    data: list[UsageBucket]
    totals: UsageTotals


class LoggedEvent(msgspec.Struct, kw_only=True):
    """One stored inference event (also one line of the export)."""

    at: float
    """Unix time in seconds."""
    request_id: str
    type: str
    attempt: int
    model: str
    provider: str
    upstream_model: str
    owner: str
    key_id: str
    conversation_id: str | None
    purpose: str
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    cost_usd: float
    estimated: bool
    queue_wait_ms: float | None
    ttft_ms: float | None
    duration_ms: float | None
    retries: int
    fallbacks: int
    code: str | None
    finish_reason: str | None
    error: str | None
    trace_id: str | None
    deployment: str | None = None
    """The alias's deployment that was called, when it has several."""
    route: str | None = None
    """Why that deployment: the routing strategy, and the deployments left out with their reasons."""
    cache: str | None = None
    """`hit`: answered from the response cache, at no cost; `miss`: generated, then cached."""


class RequestLog(msgspec.Struct, kw_only=True):
    request_id: str
    events: list[LoggedEvent]
