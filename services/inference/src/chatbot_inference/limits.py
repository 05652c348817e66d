"""Per-model limits shared by every worker through Redis: concurrent generations, requests and tokens per minute.

Each check is one Lua script, so any number of workers together never exceed a limit. A full
bucket or a full set of slots makes the worker wait (up to a bound), not fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator

import redis.asyncio as aioredis

from chatbot_contracts import Keys, ModelSpec
from chatbot_contracts.buckets import MinuteBuckets

from .providers import ProviderError

# KEYS: slot set. ARGV: now (ms), lease (ms), max, holder. Expired leases (dead holders) are dropped first.
_ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[2]), ARGV[4])
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""


class ModelLimits:
    """Waits for a model's capacity before a provider call."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, max_wait_s: float = 30.0, lease_s: float = 30.0) -> None:
        self._redis = redis
        self._keys = keys
        self._max_wait_s = max_wait_s
        self._lease_ms = int(lease_s * 1000)
        self._buckets = MinuteBuckets(redis)
        self._acquire = redis.register_script(_ACQUIRE)

    def _key(self, alias: str, kind: str) -> str:
        return f"{self._keys.namespace}limits.{{{alias}}}.{kind}"

    async def take(self, alias: str, spec: ModelSpec, tokens: int, deadline: float) -> None:
        """Take one request and `tokens` from the alias's per-minute buckets, waiting while they refill."""
        if not (spec.rpm or spec.tpm):
            return
        give_up = min(time.time() + self._max_wait_s, deadline)
        while True:
            wait_ms = (await self._buckets.take(self._key(alias, "rpm"), self._key(alias, "tpm"), spec.rpm, spec.tpm, tokens)).wait_ms
            if wait_ms == 0:
                return
            if wait_ms < 0:
                raise ProviderError(
                    "bad_request", f"the request needs about {tokens} tokens, more than model `{alias}` allows per minute ({spec.tpm})"
                )
            if time.time() + wait_ms / 1000 > give_up:
                raise ProviderError(
                    "rate_limited", f"model `{alias}` is at its per-minute limit", retry_after=wait_ms / 1000, at_limit=True
                )
            await asyncio.sleep(wait_ms / 1000)

    async def give_back(self, alias: str, spec: ModelSpec, unused_tokens: int) -> None:
        """Return tokens reserved for the answer but not used (settling the reservation from real usage)."""
        if spec.tpm:
            await self._buckets.give_back(self._key(alias, "tpm"), unused_tokens, spec.tpm)

    @contextlib.asynccontextmanager
    async def slot(self, alias: str, spec: ModelSpec, holder: str, deadline: float) -> AsyncIterator[None]:
        """Hold one of the alias's concurrent-generation slots for the duration; the lease is renewed while held."""
        if spec.max_concurrency is None:
            yield
            return
        key = self._key(alias, "slots")
        give_up = min(time.time() + self._max_wait_s, deadline)
        delay = 0.01
        while not await self._acquire(keys=[key], args=[int(time.time() * 1000), self._lease_ms, spec.max_concurrency, holder]):
            if time.time() + delay > give_up:
                raise ProviderError(
                    "rate_limited",
                    f"model `{alias}` is running its {spec.max_concurrency} concurrent generations",
                    retry_after=1.0,
                    at_limit=True,
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)
        renewer = asyncio.create_task(self._renew(key, holder))
        try:
            yield
        finally:
            renewer.cancel()
            with contextlib.suppress(Exception):
                await self._redis.zrem(key, holder)

    async def _renew(self, key: str, holder: str) -> None:
        while True:
            await asyncio.sleep(self._lease_ms / 3000)
            with contextlib.suppress(Exception):
                await self._redis.zadd(key, {holder: int(time.time() * 1000) + self._lease_ms}, xx=True)


def estimate_request_tokens(prompt_chars: int, max_tokens: int) -> int:
    """Tokens to reserve for a call: the prompt (about four characters a token) plus the answer's budget."""
    return math.ceil(prompt_chars / 4) + max_tokens
