"""Enqueues chat requests and reads their event streams back: the gateway's half of the hot path."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Coroutine, Sequence
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions
import structlog

from chatbot_contracts import (
    DATA_FIELD,
    DATA_FIELD_BYTES,
    INFERENCE_GROUP,
    ChatRequest,
    Delta,
    Done,
    Keys,
    StreamEvent,
    ToolCallDelta,
    encode,
    stream_event_decoder,
)
from chatbot_contracts.redis import SharedRounds, run_script

from .auth import Principal
from .errors import Overloaded
from .fairshare import Admission, FairShare
from .follower import Batch, Followers
from .metrics import GatewayMetrics
from .settings import ChatSettings

log = structlog.get_logger()

# KEYS: the request's partition of chat.requests, its owner key, its stream (one slot). ARGV: group, max lag, max pending,
# field, request, maxlen, owner, owner's lifetime, stream's lifetime, then the events that open its stream.
# Enqueue only while the group's backlog is within bounds (the partition's share of them): -1 refuses (nothing
# written), 1 enqueued. A request whose owner is already recorded was enqueued by this very call, sent again after its
# reply was lost (a failover): 1, and nothing is written twice.
# Before any worker made the group, everything in the stream counts as waiting.
_ADMIT = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 1 end
local lag, pending = redis.call('XLEN', KEYS[1]), 0
if lag > 0 then
  for _, group in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
    local fields = {}
    for i = 1, #group, 2 do fields[group[i]] = group[i + 1] end
    if fields['name'] == ARGV[1] then
      lag = tonumber(fields['lag']) or lag
      pending = tonumber(fields['pending']) or 0
    end
  end
end
if lag >= tonumber(ARGV[2]) or pending >= tonumber(ARGV[3]) then return -1 end
if #ARGV > 9 then
  for i = 10, #ARGV do redis.call('XADD', KEYS[3], '*', ARGV[4], ARGV[i]) end
  redis.call('EXPIRE', KEYS[3], ARGV[9])
end
redis.call('SET', KEYS[2], ARGV[7], 'EX', ARGV[8])
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[6], '*', ARGV[4], ARGV[5])
return 1
"""

IDEMPOTENCY_TTL_S = 86_400
_RESERVED = b"reserved"

OWNER_GRACE_S = 86_400
"""How much longer than its stream a request's owner is remembered (to answer 410, not 404, after expiry)."""


