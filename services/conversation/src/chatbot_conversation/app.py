"""The conversation service: an internal Litestar API and a FastStream consumer of `inference.events`."""

from __future__ import annotations

import logging

import msgspec
import structlog
from faststream import AckPolicy
from faststream.redis import RedisBroker, StreamSub
from faststream.redis.annotations import RedisStreamMessage
from litestar import Litestar, Response, get

from chatbot_contracts import CONVERSATION_GROUP, DATA_FIELD_BYTES, Keys, inference_event_decoder

from .events import EventApplier
from .settings import Settings

log = structlog.get_logger()


def create_app(settings: Settings) -> Litestar:
    keys = Keys(settings.redis.redis_namespace)
    broker = RedisBroker(settings.redis.url, logger=logging.getLogger("chatbot.faststream"))
    applier = EventApplier()

    @broker.subscriber(
        stream=StreamSub(keys.inference_events, group=CONVERSATION_GROUP, consumer=settings.server.consumer, polling_interval=1000),
        ack_policy=AckPolicy.NACK_ON_ERROR,
    )
    async def on_event(message: RedisStreamMessage) -> None:
        try:
            event = inference_event_decoder.decode(message.raw_message["data"].get(DATA_FIELD_BYTES, b""))
        except msgspec.MsgspecError as exc:
            log.error("event.undecodable", entry=message.message_id, error=str(exc))
            return
        await applier.apply(event)

    @get("/healthz", sync_to_thread=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @get("/readyz")
    async def readyz() -> Response[dict[str, str]]:
        if await broker.ping(timeout=1.0):
            return Response({"status": "ready"})
        return Response({"status": "not_ready", "error": "Redis is unreachable"}, status_code=503)

    app = Litestar(route_handlers=[healthz, readyz], on_startup=[broker.start], on_shutdown=[broker.stop], logging_config=None)
    app.state.applier = applier
    return app
