"""The conversation service consumes `inference.events` with its own consumer group."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from litestar.testing import AsyncTestClient

from chatbot_contracts import CONVERSATION_GROUP, DATA_FIELD, Completed, Keys, Queued, encode
from chatbot_conversation import Settings, create_app


async def test_terminal_events_are_applied_once_and_acknowledged(redis_url: str, namespace: str, redis: aioredis.Redis) -> None:
    keys = Keys(namespace)
    app = create_app(Settings.from_env({"REDIS_URL": redis_url, "CHATBOT_REDIS_NAMESPACE": namespace, "CHATBOT_CONSUMER_NAME": "c1"}))
    async with AsyncTestClient(app=app) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        assert (await client.get("/readyz")).status_code == 200
        await redis.xadd(keys.inference_events, {DATA_FIELD: encode(Queued(request_id="r1", model="m", at=1.0))})
        await redis.xadd(
            keys.inference_events, {DATA_FIELD: encode(Completed(request_id="r1", model="m", at=2.0, text="hi", finish_reason="stop"))}
        )
        await redis.xadd(keys.inference_events, {DATA_FIELD: b"not json"})
        for _ in range(200):
            [group] = await redis.xinfo_groups(keys.inference_events)
            if group["entries-read"] == 3 and group["pending"] == 0:
                break
            await asyncio.sleep(0.02)
        assert group["name"] == CONVERSATION_GROUP.encode()
        assert group["entries-read"] == 3 and group["pending"] == 0, "every event is read and acknowledged"
        assert app.state.applier.applied == {"completed": 1}
