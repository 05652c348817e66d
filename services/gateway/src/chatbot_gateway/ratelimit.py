"""Per-key requests and tokens per minute, taken atomically in Redis so that all gateway replicas together keep them."""

from __future__ import annotations

import math

import redis.asyncio as aioredis

from chatbot_contracts import IMAGE_TOKENS, ChatMessage, Keys
from chatbot_contracts.buckets import Bucket, MinuteBuckets

from .auth import Principal
from .errors import GatewayError


class RateLimited(GatewayError):
    status_code = 429
    error_type = "rate_limit_error"
    code = "rate_limit_exceeded"


def reserve(messages: list[ChatMessage], max_tokens: int) -> int:
    """Tokens to take for a call: the prompt (about four characters a token, `IMAGE_TOKENS` an image) plus the answer's budget."""
    images = sum(len(m.images) for m in messages if m.images)
    return math.ceil(sum(len(m.content) for m in messages) / 4) + images * IMAGE_TOKENS + max_tokens


def _reset(limit: int, left: int) -> str:
    """Time until the bucket is full again, as OpenAI writes it (`1.5s`)."""
    return f"{max(0.0, (limit - left) * 60 / limit):.3g}s"


class KeyLimits:
    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self._buckets = MinuteBuckets(redis)
        self._redis = redis
        self._keys = keys

    async def take(self, who: Principal, tokens: int) -> dict[str, str]:
        """Take one request and `tokens` from the key's buckets and its owner's (the budget is reserved at admission).

        Returns the rate-limit headers (of the key's limits, else the owner's), or raises `RateLimited`.
        """
        pairs = []
        if who.rpm or who.tpm:
            pairs.append(
                Bucket(self._keys.rate(who.owner, who.key_id, "rpm"), self._keys.rate(who.owner, who.key_id, "tpm"), who.rpm, who.tpm)
            )
        if who.owner_rpm or who.owner_tpm:
            pairs.append(
                Bucket(self._keys.rate(who.owner, None, "rpm"), self._keys.rate(who.owner, None, "tpm"), who.owner_rpm, who.owner_tpm)
            )
        if not pairs:
            return {}
        first = pairs[0]
        taken = await self._buckets.take(first.requests_key, first.tokens_key, first.rpm, first.tpm, tokens, also=pairs[1:])
        headers: dict[str, str] = {}
        if first.rpm:
            left = max(0, taken.requests_left)
            headers |= {
                "x-ratelimit-limit-requests": str(first.rpm),
                "x-ratelimit-remaining-requests": str(left),
                "x-ratelimit-reset-requests": _reset(first.rpm, left),
            }
        if first.tpm:
            left = max(0, taken.tokens_left)
            headers |= {
                "x-ratelimit-limit-tokens": str(first.tpm),
                "x-ratelimit-remaining-tokens": str(left),
                "x-ratelimit-reset-tokens": _reset(first.tpm, left),
            }
        if taken.wait_ms < 0:
            raise RateLimited(f"this request needs about {tokens} tokens, more than allowed per minute ({_describe(who)})", headers=headers)
        if taken.wait_ms > 0:
            retry = max(1, math.ceil(taken.wait_ms / 1000))
            raise RateLimited(
                f"the rate limit is reached ({_describe(who)}); retry in {retry}s", headers={**headers, "Retry-After": str(retry)}
            )
        return headers

    async def give_back(self, who: Principal, tokens: int) -> None:
        """Return `tokens` taken by `take` and not used (an answer from the cache uses none) to the key's and owner's buckets."""
        if who.tpm:
            await self._buckets.give_back(self._keys.rate(who.owner, who.key_id, "tpm"), tokens, who.tpm)
        if who.owner_tpm:
            await self._buckets.give_back(self._keys.rate(who.owner, None, "tpm"), tokens, who.owner_tpm)


def _describe(who: Principal) -> str:
    parts = []
    if who.rpm or who.tpm:
        parts.append(f"this key: {who.rpm or '-'} requests, {who.tpm or '-'} tokens per minute")
    if who.owner_rpm or who.owner_tpm:
        parts.append(f"owner {who.owner}: {who.owner_rpm or '-'} requests, {who.owner_tpm or '-'} tokens per minute")
    return "; ".join(parts)
