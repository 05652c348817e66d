"""Enqueues chat requests and reads their event streams back: the gateway's half of the hot path."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence

import redis.asyncio as aioredis
import redis.exceptions
import structlog

from chatbot_contracts import (
    DATA_FIELD,
    DATA_FIELD_BYTES,
    INFERENCE_GROUP,
    AnyStreamEvent,
    ChatRequest,
    Done,
    Error,
    Keys,
    Queued,
    StreamEvent,
    encode,
    stream_event_decoder,
)

from .settings import ChatSettings

log = structlog.get_logger()

OWNER_GRACE_S = 86_400
"""How much longer than its stream a request's owner is remembered (to answer 410, not 404, after expiry)."""

Batch = list[tuple[bytes, AnyStreamEvent]]
"""Events read together, each with its stream entry id."""

KEEPALIVE: Batch = []
"""Yielded when nothing arrived for `keepalive_s`, so the caller can keep its connection warm."""


class Relay:
    """The gateway's view of the request streams."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, settings: ChatSettings) -> None:
        self._redis = redis
        self._keys = keys
        self._settings = settings

    async def queue_position(self) -> int:
        """How many requests wait for a worker (the `inference` group's lag); 0 when unknown."""
        try:
            groups = await self._redis.xinfo_groups(self._keys.chat_requests)
        except redis.exceptions.ResponseError:
            return 0
        for group in groups:
            if group.get("name") in (INFERENCE_GROUP, INFERENCE_GROUP.encode()):
                return int(group.get("lag") or 0)
        return 0

    async def owner_of(self, request_id: str) -> tuple[str | None, bool]:
        """The request's owner (None when unknown) and whether its stream still exists."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.get(self._keys.request_owner(request_id))
        pipe.exists(self._keys.request_stream(request_id))
        owner, exists = await pipe.execute()
        return (owner.decode() if owner else None), bool(exists)

    async def submit(self, request: ChatRequest, prelude: Sequence[StreamEvent] = ()) -> None:
        """Enqueue a request for the inference workers and log that it was queued, in one round trip.

        `prelude` events open the request's own stream (the native API's `start` and `queued`).
        The owner is recorded for longer than the stream lives, so an expired stream is told apart
        from one that never existed.
        """
        queued = Queued(
            request_id=request.request_id,
            model=request.model,
            owner=request.owner,
            key_id=request.key_id,
            at=request.enqueued_at,
            traceparent=request.traceparent,
            conversation_id=request.conversation_id,
            message_id=request.message_id,
            purpose=request.purpose,
        )
        pipe = self._redis.pipeline(transaction=False)
        stream = self._keys.request_stream(request.request_id)
        lifetime = int(request.deadline - request.enqueued_at) + self._settings.stream_ttl_s
        for event in prelude:
            pipe.xadd(stream, {DATA_FIELD: encode(event)})
        if prelude:
            pipe.expire(stream, lifetime)
        pipe.set(self._keys.request_owner(request.request_id), request.owner, ex=lifetime + OWNER_GRACE_S)
        pipe.xadd(self._keys.chat_requests, {DATA_FIELD: encode(request)}, maxlen=self._settings.requests_maxlen, approximate=True)
        pipe.xadd(self._keys.inference_events, {DATA_FIELD: encode(queued)}, maxlen=self._settings.events_maxlen, approximate=True)
        await pipe.execute()

    async def batches(self, request_id: str, deadline: float, after: bytes = b"0-0", keepalive_s: float = 15.0) -> AsyncIterator[Batch]:
        """The request's events from just after entry `after` to `done`, as they arrive.

        One blocking XREAD returns every event written since the previous read, so a fast
        producer costs one round trip per batch, not per token. Past the deadline the stream
        ends with an `error` and a `done` of its own making.
        """
        key = self._keys.request_stream(request_id)
        while True:
            remaining = deadline - time.time()
            if remaining <= 0:
                log.warning("stream.deadline_exceeded", request_id=request_id)
                yield [
                    (b"", Error(code="deadline_exceeded", message="no answer arrived before the request's deadline")),
                    (b"", Done(reason="error")),
                ]
                return
            block_ms = max(1, int(min(remaining, keepalive_s) * 1000))
            response = await self._redis.xread({key: after}, count=512, block=block_ms)
            if not response:
                yield KEEPALIVE
                continue
            entries: list[tuple[bytes, dict[bytes, bytes]]] = response[0][1]  # type: ignore[index,assignment]
            batch: Batch = []
            for entry_id, fields in entries:
                event = stream_event_decoder.decode(fields[DATA_FIELD_BYTES])
                batch.append((entry_id, event))
                if isinstance(event, Done):
                    yield batch
                    return
            after = entries[-1][0]
            yield batch
