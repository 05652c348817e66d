"""The log collector consumes `inference.events` with its own group and exposes what it counted."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from litestar.testing import AsyncTestClient

from chatbot_contracts import DATA_FIELD, Completed, Keys, Queued, TokenUsage, encode
from chatbot_log_collector import Settings, create_app


async def test_events_are_counted_into_metrics(redis_url: str, namespace: str, redis: aioredis.Redis) -> None:
    keys = Keys(namespace)
    app = create_app(Settings.from_env({"REDIS_URL": redis_url, "CHATBOT_REDIS_NAMESPACE": namespace, "CHATBOT_CONSUMER_NAME": "l1"}))
    async with AsyncTestClient(app=app) as client:
        assert (await client.get("/readyz")).status_code == 200
        usage = TokenUsage(input_tokens=10, output_tokens=4, cost_usd=0.25)
        await redis.xadd(keys.inference_events, {DATA_FIELD: encode(Queued(request_id="r1", model="fast", at=1.0))})
        await redis.xadd(
            keys.inference_events,
            {DATA_FIELD: encode(Completed(request_id="r1", model="fast", at=2.0, text="hi", finish_reason="stop", usage=usage))},
        )
        for _ in range(200):
            metrics = (await client.get("/metrics")).text
            if 'chatbot_log_collector_events_total{type="completed"} 1.0' in metrics:
                break
            await asyncio.sleep(0.02)
        assert 'chatbot_log_collector_events_total{type="queued"} 1.0' in metrics
        assert 'chatbot_log_collector_tokens_total{model="fast",type="input"} 10.0' in metrics
        assert 'chatbot_log_collector_tokens_total{model="fast",type="output"} 4.0' in metrics
        assert 'chatbot_log_collector_cost_usd_total{model="fast"} 0.25' in metrics
