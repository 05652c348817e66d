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

from .providers import ProviderError

# KEYS: rpm bucket, tpm bucket. ARGV: now (ms), rpm, tpm, tokens wanted.
# A bucket holds up to its per-minute limit and refills continuously. Both are taken, or neither.
# Returns 0 when taken, -1 when the tokens can never fit, else the milliseconds to wait.
_TAKE = """
local now = tonumber(ARGV[1])
local wait = 0
local state = {}
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[i + 1])
  local cost = i == 1 and 1 or tonumber(ARGV[4])
  if limit > 0 then
    if cost > limit then return -1 end
    local held = redis.call('HMGET', key, 'tokens', 'ts')
    local tokens = tonumber(held[1]) or limit
    local ts = tonumber(held[2]) or now
    local rate = limit / 60000
    tokens = math.min(limit, tokens + (now - ts) * rate)
    state[i] = tokens
    if tokens < cost then wait = math.max(wait, math.ceil((cost - tokens) / rate)) end
  end
end
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[i + 1])
  if limit > 0 then
    local cost = i == 1 and 1 or tonumber(ARGV[4])
    local tokens = state[i]
    if wait == 0 then tokens = tokens - cost end
    redis.call('HSET', key, 'tokens', tokens, 'ts', now)
    redis.call('PEXPIRE', key, 120000)
  end
end
return wait
"""

# KEYS: tpm bucket. ARGV: tokens to give back (reserved but not used), tpm.
_GIVE_BACK = """
local tokens = tonumber(redis.call('HGET', KEYS[1], 'tokens'))
if tokens then redis.call('HSET', KEYS[1], 'tokens', math.min(tonumber(ARGV[2]), tokens + tonumber(ARGV[1]))) end
return 0
"""

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
        self._take = redis.register_script(_TAKE)
        self._give_back = redis.register_script(_GIVE_BACK)
        self._acquire = redis.register_script(_ACQUIRE)

    def _key(self, alias: str, kind: str) -> str:
        return f"{self._keys.namespace}limits.{{{alias}}}.{kind}"

    async def take(self, alias: str, spec: ModelSpec, tokens: int, deadline: float) -> None:
        """Take one request and `tokens` from the alias's per-minute buckets, waiting while they refill."""
        if not (spec.rpm or spec.tpm):
            return
        give_up = min(time.time() + self._max_wait_s, deadline)
        keys = [self._key(alias, "rpm"), self._key(alias, "tpm")]
        while True:
            wait_ms = int(await self._take(keys=keys, args=[int(time.time() * 1000), spec.rpm or 0, spec.tpm or 0, tokens]))
            if wait_ms == 0:
                return
            if wait_ms < 0:
                raise ProviderError(
                    "bad_request", f"the request needs about {tokens} tokens, more than model `{alias}` allows per minute ({spec.tpm})"
                )
            if time.time() + wait_ms / 1000 > give_up:
                raise ProviderError("rate_limited", f"model `{alias}` is at its per-minute limit", retry_after=wait_ms / 1000)
            await asyncio.sleep(wait_ms / 1000)

    async def give_back(self, alias: str, spec: ModelSpec, unused_tokens: int) -> None:
        """Return tokens reserved for the answer but not used (settling the reservation from real usage)."""
        if spec.tpm and unused_tokens > 0:
            await self._give_back(keys=[self._key(alias, "tpm")], args=[unused_tokens, spec.tpm])

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
                    "rate_limited", f"model `{alias}` is running its {spec.max_concurrency} concurrent generations", retry_after=1.0
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
