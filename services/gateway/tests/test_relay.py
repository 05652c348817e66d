"""The relay's admission: a request's first events, owner and queue entry written once, whatever the client resends."""

from __future__ import annotations

import time
import uuid

import redis.asyncio as aioredis

from chatbot_contracts import DATA_FIELD_BYTES, ChatMessage, ChatRequest, GenerationParams, Keys, Queued, chat_request_decoder, encode
from chatbot_gateway.relay import Relay
from chatbot_gateway.settings import ChatSettings


def a_request() -> ChatRequest:
    now = time.time()
    return ChatRequest(
        request_id=uuid.uuid4().hex,
        model="fast",
        messages=[ChatMessage(role="user", content="Hello")],
        params=GenerationParams(max_tokens=10),
        owner="alice",
        key_id="key-1",
        enqueued_at=now,
        deadline=now + 30,
    )


async def test_an_admission_sent_again_after_its_reply_was_lost_enqueues_once(redis: aioredis.Redis, namespace: str) -> None:
    """What a client that resends does after a failover: the same call twice. The second finds the request's owner
    recorded and writes nothing."""
    keys = Keys(namespace)
    relay = Relay(redis, keys, ChatSettings())
    request = a_request()
    queued = Queued(request_id=request.request_id, model="fast", at=request.enqueued_at)
    try:
        assert await relay._enqueue(request, [queued]) == 1
        assert await relay._enqueue(request, [queued]) == 1, "the call sent again is told it was admitted"
        entries = await redis.xrange(keys.requests_for(request.request_id))
        assert [chat_request_decoder.decode(fields[DATA_FIELD_BYTES]).request_id for _, fields in entries] == [request.request_id]
        stream = await redis.xrange(keys.request_stream(request.request_id))
        assert [fields[DATA_FIELD_BYTES] for _, fields in stream] == [encode(queued)], "its first events once"
        assert await redis.get(keys.request_owner(request.request_id)) == b"alice"
        assert 0 < await redis.ttl(keys.request_stream(request.request_id)) <= 30 + ChatSettings().stream_ttl_s + 1
    finally:
        await relay.close()


async def test_a_refused_admission_writes_nothing(redis: aioredis.Redis, namespace: str) -> None:
    keys = Keys(namespace)
    relay = Relay(redis, keys, ChatSettings(max_queue_lag=1))
    first, second = a_request(), a_request()
    try:
        assert await relay._enqueue(first, []) == 1
        assert await relay._enqueue(second, []) == -1, "the queue is at its bound (no worker has read it)"
        assert await redis.exists(keys.request_owner(second.request_id), keys.request_stream(second.request_id)) == 0
        assert await redis.xlen(keys.requests_for(second.request_id)) == 1
    finally:
        await relay.close()
