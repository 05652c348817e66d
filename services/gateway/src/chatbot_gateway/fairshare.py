"""Each key's fair share of the platform, kept in Redis so that every gateway replica counts together.

A key may have so many requests running and so many streams open (defaults that a laptop never
hits; per key by an admin), and, with a budget, may not start what its remaining budget could not
pay for in the worst case: the request's input and its whole `max_tokens` at the model's prices are
reserved at admission, atomically with the counts, and the worker settles the reservation with the
real cost when the answer ends. Concurrent requests therefore never spend past a budget.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis

from chatbot_contracts import IMAGE_TOKENS, ChatMessage, ChatRequest, Keys, ModelSpec
from chatbot_contracts.keys import SPEND_TTL_S, period_label
from chatbot_contracts.redis import SharedRounds, raise_refused, run_script

from .auth import Principal
from .errors import TooManyInFlight
from .ratelimit import RateLimited

# KEYS (one hash tag: the key id): running requests, open streams (member -> until), the period's spend.
# ARGV: now, request id ('' for a stream alone), its deadline, running bound, stream member, stream until,
#       streams bound, budget (-1: none), reservation (USD), spend TTL (s).
# Bounds of 0 are not checked. Returns {'ok'} after taking everything, or {what, how many / spent} and takes nothing.
_ADMIT = """
local now = tonumber(ARGV[1])
local running_bound, streams_bound = tonumber(ARGV[4]), tonumber(ARGV[7])
if streams_bound > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  local open = redis.call('ZCARD', KEYS[2])
  if open >= streams_bound then return {'streams', tostring(open)} end
end
if ARGV[2] ~= '' and running_bound > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
  local running = redis.call('ZCARD', KEYS[1])
  if running >= running_bound then return {'running', tostring(running)} end
end
local budget = tonumber(ARGV[8])
if ARGV[2] ~= '' and budget >= 0 then
  local spent = tonumber(redis.call('GET', KEYS[3]) or '0')
  if spent + tonumber(ARGV[9]) > budget then return {'budget', tostring(spent)} end
  redis.call('INCRBYFLOAT', KEYS[3], ARGV[9])
  redis.call('EXPIRE', KEYS[3], ARGV[10])
end
if ARGV[2] ~= '' then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[2])
  redis.call('EXPIREAT', KEYS[1], math.ceil(tonumber(ARGV[3])) + 60)
end
redis.call('ZADD', KEYS[2], ARGV[6], ARGV[5])
redis.call('EXPIREAT', KEYS[2], math.ceil(tonumber(ARGV[6])) + 60)
return {'ok'}
"""

FRAMING_TOKENS = 4
"""Tokens a provider adds around each message (role, separators): a few; four covers the providers the platform speaks."""


def budget_terms(who: Principal, spec: ModelSpec, messages: Sequence[ChatMessage], max_tokens: int) -> dict[str, Any]:
    """The `ChatRequest` fields that reserve a budgeted key's worst case: every input token a tokenizer could make of
    the text (no more than its UTF-8 bytes) plus each message's framing, and the whole `max_tokens`."""
    if who.budget_usd is None or who.budget_period is None:
        return {}
    input_bound = sum(len(m.content.encode()) + FRAMING_TOKENS + len(m.images or ()) * IMAGE_TOKENS for m in messages)
    return {
        "budget_period": who.budget_period,
        "budget_label": period_label(who.budget_period),
        "budget_reserved_usd": spec.cost_usd(input_bound, max_tokens),
    }


class Admission:
    """What one admission took: released by whoever ends it (the worker the request, the relay the stream)."""

    __slots__ = ("key_id", "label", "request_id", "reserved_usd", "stream")

    def __init__(self, key_id: str, stream: str, request_id: str = "", reserved_usd: float = 0.0, label: str | None = None) -> None:
        self.key_id = key_id
        self.stream = stream
        """This stream's member in the key's open streams."""
        self.request_id = request_id
        self.reserved_usd = reserved_usd
        self.label = label
        """The budget period the reservation was taken from (`2026-12-01`), so it is settled there."""


class FairShare:
    def __init__(self, redis: aioredis.Redis, keys: Keys, max_running: int, max_streams: int, rounds: SharedRounds | None = None) -> None:
        """`rounds`: the gateway's shared round trips (the admissions and releases of concurrent requests share one)."""
        self._redis = redis
        self._rounds = rounds or SharedRounds(redis)
        self._keys = keys
        self._script = redis.register_script(_ADMIT)
        self.max_running = max_running
        self.max_streams = max_streams

    async def admit(self, who: Principal, *, until: float, request: ChatRequest | None = None) -> Admission:
        """Take a stream slot open until `until` and, for a new `request`, a running slot and its budget reservation
        (`request.budget_reserved_usd` from `request.budget_label`'s spend): all or none.

        Raises `TooManyInFlight` (429) past either bound, `RateLimited` (`budget_exceeded`) when the
        remaining budget cannot cover the reservation.
        """
        request_id = request.request_id if request else ""
        reserve_usd = request.budget_reserved_usd if request and request.budget_label else 0.0
        label = request.budget_label if request else None
        period = who.budget_period or "month"
        admission = Admission(who.key_id, uuid.uuid4().hex, request_id, reserve_usd, label)
        running = who.max_running if who.max_running is not None else self.max_running
        streams = who.max_streams if who.max_streams is not None else self.max_streams
        budget = who.budget_usd if label and who.budget_usd is not None else -1
        outcome = await run_script(
            self._rounds,
            self._script,
            keys=[self._keys.inflight(who.key_id), self._keys.open_streams(who.key_id), self._keys.spend(who.key_id, period, label)],
            args=[
                time.time(), request_id, request.deadline if request else until, running, admission.stream, until, streams,
                budget, reserve_usd, SPEND_TTL_S.get(period, SPEND_TTL_S["month"]),
            ],
        )  # fmt: skip
        what = outcome[0].decode() if isinstance(outcome[0], bytes) else str(outcome[0])
        if what == "ok":
            return admission
        count = outcome[1].decode() if isinstance(outcome[1], bytes) else str(outcome[1])
        if what == "streams":
            raise TooManyInFlight(
                f"this key already has {count} streams open (at most {streams}); close one or wait for it to end",
                code="too_many_streams",
                headers={"Retry-After": "1"},
            )
        if what == "running":
            raise TooManyInFlight(
                f"this key already has {count} requests running (at most {running}); wait for one to finish", headers={"Retry-After": "1"}
            )
        raise RateLimited(
            f"this key's budget of ${who.budget_usd:g} per {period} cannot cover this request (${float(count):.4f} spent or reserved; "
            f"this request may cost up to ${reserve_usd:.4f} with its max_tokens); it renews with the next {period} (UTC)",
            code="budget_exceeded",
        )

    async def release_stream(self, admission: Admission) -> None:
        raise_refused(await self._rounds.send(("ZREM", self._keys.open_streams(admission.key_id), admission.stream)))

    async def undo(self, admission: Admission) -> None:
        """Give back everything an admission took, for a request that was refused after it (nothing was enqueued)."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.zrem(self._keys.open_streams(admission.key_id), admission.stream)
        if admission.request_id:
            pipe.zrem(self._keys.inflight(admission.key_id), admission.request_id)
        if admission.reserved_usd and admission.label:
            pipe.incrbyfloat(self._keys.spend(admission.key_id, "month", admission.label), -admission.reserved_usd)
        await pipe.execute()
