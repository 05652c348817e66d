"""Recently read conversation trees, cached in Redis and dropped on every write to them.

The cache is only ever a shortcut: when Redis is away every read goes to the database, and no
write depends on it.
"""

from __future__ import annotations

import redis.asyncio as aioredis
import redis.exceptions
import structlog

log = structlog.get_logger()


class TreeCache:
    def __init__(self, redis: aioredis.Redis | None, namespace: str = "", ttl_s: int = 600) -> None:
        self._redis = redis
        self._namespace = namespace
        self._ttl_s = ttl_s

    def _key(self, conversation_id: str) -> str:
        return f"{self._namespace}conv.tree.{{{conversation_id}}}"

    async def load(self, conversation_id: str) -> tuple[str, bytes] | None:
        """`(owner, encoded conversation)` when cached."""
        if self._redis is None:
            return None
        try:
            held = await self._redis.hmget(self._key(conversation_id), "owner", "body")
        except redis.exceptions.RedisError as exc:
            log.warning("cache.unavailable", error=str(exc))
            return None
        owner, body = held
        if not isinstance(owner, bytes) or not isinstance(body, bytes):
            return None
        return owner.decode(), body

    async def store(self, conversation_id: str, owner: str, body: bytes) -> None:
        if self._redis is None:
            return
        try:
            pipe = self._redis.pipeline(transaction=True)
            pipe.hset(self._key(conversation_id), mapping={"owner": owner, "body": body})
            pipe.expire(self._key(conversation_id), self._ttl_s)
            await pipe.execute()
        except redis.exceptions.RedisError as exc:
            log.warning("cache.unavailable", error=str(exc))

    async def forget(self, conversation_id: str) -> None:
        if self._redis is None:
            return
        try:
            await self._redis.delete(self._key(conversation_id))
        except redis.exceptions.RedisError as exc:
            log.warning("cache.unavailable", error=str(exc))
