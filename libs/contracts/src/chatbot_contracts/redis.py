"""How every service connects to Redis: one pooled client, quick to notice that Redis is gone."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import msgspec
import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff


class RedisSettings(msgspec.Struct, kw_only=True, frozen=True):
    """Where Redis is and how the platform's names are placed in it."""

    url: str = msgspec.field(name="REDIS_URL", default="redis://127.0.0.1:6379/0")
    """`REDIS_URL`: the Redis server (redis://, rediss://, or unix:// for a local socket)."""
    redis_namespace: str = ""
    """`CHATBOT_REDIS_NAMESPACE`: a prefix for every key, so deployments can share one Redis."""
    redis_max_connections: int = 2048
    """`CHATBOT_REDIS_MAX_CONNECTIONS`: the size of the connection pool (opened as needed; callers past it wait)."""
    redis_connect_timeout_s: float = 0.5
    """`CHATBOT_REDIS_CONNECT_TIMEOUT_S`: how long to wait for a connection before reporting Redis down."""
    redis_socket_timeout_s: float = 30.0
    """`CHATBOT_REDIS_SOCKET_TIMEOUT_S`: longest wait for a reply; above the longest blocking read (5 s)."""


def connect(settings: RedisSettings, *, timed_replies: bool = True) -> aioredis.Redis:
    """A client over a blocking pool: callers wait for a free connection instead of failing.

    Each reply is awaited for at most the socket timeout; without `timed_replies`, for a caller
    that times its whole round itself (`round_trip` with `within_s`), none is: redis-py's timer
    per reply was about a third of a pipeline's CPU.

    A command on a connection that Redis dropped (it restarted) is retried once on a new one,
    at once: a Redis that is really gone surfaces within the connect timeout, not after a
    backoff series. The retry belongs to the pool's connections (the client's own is ignored
    when a pool is given).
    """
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.url,
        max_connections=settings.redis_max_connections,
        timeout=10,
        socket_connect_timeout=settings.redis_connect_timeout_s,
        socket_timeout=settings.redis_socket_timeout_s if timed_replies else None,
        **({} if settings.url.startswith("unix:") else {"socket_keepalive": True}),
        health_check_interval=30,
        retry=Retry(NoBackoff(), 1),
        retry_on_error=[redis.exceptions.ConnectionError, redis.exceptions.TimeoutError],
    )
    return aioredis.Redis(connection_pool=pool)


async def round_trip(client: aioredis.Redis, commands: Sequence[Sequence[Any]], within_s: float | None = None) -> list[Any]:
    """Sends `commands` in one pipeline (no transaction) and returns their replies in order, a refused command's as its
    `ResponseError`. A pipeline whose connection failed is sent again once on a fresh connection (the pool's retry
    rule). With `within_s`, the round (its retry included) fails with `TimeoutError` past that long, and the
    connection it was on is closed; otherwise the client's socket timeout bounds each reply.

    A command named in bytes (`b"XADD"`) gets Redis's reply as it is; named in text, redis-py's reply callback
    converts it (`"SET"` -> `True`)."""
    pipeline = client.pipeline(transaction=False)
    for command in commands:
        pipeline.execute_command(*command)
    try:
        async with asyncio.timeout(within_s):
            replies: list[Any] = await pipeline.execute(raise_on_error=False)
    except TimeoutError as exc:
        raise redis.exceptions.TimeoutError(f"no reply from Redis within {within_s} s") from exc
    return replies
