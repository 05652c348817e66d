"""`chatbot-ingest`: the ingestion workers, consumers of `kb.ingest` (group `ingest`), configured like the
conversation service whose database and attachment store they share.

Each worker indexes one document at a time (a second may be one it took over). While it works it keeps its entry
fresh, so that only a worker that died (or stopped answering) has its document taken over, after
`CHATBOT_INGEST_CLAIM_IDLE_S`.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from typing import Any

import msgspec
import redis.asyncio as aioredis
import redis.exceptions
import structlog
import uvloop
from faststream.redis.message import RedisStreamMessage
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from sqlalchemy.exc import SQLAlchemyError

from chatbot_contracts import DATA_FIELD_BYTES, INGEST_GROUP, Keys, Registry
from chatbot_contracts.consumers import consumer_broker, consuming, event_batch_consumers
from chatbot_contracts.heap import settle_heap
from chatbot_contracts.knowledge import IngestJob
from chatbot_contracts.observability import configure_logging, serve_metrics
from chatbot_contracts.redis import connect
from chatbot_contracts.settings import or_exit

from ..attachments import blob_store
from ..db.engine import Database
from ..settings import Settings
from .embedder import Embedder
from .ingest import Ingestor
from .service import ProgressLog
from .vectors import vector_index

log = structlog.get_logger()
_job = msgspec.json.Decoder(IngestJob)


class IngestMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.documents = Counter("chatbot_ingest_documents", "Documents indexed, by final state", ["state"], registry=registry)
        self.chunks = Counter("chatbot_ingest_chunks", "Passages embedded and stored", registry=registry)
        self.seconds = Histogram(
            "chatbot_ingest_document_seconds",
            "Time to index one document",
            registry=registry,
            buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900),
        )
        self.lag = Gauge("chatbot_ingest_lag", "Documents queued or being indexed (kb.ingest: unread plus pending)", registry=registry)


async def keep_fresh(client: aioredis.Redis, keys: Keys, consumer: str, entry_ids: list[Any], every_s: float) -> None:
    """Reset the entries' idle time now and then: only a dead worker's document is taken over."""
    while True:
        await asyncio.sleep(every_s)
        with contextlib.suppress(redis.exceptions.RedisError, OSError):
            await client.xclaim(keys.ingest, INGEST_GROUP, consumer, 0, entry_ids, justid=True)


async def measure_lag(client: aioredis.Redis, keys: Keys, metrics: IngestMetrics, every_s: float = 5.0) -> None:
    while True:
        with contextlib.suppress(redis.exceptions.RedisError, OSError):
            for group in await client.xinfo_groups(keys.ingest):
                if group["name"] in (INGEST_GROUP, INGEST_GROUP.encode()):
                    metrics.lag.set((group.get("lag") or 0) + (group.get("pending") or 0))
        await asyncio.sleep(every_s)


async def serve(settings: Settings, registry: Registry, metrics_registry: CollectorRegistry) -> None:
    keys = settings.redis.keys()
    knowledge = settings.knowledge
    consumer = f"ingest-{settings.server.consumer}"
    client = connect(settings.redis)
    broker = consumer_broker(settings.redis)
    db = Database(settings.store.database_url)
    blobs = blob_store(settings.store)
    metrics = IngestMetrics(metrics_registry)
    ingestor = Ingestor(db, blobs, vector_index(db), Embedder(client, keys), ProgressLog(client, keys), knowledge, metrics.chunks.inc)

    async def on_batch(message: RedisStreamMessage) -> None:
        raw: Any = message.raw_message
        ids = [i.decode() if isinstance(i, bytes) else str(i) for i in raw["message_ids"]]
        fresh = asyncio.create_task(keep_fresh(client, keys, consumer, ids, max(knowledge.ingest_claim_idle_s / 4, 0.2)))
        try:
            for fields in raw["data"]:
                try:
                    job = _job.decode(fields.get(DATA_FIELD_BYTES, b""))
                except msgspec.MsgspecError as exc:
                    log.error("ingest.undecodable", error=str(exc))
                    continue
                started = time.monotonic()
                try:
                    state = await ingestor.run(job)
                except (SQLAlchemyError, OSError, redis.exceptions.RedisError) as exc:
                    # Left pending: taken over (by this worker or another) once it has been idle long enough.
                    log.warning("ingest.interrupted", document_id=job.document_id, error=str(exc).splitlines()[0])
                    raise
                if state is not None:
                    metrics.documents.labels(state).inc()
                    metrics.seconds.observe(time.monotonic() - started)
        finally:
            fresh.cancel()

    subscribers = event_batch_consumers(
        broker, [keys.ingest], INGEST_GROUP, consumer, on_batch, batch=1, gather_s=0.0, claim_idle_s=knowledge.ingest_claim_idle_s
    )
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await blobs.open()
    lag = asyncio.create_task(measure_lag(client, keys, metrics))
    try:
        async with consuming(client, broker, [(keys.ingest, INGEST_GROUP)], subscribers):
            log.info("ingest.started", consumer=consumer)
            await stopping.wait()
    finally:
        lag.cancel()
        await blobs.close()
        await db.close()
        await client.aclose()


def main() -> None:
    settings = or_exit(Settings.from_env, "chatbot-ingest")
    configure_logging("ingest", settings.server.log_level)
    registry = or_exit(lambda: Registry.load(settings.store.models_file), "chatbot-ingest")
    metrics_registry = CollectorRegistry()
    serve_metrics(metrics_registry, settings.metrics.metrics_host, settings.knowledge.ingest_metrics_port)
    settle_heap()
    uvloop.run(serve(settings, registry, metrics_registry))


if __name__ == "__main__":
    main()
