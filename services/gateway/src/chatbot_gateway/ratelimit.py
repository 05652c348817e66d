"""Per-key requests and tokens per minute, taken atomically in Redis so that all gateway replicas together keep them."""

from __future__ import annotations

import math

import redis.asyncio as aioredis

from chatbot_contracts import ChatMessage, Keys
from chatbot_contracts.buckets import MinuteBuckets

from .auth import Principal
from .errors import GatewayError


class RateLimited(GatewayError):
    status_code = 429
    error_type = "rate_limit_error"
    code = "rate_limit_exceeded"


def reserve(messages: list[ChatMessage], max_tokens: int) -> int:
    """Tokens to take for a call: the prompt (about four characters a token) plus the answer's budget."""
    return math.ceil(sum(len(m.content) for m in messages) / 4) + max_tokens


def _reset(limit: int, left: int) -> str:
    """Time until the bucket is full again, as OpenAI writes it (`1.5s`)."""
    return f"{max(0.0, (limit - left) * 60 / limit):.3g}s"


class KeyLimits:
    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self._buckets = MinuteBuckets(redis)
        self._redis = redis
        self._keys = keys

    async def take(self, who: Principal, tokens: int) -> dict[str, str]:
        """Check the key's budget, then take one request and `tokens` from its buckets; the rate-limit headers, or `RateLimited`."""
        if who.budget_usd is not None and who.budget_period:
            spent = float(await self._redis.get(self._keys.spend(who.key_id, who.budget_period)) or 0)
            if spent >= who.budget_usd:
                raise RateLimited(
                    f"this key's budget of ${who.budget_usd:g} per {who.budget_period} is spent (${spent:.4f} so far); it renews with the next {who.budget_period} (UTC)",
                    code="budget_exceeded",
                )
        if not (who.rpm or who.tpm):
            return {}
        taken = await self._buckets.take(self._keys.rate(who.key_id, "rpm"), self._keys.rate(who.key_id, "tpm"), who.rpm, who.tpm, tokens)
        headers: dict[str, str] = {}
        if who.rpm:
            left = max(0, taken.requests_left)
            headers |= {
                "x-ratelimit-limit-requests": str(who.rpm),
                "x-ratelimit-remaining-requests": str(left),
                "x-ratelimit-reset-requests": _reset(who.rpm, left),
            }
        if who.tpm:
            left = max(0, taken.tokens_left)
            headers |= {
                "x-ratelimit-limit-tokens": str(who.tpm),
                "x-ratelimit-remaining-tokens": str(left),
                "x-ratelimit-reset-tokens": _reset(who.tpm, left),
            }
        if taken.wait_ms < 0:
            raise RateLimited(
                f"this request needs about {tokens} tokens, more than this key's {who.tpm} tokens per minute", headers=headers
            )
        if taken.wait_ms > 0:
            retry = max(1, math.ceil(taken.wait_ms / 1000))
            raise RateLimited(
                f"this key's rate limit is reached ({who.rpm or '-'} requests, {who.tpm or '-'} tokens per minute); retry in {retry}s",
                headers={**headers, "Retry-After": str(retry)},
            )
        return headers
