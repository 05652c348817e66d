"""The conversation service: an internal Litestar API and a FastStream consumer of `inference.events`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import cast

import structlog
from faststream.redis.message import RedisStreamMessage
from litestar import Litestar, Response, get
from litestar.types import Middleware
from prometheus_client import CollectorRegistry, Counter, Histogram
from sqlalchemy.exc import SQLAlchemyError

from chatbot_contracts import CONVERSATION_GROUP, Registry
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

from .api import ROUTES, handle_error
from .attachments import blob_store
from .cache import TreeCache
from .db.engine import Database
from .errors import ConversationError
from .events import EventApplier, TitleQueue
from .importers import ImportLimits
from .knowledge import KnowledgeService, vector_index
from .knowledge.api import ROUTES as KNOWLEDGE_ROUTES
from .live import FinishedStreams
from .service import ConversationService
from .settings import Settings

log = structlog.get_logger()

IMPORTS_AT_ONCE = 2
"""Imports parsed at once by one replica (each on a worker thread); more wait their turn."""
EVENTS_BATCH = 100
"""Entries of `inference.events` read (and acknowledged) at once."""
EVENTS_GATHER_S = 0.05
"""After a batch smaller than that, the wait before reading on: fewer, larger batches, an answer stored at most this much later."""


def create_app(settings: Settings, registry: Registry) -> Litestar:
    keys = settings.redis.keys()
    broker = consumer_broker(settings.redis)
    redis = connect(settings.redis)
    db = Database(settings.store.database_url, settings.store.database_read_url or None)
    metrics = CollectorRegistry()
    queries = query_histogram(metrics)
    for engine in {db.engine, db.read_engine}:
        time_queries(engine, queries)
    consumed = Counter("chatbot_conversation_events", "Inference events consumed, by type", ["type"], registry=metrics)
    apply_failures = Counter(
        "chatbot_conversation_event_failures", "Events the database refused to apply (they are tried again)", registry=metrics
    )
    store = blob_store(settings.store)
    service = ConversationService(
        db,
        registry,
        TreeCache(redis, settings.redis.redis_namespace),
        max_message_chars=settings.store.max_message_chars,
        attachments=store,
        max_context_images=settings.store.max_context_images,
        max_context_image_bytes=settings.store.max_context_image_bytes,
        share_base_url=settings.store.public_url,
        default_model=settings.store.default_model or None,
        live=FinishedStreams(redis, keys),
    )
    retrievals = Histogram(
        "chatbot_kb_retrieval_seconds", "Knowledge-base retrievals: question embedded, both rankings, passages read", registry=metrics,
        buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
    )  # fmt: skip
    knowledge = KnowledgeService(db, registry, store, redis, keys, vector_index(db), settings.knowledge, retrievals.observe)
    verifier = Verifier(settings.signing.internal_secret, SeenNonces(redis, keys.internal_nonce_prefix))
    applier = EventApplier(service, settings.store.title_model or None, TitleQueue(redis, keys))

    async def on_batch(message: RedisStreamMessage) -> None:
        """Apply the events in order; while the database refuses one, try it again (the batch stays unacknowledged)."""
        for _, event in inference_events_of(message.raw_message):
            await until_done(partial(applier.apply, event), (SQLAlchemyError, OSError), "event.apply_failed", apply_failures.inc)
            consumed.labels(type(event).__struct_config__.tag).inc()

    # Batches: most events (every request's queued/started/first token, and every OpenAI- or
    # Anthropic-compatible turn) are not a stored conversation's.
    subscribers = event_batch_consumers(
        broker, keys.events_partitions, CONVERSATION_GROUP, settings.server.consumer, on_batch,
        batch=EVENTS_BATCH, gather_s=EVENTS_GATHER_S, claim_idle_s=settings.server.events_claim_idle_s,
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
        await db.migrate()
        await store.open()
        try:
            async with consuming(redis, broker, [(events, CONVERSATION_GROUP) for events in keys.events_partitions], subscribers):
                yield
        finally:
            await store.close()
            await db.close()
            await redis.aclose()

    # Documents are the largest bodies; the gateway bounds every other kind to its own limit.
    max_body = max(settings.store.max_body_bytes, settings.knowledge.kb_max_document_bytes + 4096)
    app = Litestar(
        route_handlers=[healthz, readyz, *ROUTES, *KNOWLEDGE_ROUTES],
        # A plain ASGI middleware, typed without Litestar's scope types (contracts know no framework).
        middleware=[cast("Middleware", signed_only(verifier, PROBES, max_body))],
        request_max_body_size=max_body,
        lifespan=[lifespan],
        exception_handlers={ConversationError: handle_error},
        logging_config=None,
        openapi_config=None,
    )
    app.state.applier = applier
    app.state.service = service
    app.state.knowledge = knowledge
    app.state.import_limits = ImportLimits(
        max_message_chars=settings.store.max_message_chars,
        max_messages=settings.store.max_import_messages,
        time_s=settings.store.import_time_s,
    )
    app.state.import_slots = asyncio.Semaphore(IMPORTS_AT_ONCE)
    app.state.metrics = metrics
    return app
