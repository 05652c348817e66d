"""Liveness and readiness, as Kubernetes and `make run` probe them."""

from __future__ import annotations

import asyncio
import time

import redis.exceptions
from litestar import Response, get
from litestar.datastructures import State

from .auth import PUBLIC


@get("/healthz", sync_to_thread=False, tags=["health"], opt=PUBLIC)
def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@get("/readyz", tags=["health"], opt=PUBLIC)
async def readyz(state: State) -> Response[dict[str, object]]:
    """Ready to serve chat: Redis answers and at least one inference worker has a fresh heartbeat."""
    try:
        async with asyncio.timeout(1.0):
            await state.redis.ping()
            alive = await state.redis.zcount(state.redis_keys.workers, time.time() - state.settings.chat.worker_stale_s, "+inf")
    except (redis.exceptions.RedisError, TimeoutError, OSError) as exc:
        return Response({"status": "not_ready", "redis": "down", "error": str(exc) or type(exc).__name__}, status_code=503)
    if alive == 0 and not state.settings.chat.ready_without_workers:
        return Response({"status": "not_ready", "redis": "up", "workers": 0, "error": "no inference worker is alive"}, status_code=503)
    return Response({"status": "ready", "redis": "up", "workers": alive})
