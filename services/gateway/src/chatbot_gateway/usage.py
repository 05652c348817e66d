"""`/api/v1/usage` and `/api/v1/requests/{id}/log`: what the log collector recorded, scoped to the key's owner."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Any

from litestar import Request, Response, get
from litestar.datastructures import State
from litestar.params import FromPath, FromQuery, QueryParameter
from litestar.response import Stream

from chatbot_contracts.usage import ExportFormat, Granularity, GroupBy, RequestLog, UsageReport

from .auth import Principal

TAGS = ["usage"]
From = Annotated[str | None, QueryParameter(name="from", description="ISO 8601 time or Unix seconds (default: `to` minus a day)")]
To = Annotated[str | None, QueryParameter(name="to", description="ISO 8601 time or Unix seconds, exclusive (default: now)")]
Owner = Annotated[
    str | None, QueryParameter(description="Admin only: one owner's usage (default: everyone's); others always see their own")
]


def _json(response: Any) -> Response[Any]:
    return Response(content=response.content, status_code=response.status_code, media_type="application/json")


@get("/api/v1/usage", tags=TAGS)
async def usage(
    request: Request[Principal, Any, Any],
    state: State,
    start: From = None,
    end: To = None,
    group_by: FromQuery[GroupBy] = "model",
    granularity: FromQuery[Granularity] = "hour",
    owner: Owner = None,
) -> Response[UsageReport]:
    """Requests, errors, tokens, cost and latency per time bucket, grouped by model, provider, key or owner."""
    params = {"from": start, "to": end, "group_by": group_by, "granularity": granularity, "owner": owner}
    return _json(await state.usage.call(request.user, "GET", "/usage", params=params))


@get("/api/v1/usage/export", tags=TAGS)
async def export_usage(
    request: Request[Principal, Any, Any],
    state: State,
    start: From = None,
    end: To = None,
    format: FromQuery[ExportFormat] = "jsonl",
    owner: Owner = None,
) -> Stream:
    """Every recorded event of the range, oldest first, as JSON lines or CSV (for offline analysis)."""
    params = {"from": start, "to": end, "format": format, "owner": owner}
    response = await state.usage.open(request.user, "/usage/export", params)

    async def body() -> AsyncIterator[bytes]:
        try:
            async for chunk in response.aiter_raw():
                yield chunk
        finally:
            await response.aclose()

    headers = {name: response.headers[name] for name in ("content-disposition",) if name in response.headers}
    return Stream(body(), media_type=response.headers.get("content-type", "application/octet-stream"), headers=headers)


@get("/api/v1/requests/{request_id:str}/log", tags=["requests"])
async def request_log(request: Request[Principal, Any, Any], state: State, request_id: FromPath[str]) -> Response[RequestLog]:
    """Every recorded event of one of your requests (queued, started, first token, how it ended), for debugging a turn."""
    return _json(await state.usage.call(request.user, "GET", f"/requests/{request_id}/log"))


ROUTES = [usage, export_usage, request_log]
