"""The worker process: FastStream consumer of `chat.requests` (group `inference`) plus a heartbeat."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import httpx
import msgspec
import structlog
from faststream import AckPolicy, FastStream
from faststream.redis import RedisBroker, StreamSub
from faststream.redis.annotations import RedisStreamMessage

from chatbot_contracts import DATA_FIELD_BYTES, INFERENCE_GROUP, Keys, Registry, chat_request_decoder
from chatbot_contracts.redis import connect

from .providers import build_providers
from .settings import Settings
from .worker import Worker

log = structlog.get_logger()


async def heartbeat(worker: Worker, name: str, every_s: float) -> None:
    """Announce this worker in the `chat.workers` sorted set, which `/readyz` reads."""
    while True:
        try:
            await worker.redis.zadd(worker.keys.workers, {name: time.time()})
        except Exception as exc:  # Redis may be restarting; the next beat tries again.
            log.warning("heartbeat.failed", error=str(exc))
        await asyncio.sleep(every_s)


def create_app(settings: Settings, registry: Registry) -> FastStream:
    """The worker for these settings and this registry."""
    keys = Keys(settings.redis.redis_namespace)
    name = settings.worker.consumer_name
    broker = RedisBroker(settings.redis.url, logger=logging.getLogger("chatbot.faststream"))
    app = FastStream(broker, logger=logging.getLogger("chatbot.faststream"))
    redis = connect(settings.redis)
    http = httpx.AsyncClient(
        timeout=httpx.Timeout(settings.providers.idle_timeout_s, connect=settings.providers.connect_timeout_s),
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=256),
    )
    worker = Worker(redis, keys, registry, build_providers(http), settings.worker, settings.providers)
    tasks: list[asyncio.Task[None]] = []

    @broker.subscriber(
        stream=StreamSub(keys.chat_requests, group=INFERENCE_GROUP, consumer=name, polling_interval=1000),
        max_workers=settings.worker.worker_concurrency,
        ack_policy=AckPolicy.MANUAL,
    )
    async def on_chat_request(message: RedisStreamMessage) -> None:
        payload = message.raw_message["data"].get(DATA_FIELD_BYTES) or b""
        try:
            request = chat_request_decoder.decode(payload)
        except msgspec.MsgspecError as exc:
            await worker.refuse(payload, f"the request could not be read: {exc}")
            await message.ack()
            return
        with structlog.contextvars.bound_contextvars(request_id=request.request_id):
            await worker.handle(request)
        await message.ack()

    @app.after_startup
    async def start_heartbeat() -> None:
        tasks.append(asyncio.create_task(heartbeat(worker, name, settings.worker.heartbeat_s)))
        log.info("worker.started", consumer=name, concurrency=settings.worker.worker_concurrency, models=len(registry.models))

    @app.on_shutdown
    async def stop_heartbeat() -> None:
        for task in tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            await redis.zrem(keys.workers, name)

    @app.after_shutdown
    async def close_clients() -> None:
        await http.aclose()
        await redis.aclose()

    return app
