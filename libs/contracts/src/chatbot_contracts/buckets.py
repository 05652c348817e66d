"""Per-minute token buckets in Redis, checked and taken by one script: any number of processes together keep a limit.

Used for an API key's requests and tokens per minute (the gateway) and for a model's (the workers).
"""

from __future__ import annotations

import time

import msgspec
import redis.asyncio as aioredis

# KEYS: requests bucket, tokens bucket. ARGV: now (ms), requests/min, tokens/min (0: no limit), tokens wanted.
# Each bucket holds up to its limit and refills continuously; both are taken, or neither.
# Returns {wait ms (0 taken, -1 never fits), requests left, tokens left}.
_TAKE = """
local now = tonumber(ARGV[1])
local wait = 0
local left = {-1, -1}
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[i + 1])
  local cost = i == 1 and 1 or tonumber(ARGV[4])
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
  local limit = tonumber(ARGV[i + 1])
  if limit > 0 then
    if wait == 0 then left[i] = left[i] - (i == 1 and 1 or tonumber(ARGV[4])) end
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


class MinuteBuckets:
    def __init__(self, redis: aioredis.Redis) -> None:
        self._take = redis.register_script(_TAKE)
        self._give_back = redis.register_script(_GIVE_BACK)

    async def take(self, requests_key: str, tokens_key: str, rpm: int | None, tpm: int | None, tokens: int) -> Taken:
        wait, requests_left, tokens_left = await self._take(
            keys=[requests_key, tokens_key], args=[int(time.time() * 1000), rpm or 0, tpm or 0, tokens]
        )
        return Taken(int(wait), int(requests_left), int(tokens_left))

    async def give_back(self, tokens_key: str, tokens: int, tpm: int) -> None:
        if tokens > 0:
            await self._give_back(keys=[tokens_key], args=[tokens, tpm])
