"""The log collector: a FastStream consumer of `inference.events` and a small HTTP app."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from faststream import AckPolicy
from faststream.redis import RedisBroker, StreamSub
from faststream.redis.annotations import RedisStreamMessage
from litestar import Litestar, Response, get
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from chatbot_contracts import LOG_COLLECTOR_GROUP, Keys
from chatbot_contracts.consumers import broker_connection_options, consuming, inference_event_of, tune_faststream
from chatbot_contracts.redis import connect

from .events import EventCounter
from .settings import Settings

log = structlog.get_logger()


def create_app(settings: Settings) -> Litestar:
    keys = Keys(settings.redis.redis_namespace)
    tune_faststream()
    broker = RedisBroker(
        settings.redis.url,
        logger=logging.getLogger("chatbot.faststream"),
        **broker_connection_options(settings.redis.redis_connect_timeout_s),
    )
    metrics = CollectorRegistry()
    counter = EventCounter(metrics)

    subscriber = broker.subscriber(
        stream=StreamSub(keys.inference_events, group=LOG_COLLECTOR_GROUP, consumer=settings.server.consumer, polling_interval=1000),
        ack_policy=AckPolicy.NACK_ON_ERROR,
    )

    @subscriber
    async def on_event(message: RedisStreamMessage) -> None:
        event = inference_event_of(message.raw_message["data"], message.message_id)
        if event is not None:
            counter.apply(event)

    @get("/healthz", sync_to_thread=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @get("/readyz")
    async def readyz() -> Response[dict[str, str]]:
        if await broker.ping(timeout=1.0):
            return Response({"status": "ready"})
        return Response({"status": "not_ready", "error": "Redis is unreachable"}, status_code=503)

    @get("/metrics", sync_to_thread=False)
    def prometheus() -> Response[bytes]:
        return Response(generate_latest(metrics), media_type=CONTENT_TYPE_LATEST)

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        redis = connect(settings.redis)
        try:
            async with consuming(redis, broker, [(keys.inference_events, LOG_COLLECTOR_GROUP)], [subscriber]):
                yield
        finally:
            await redis.aclose()

    return Litestar(route_handlers=[healthz, readyz, prometheus], lifespan=[lifespan], logging_config=None)
