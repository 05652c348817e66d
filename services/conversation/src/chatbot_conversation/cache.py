"""Recently read conversation trees, cached in Redis and dropped on every write to them.

Every write bumps the conversation's version; a read stores what it found only if no write
happened since it began, so a slow read can never put an old tree back. The cache is only ever
a shortcut: when Redis is away every read goes to the database, and no write depends on it.
"""

from __future__ import annotations

import redis.asyncio as aioredis
import redis.exceptions
import structlog

log = structlog.get_logger()

# KEYS: tree, version. ARGV: owner, body, version seen before reading, ttl.
_STORE_IF_UNCHANGED = """
if (redis.call('GET', KEYS[2]) or '0') ~= ARGV[3] then return 0 end
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'body', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
"""


class TreeCache:
    def __init__(self, redis: aioredis.Redis | None, namespace: str = "", ttl_s: int = 600) -> None:
        self._redis = redis
        self._namespace = namespace
        self._ttl_s = ttl_s
        self._store = redis.register_script(_STORE_IF_UNCHANGED) if redis is not None else None

    @property
    def enabled(self) -> bool:
        return self._redis is not None

    def _keys(self, conversation_id: str) -> list[str]:
        tag = f"{{{conversation_id}}}"
        return [f"{self._namespace}conv.tree.{tag}", f"{self._namespace}conv.version.{tag}"]

    async def load(self, conversation_id: str) -> tuple[str | None, bytes | None, str]:
        """`(owner, encoded conversation, version)`: owner and body are None when not cached."""
        if self._redis is None:
            return None, None, ""
        tree, version = self._keys(conversation_id)
        try:
            pipe = self._redis.pipeline(transaction=True)
            pipe.hmget(tree, "owner", "body")
            pipe.get(version)
            (owner, body), seen = await pipe.execute()
        except redis.exceptions.RedisError as exc:
            log.warning("cache.unavailable", error=str(exc))
            return None, None, ""
        return (owner.decode() if owner else None), body, (seen or b"0").decode()

    async def store(self, conversation_id: str, owner: str, body: bytes, version: str) -> None:
        """Keep a tree read at `version`, unless a write has happened since."""
        if self._store is None or not version:
            return
        try:
            await self._store(keys=self._keys(conversation_id), args=[owner, body, version, self._ttl_s])
        except redis.exceptions.RedisError as exc:
            log.warning("cache.unavailable", error=str(exc))

    async def forget(self, conversation_id: str) -> None:
        if self._redis is None:
            return
        tree, version = self._keys(conversation_id)
        try:
            pipe = self._redis.pipeline(transaction=True)
            pipe.incr(version)
            pipe.expire(version, self._ttl_s * 2)
            pipe.delete(tree)
            await pipe.execute()
        except redis.exceptions.RedisError as exc:
            log.warning("cache.unavailable", error=str(exc))
