"""Liveness and readiness, as Kubernetes and `make run` probe them."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import redis.exceptions
from litestar import Request, Response, get
from litestar.datastructures import State

from .auth import PUBLIC, Principal, presented_key


@get("/healthz", sync_to_thread=False, tags=["health"], opt=PUBLIC)
def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@get("/readyz", tags=["health"], opt=PUBLIC)
async def readyz(request: Request[Any, Any, Any], state: State) -> Response[dict[str, object]]:
    """Ready to serve chat: Redis answers and at least one inference worker has a fresh heartbeat.

    Anyone sees the status; why it is not ready (Redis's own error, the worker count) only a caller with the admin key.
    """
    secret = presented_key(request)
    known = state.key_store.known(secret) if secret else None
    detailed = isinstance(known, Principal) and known.is_admin
    try:
        async with asyncio.timeout(1.0):
            await state.redis.ping()
            alive = await state.redis.zcount(state.redis_keys.workers, time.time() - state.settings.chat.worker_stale_s, "+inf")
    except (redis.exceptions.RedisError, TimeoutError, OSError) as exc:
        details: dict[str, object] = {"redis": "down", "error": str(exc) or type(exc).__name__}
        return Response({"status": "not_ready", **(details if detailed else {})}, status_code=503)
    if alive == 0 and not state.settings.chat.ready_without_workers:
        details = {"redis": "up", "workers": 0, "error": "no inference worker is alive"}
        return Response({"status": "not_ready", **(details if detailed else {})}, status_code=503)
    return Response({"status": "ready", **({"redis": "up", "workers": alive} if detailed else {})})