class Relay:
    """The gateway's view of the request streams."""

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        settings: ChatSettings,
        metrics: GatewayMetrics | None = None,
        *,
        cluster_reader: aioredis.Redis | None = None,
    ) -> None:
        """On a Redis Cluster, `cluster_reader` is a cluster client of the streams' readers' own."""
        self._metrics = metrics or GatewayMetrics()
        self.following = 0
        """Streams this gateway follows now."""
        self._follower = Followers(redis, keys, settings.redis_outage_s, cluster_reader=cluster_reader)
        self._redis = redis
        self._keys = keys
        self._settings = settings
        self._admit = redis.register_script(_ADMIT)
        self._rounds = SharedRounds(redis)
        self.share = FairShare(redis, keys, settings.max_inflight_per_key, settings.max_streams_per_key, self._rounds)
        self._background: set[asyncio.Task[None]] = set()

    async def queue_position(self) -> int:
        """How many requests wait for a worker (the `inference` group's lag, over every partition); 0 when unknown."""
        pipe = self._redis.pipeline(transaction=False)
        for requests in self._keys.requests_partitions:
            pipe.xinfo_groups(requests)
        waiting = 0
        for groups in await pipe.execute(raise_on_error=False):
            if isinstance(groups, Exception):
                continue  # a partition no request went to yet
            for group in groups:
                if group.get("name") in (INFERENCE_GROUP, INFERENCE_GROUP.encode()):
                    waiting += int(group.get("lag") or 0)
        return waiting

    async def owner_of(self, request_id: str) -> tuple[str | None, bool]:
        """The request's owner (None when unknown) and whether its stream still exists."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.get(self._keys.request_owner(request_id))
        pipe.exists(self._keys.request_stream(request_id))
        owner, exists = await pipe.execute()
        return (owner.decode() if owner else None), bool(exists)

    async def close(self) -> None:
        await self._follower.close()

    def ensure_capacity(self) -> None:
        """Refuse (503, nothing enqueued) a stream past this gateway's bound (`CHATBOT_MAX_STREAMS`)."""
        if self.following >= self._settings.max_streams:
            raise Overloaded(
                f"this gateway is following {self.following} streams, as many as it may (CHATBOT_MAX_STREAMS); "
                "retry shortly, or through another gateway",
                code="gateway_at_capacity",
                headers={"Retry-After": str(self._settings.overload_retry_after_s)},
            )

    async def submit(self, request: ChatRequest, who: Principal, prelude: Sequence[StreamEvent] = ()) -> Admission:
        """Admit and enqueue a request for the inference workers, in two round trips: the key's share, then the queue.

        Raises `Overloaded` when the workers' queue is past its bound (nothing is enqueued), and what
        `FairShare.admit` raises when the key has too many requests running or streams open, or too
        little budget. `prelude` events open the request's own stream (the native API's `start` and
        `queued`). The owner is recorded for longer than the stream lives, so an expired stream is
        told apart from one that never existed. The admission's stream slot is the caller's to pass
        to `batches`, which frees it when the stream ends.
        """
        self.ensure_capacity()
        settings = self._settings
        admission = await self.share.admit(who, until=request.deadline, request=request)
        try:
            admitted = await self._enqueue(request, prelude)
        except BaseException:
            await self.share.undo(admission)
            raise
        if isinstance(admitted, int) and admitted < 0:
            await self.share.undo(admission)
            raise Overloaded(
                f"the inference workers are behind (more than {settings.max_queue_lag} requests waiting, or {settings.max_queue_pending} running); try again shortly",
                headers={"Retry-After": str(settings.overload_retry_after_s)},
            )
        return admission

    async def admit_stream(self, who: Principal, until: float) -> Admission:
        """A stream slot for following a request already running (a resume, an Idempotency-Key replay): the
        gateway's bound and the key's, as for a new request."""
        self.ensure_capacity()
        return await self.share.admit(who, until=until)

    async def _enqueue(self, request: ChatRequest, prelude: Sequence[StreamEvent]) -> object:
        """One script, so that a call sent again by the client after a failover enqueues nothing twice (`_ADMIT`)."""
        settings = self._settings
        lifetime = int(request.deadline - request.enqueued_at) + settings.stream_ttl_s
        partitions = self._keys.partitions
        request_id = request.request_id
        keys = (self._keys.requests_for(request_id), self._keys.request_owner(request_id), self._keys.request_stream(request_id))
        args: list[str | bytes | int] = [
            INFERENCE_GROUP,
            -(-settings.max_queue_lag // partitions),
            -(-settings.max_queue_pending // partitions),
            DATA_FIELD,
            encode(request),
            settings.requests_maxlen,
            request.owner,
            lifetime + OWNER_GRACE_S,
            lifetime,
            *(encode(event) for event in prelude),
        ]
        # By its digest, in a round shared with other requests'; after Redis lost its scripts (a restart), loaded again.
        return await run_script(self._rounds, self._admit, keys, args)

    async def remembered(self, owner: str, idempotency_key: str, wait_s: float = 10.0) -> str | None:
        """The request an earlier call with this `Idempotency-Key` started, or None when this call is the first.

        The first caller reserves the key; a caller arriving while the first is still storing its
        turn waits for the request id rather than starting a second generation.
        """
        key = self._keys.idempotency(owner, hashlib.sha256(idempotency_key.encode()).hexdigest())
        if await self._redis.set(key, _RESERVED, nx=True, ex=IDEMPOTENCY_TTL_S):
            return None
        give_up = time.monotonic() + wait_s
        while (held := await self._redis.get(key)) == _RESERVED and time.monotonic() < give_up:  # noqa: ASYNC110 - another process holds it
            await asyncio.sleep(0.05)
        if held is None or held == _RESERVED:
            raise Overloaded("a request with this Idempotency-Key is still being started; retry shortly", headers={"Retry-After": "1"})
        return held.decode() if isinstance(held, bytes) else str(held)

    async def remember(self, owner: str, idempotency_key: str, request_id: str | None) -> None:
        """Bind the key to the request it started, or (None) free it after the call failed, so a retry may start it."""
        key = self._keys.idempotency(owner, hashlib.sha256(idempotency_key.encode()).hexdigest())
        if request_id is None:
            await self._redis.delete(key)
        else:
            await self._redis.set(key, request_id, ex=IDEMPOTENCY_TTL_S)

    async def finished(self, request_id: str) -> bool:
        """Whether the request's stream has ended (`done` is its last event)."""
        last: list[tuple[bytes, dict[bytes, bytes]]] = await self._redis.xrevrange(self._keys.request_stream(request_id), count=1)  # type: ignore[assignment]
        return bool(last) and isinstance(stream_event_decoder.decode(last[0][1][DATA_FIELD_BYTES]), Done)

    async def cancel(self, request_id: str) -> None:
        """Tell the workers to stop generating `request_id`: a durable flag and a Pub/Sub nudge."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.set(self._keys.cancel_flag(request_id), b"1", ex=self._settings.stream_ttl_s)
        pipe.publish(self._keys.cancel_channel, request_id)
        await pipe.execute()

    def cancel_soon(self, request_id: str) -> None:
        """`cancel` from a place that cannot wait for it (a stream torn down by a client that left)."""
        self._in_background(self.cancel(request_id))

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(_quietly(work))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def batches(
        self,
        request_id: str,
        deadline: float,
        admission: Admission,
        after: bytes = b"0-0",
        keepalive_s: float = 15.0,
        enqueued_at: float | None = None,
    ) -> AsyncIterator[Batch]:
        """The request's events from just after entry `after` to `done`, as the follower reads them, counted as a
        stream in flight.

        Each batch holds every event written since the previous one. Past the deadline the stream
        ends with an `error` and a `done` of the gateway's making. Given `enqueued_at` (the request
        was enqueued by this gateway just now), the time to its first token as the gateway sees it
        is observed. The stream's slot in its key's share (`admission`) is freed when it ends.
        """
        self._metrics.streams.inc()
        self.following += 1
        following = self._follower.follow(request_id, after, deadline, keepalive_s)
        try:
            while True:
                batch = await following.next()
                if enqueued_at is not None and any(isinstance(event, Delta | ToolCallDelta) for _, event in batch):
                    self._metrics.time_to_first_token.observe(time.time() - enqueued_at)
                    enqueued_at = None
                yield batch
                if following.ended and not following.entries:
                    return
        finally:
            self._follower.forget(following)
            self._metrics.streams.dec()
            self.following -= 1
            self._in_background(self.share.release_stream(admission))


async def _quietly(work: Coroutine[Any, Any, None]) -> None:
    """Background Redis work whose failure only costs a slot until its expiry: logged, never raised into nobody's hands."""
    try:
        await work
    except (redis.exceptions.RedisError, OSError) as exc:
        log.warning("relay.background_failed", error=type(exc).__name__)
