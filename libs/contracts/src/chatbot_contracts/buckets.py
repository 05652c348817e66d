"""Per-minute token buckets in Redis, checked and taken by one script: any number of processes together keep a limit.

Used for an API key's requests and tokens per minute (the gateway) and for a model's (the workers).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import msgspec
import redis.asyncio as aioredis

# KEYS: pairs of (requests bucket, tokens bucket). ARGV: now (ms), tokens wanted, then per pair its
# requests/min and tokens/min (0: no limit). Each bucket holds up to its limit and refills
# continuously; every bucket is taken, or none. Returns {wait ms (0 taken, -1 never fits),
# requests left, tokens left} of the first pair.
_TAKE = """
local now = tonumber(ARGV[1])
local want = tonumber(ARGV[2])
local wait = 0
local left = {}
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[i + 2])
  local cost = (i % 2 == 1) and 1 or want
  left[i] = -1
  if limit > 0 then
    if cost > limit then return {-1, 0, 0} end
    local held = redis.call('HMGET', key, 'tokens', 'ts')
    local tokens = tonumber(held[1]) or limit
    local ts = tonumber(held[2]) or now
    tokens = math.min(limit, tokens + (now - ts) * limit / 60000)
    left[i] = tokens
    if tokens < cost then wait = math.max(wait, math.ceil((cost - tokens) * 60000 / limit)) end
  end
end
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[i + 2])
  if limit > 0 then
    if wait == 0 then left[i] = left[i] - ((i % 2 == 1) and 1 or want) end
    redis.call('HSET', key, 'tokens', left[i], 'ts', now)
    redis.call('PEXPIRE', key, 120000)
  end
end
return {wait, math.floor(left[1]), math.floor(left[2])}
"""

# KEYS: tokens bucket. ARGV: tokens to give back, tokens/min.
_GIVE_BACK = """
local tokens = tonumber(redis.call('HGET', KEYS[1], 'tokens'))
if tokens then redis.call('HSET', KEYS[1], 'tokens', math.min(tonumber(ARGV[2]), tokens + tonumber(ARGV[1]))) end
return 0
"""


class Taken(msgspec.Struct, frozen=True):
    wait_ms: int
    """0: taken; -1: more tokens than the limit, never; else how long until it would fit."""
    requests_left: int
    """-1 when there is no request limit."""
    tokens_left: int
    """-1 when there is no token limit."""


class Bucket(msgspec.Struct, frozen=True):
    """Another pair of buckets to take from at the same time."""

    requests_key: str
    tokens_key: str
    rpm: int | None
    tpm: int | None


class MinuteBuckets:
    def __init__(self, redis: aioredis.Redis) -> None:
        self._take = redis.register_script(_TAKE)
        self._give_back = redis.register_script(_GIVE_BACK)

    async def take(
        self, requests_key: str, tokens_key: str, rpm: int | None, tpm: int | None, tokens: int, *, also: Sequence[Bucket] = ()
    ) -> Taken:
        """Take one request and `tokens` from the pair of buckets, and from every pair in `also`, or from none.

        All the keys must share one Redis Cluster slot (one hash tag). The counts left are the first pair's.
        """
        keys, limits = [requests_key, tokens_key], [rpm or 0, tpm or 0]
        for extra in also:
            keys += [extra.requests_key, extra.tokens_key]
            limits += [extra.rpm or 0, extra.tpm or 0]
        wait, requests_left, tokens_left = await self._take(keys=keys, args=[int(time.time() * 1000), tokens, *limits])
        return Taken(int(wait), int(requests_left), int(tokens_left))

    async def give_back(self, tokens_key: str, tokens: int, tpm: int) -> None:
        if tokens > 0:
            await self._give_back(keys=[tokens_key], args=[tokens, tpm])
