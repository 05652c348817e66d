"""The log collector: stores every `inference.events` entry once, aggregates usage, answers the usage API.

- A reader takes new entries in batches (one transaction each); a claimer takes over entries a
  collector read and then died with (XAUTOCLAIM), so nothing read is ever lost.
- A batch the database refuses is tried again until it is stored: meanwhile the entries wait in
  the stream (backpressure), and nothing is acknowledged that is not stored.
- Every few seconds the lag and pending count of every consumer group become gauges.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import cast

import redis.asyncio as aioredis
import redis.exceptions
import structlog
from faststream.redis.message import RedisStreamMessage
from litestar import Litestar, Response, get
from litestar.types import Middleware
from prometheus_client import CollectorRegistry, Counter, Gauge
from sqlalchemy.exc import SQLAlchemyError

from chatbot_contracts import LOG_COLLECTOR_GROUP, AnyInferenceEvent
from chatbot_contracts.consumers import (
    consumer_broker,
    consuming,
    event_batch_consumers,
    inference_events_of,
    until_done,
)
from chatbot_contracts.database import query_histogram, time_queries
from chatbot_contracts.redis import connect
from chatbot_contracts.signing import PROBES, SeenNonces, Verifier, signed_only

from .api import ROUTES, UsageError, handle_error
from .events import EventCounter
from .settings import Settings
from .store import EventStore

log = structlog.get_logger()
GROUPS_EVERY_S = 5.0
RETENTION_EVERY_S = 3600.0


class Collector:
    """What the consumers do with a batch, and the collector's own gauges."""

    def __init__(self, store: EventStore, metrics: CollectorRegistry) -> None:
        self.store = store
        self.counter = EventCounter(metrics)
        self.stored = Counter("chatbot_log_collector_events_stored", "Events stored (redeliveries excluded)", registry=metrics)
        self.store_failures = Counter(
            "chatbot_log_collector_store_failures", "Batches the database refused (they are tried again)", registry=metrics
        )
        self.group_lag = Gauge(
            "chatbot_stream_group_lag", "Entries of a stream its consumer group has not read yet", ["stream", "group"], registry=metrics
        )
        self.group_pending = Gauge(
            "chatbot_stream_group_pending", "Entries read by a consumer group and not acknowledged yet", ["stream", "group"],
            registry=metrics,
        )  # fmt: skip

    async def store_batch(self, entries: list[tuple[str, AnyInferenceEvent]]) -> None:
        """Store until stored: the database may be slow or away; the batch is acknowledged only after."""
        new = await until_done(
            lambda: self.store.record(entries), (SQLAlchemyError, OSError), "events.store_failed", self.store_failures.inc
        )
        self.stored.inc(new)
        for _, event in entries:
            self.counter.apply(event)

    async def watch_groups(self, client: aioredis.Redis, streams: dict[str, list[str]], stopping: asyncio.Event) -> None:
        """Forever: the lag and pending count of every group of `streams` (label → its partitions), summed over the
        partitions, into gauges."""
        while not stopping.is_set():
            for label, partitions in streams.items():
                pending: dict[str, int] = {}
                lag: dict[str, int] = {}
                for key in partitions:
                    try:
                        groups = await client.xinfo_groups(key)
                    except (redis.exceptions.RedisError, OSError):
                        continue
                    for group in groups:
                        name = group["name"].decode() if isinstance(group["name"], bytes) else group["name"]
                        pending[name] = pending.get(name, 0) + int(group.get("pending") or 0)
                        lag[name] = lag.get(name, 0) + int(group.get("lag") or 0)
                for name, count in pending.items():
                    self.group_pending.labels(label, name).set(count)
                    self.group_lag.labels(label, name).set(lag[name])
            with suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), GROUPS_EVERY_S)

    async def forget_old(self, settings: Settings, stopping: asyncio.Event) -> None:
        """Hourly: delete events and aggregates past their retention."""
        while not stopping.is_set():
            now = time.time()
            try:
                events, aggregates = await self.store.forget(
                    now - settings.store.log_retention_days * 86400, now - settings.store.usage_retention_days * 86400
                )
                if events or aggregates:
                    log.info("retention.deleted", events=events, aggregate_rows=aggregates)
            except (SQLAlchemyError, OSError) as exc:
                log.warning("retention.failed", error=str(exc).splitlines()[0])
            with suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), RETENTION_EVERY_S)


MAX_BODY_BYTES = 65_536
"""The collector's API takes queries, not bodies."""


def create_app(settings: Settings) -> Litestar:
    keys = settings.redis.keys()
    broker = consumer_broker(settings.redis)
    metrics = CollectorRegistry()
    store = EventStore(settings.store.log_database_url)
    time_queries(store.engine, query_histogram(metrics))
    collector = Collector(store, metrics)
    redis = connect(settings.redis)
    verifier = Verifier(settings.signing.internal_secret, SeenNonces(redis, keys.internal_nonce_prefix))

    async def on_batch(message: RedisStreamMessage) -> None:
        await collector.store_batch(inference_events_of(message.raw_message))

    subscribers = event_batch_consumers(
        broker, keys.events_partitions, LOG_COLLECTOR_GROUP, settings.server.consumer, on_batch,
        batch=settings.store.log_batch_size, gather_s=settings.store.log_gather_s, claim_idle_s=settings.store.log_claim_idle_s,
    )  # fmt: skip

    @get("/healthz", sync_to_thread=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @get("/readyz")
    async def readyz() -> Response[dict[str, str]]:
        if await broker.ping(timeout=1.0):
            return Response({"status": "ready"})
        return Response({"status": "not_ready", "error": "Redis is unreachable"}, status_code=503)

    @asynccontextmanager
    async def lifespan(_: Litestar) -> AsyncIterator[None]:
        await store.migrate()
        stopping = asyncio.Event()
        streams = {"chat.requests": keys.requests_partitions, "inference.events": keys.events_partitions}
        jobs = [
            asyncio.create_task(collector.watch_groups(redis, streams, stopping)),
            asyncio.create_task(collector.forget_old(settings, stopping)),
        ]
        try:
            async with consuming(redis, broker, [(events, LOG_COLLECTOR_GROUP) for events in keys.events_partitions], subscribers):
                yield
        finally:
            stopping.set()
            for job in jobs:
                job.cancel()
            await asyncio.gather(*jobs, return_exceptions=True)
            await redis.aclose()
            await store.close()

    app = Litestar(
        route_handlers=[healthz, readyz, *ROUTES],
        # A plain ASGI middleware, typed without Litestar's scope types (contracts know no framework).
        middleware=[cast("Middleware", signed_only(verifier, PROBES, MAX_BODY_BYTES))],
        lifespan=[lifespan],
        exception_handlers={UsageError: handle_error},
        logging_config=None,
        openapi_config=None,
    )
    app.state.store = store
    app.state.collector = collector
    app.state.metrics = metrics
    return app
