"""Keeping stream consumers alive across Redis restarts.

FastStream creates a consumer group once, when a subscriber starts, and stops the subscriber
for good when its group vanishes (Redis restarted without persistence). `keep_consuming` makes
sure every group exists, from the stream's first entry so that nothing enqueued meanwhile is
skipped, and starts again any subscriber that stopped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, Protocol, TypeVar

import msgspec
import redis.asyncio as aioredis
import redis.exceptions
import structlog
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from .codec import inference_event_decoder
from .events import AnyInferenceEvent
from .keys import DATA_FIELD_BYTES
from .redis import RedisSettings

log = structlog.get_logger()
BatchHandler = Callable[[Any], Awaitable[None]]

T = TypeVar("T")


class Restartable(Protocol):
    @property
    def running(self) -> bool: ...

    async def start(self) -> None: ...


async def ensure_groups(client: aioredis.Redis, groups: Sequence[tuple[str, str]]) -> None:
    """Create each `(stream, group)` that does not exist, reading from the stream's start."""
    for stream, group in groups:
        try:
            await client.xgroup_create(stream, group, id="0", mkstream=True)
            log.info("consumer.group_created", stream=stream, group=group)
        except redis.exceptions.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise


def _still_stopping(subscriber: Restartable) -> bool:
    """A stop in progress (waiting for running handlers) would cancel the tasks of a restart made now."""
    return any(not task.done() for task in getattr(subscriber, "tasks", ()))


async def keep_consuming(
    client: aioredis.Redis,
    groups: Sequence[tuple[str, str]],
    subscribers: Sequence[Restartable],
    stopping: asyncio.Event,
    every_s: float = 1.0,
) -> None:
    """Forever: recreate missing groups and restart stopped subscribers (until `stopping` is set)."""
    while not stopping.is_set():
        await asyncio.sleep(every_s)
        try:
            await ensure_groups(client, groups)
        except (redis.exceptions.RedisError, OSError):
            continue  # Redis is away; try again on the next round
        for subscriber in subscribers:
            if subscriber.running or stopping.is_set() or _still_stopping(subscriber):
                continue
            try:
                await subscriber.start()
                log.warning("consumer.restarted")
            except (redis.exceptions.RedisError, OSError) as exc:
                log.warning("consumer.restart_failed", error=str(exc))


def consumer_broker(settings: RedisSettings, **options: Any) -> Any:
    """A FastStream `RedisBroker` for the platform's stream consumers (its `RedisClusterBroker` on a cluster, its
    `RedisSentinelBroker` with Sentinels).

    Handlers get the message itself (see `the_message`): without dependency injection
    (`apply_types=False`), which for a handler taking the message ran a thread-pool hop per
    message (FastStream's context field is a sync call): about 0.4 ms of CPU each. A command on a
    dropped connection is retried once at once. `options` go to `RedisBroker`.
    """
    from faststream.redis import RedisBroker, RedisClusterBroker, RedisSentinelBroker

    if sentinels := settings.sentinels():
        options = {"sentinels": sentinels, "sentinel_master_name": settings.redis_sentinel_master, **options}
    kind = RedisSentinelBroker if settings.sentinels() else RedisClusterBroker if settings.cluster() else RedisBroker
    return kind(
        settings.url,
        logger=logging.getLogger("chatbot.faststream"),
        apply_types=False,
        socket_connect_timeout=settings.redis_connect_timeout_s,
        retry=Retry(NoBackoff(), 1),
        retry_on_error=[redis.exceptions.ConnectionError, redis.exceptions.TimeoutError],
        **options,
    )


async def the_message(message: T) -> T:
    """A subscriber's decoder that hands its handler the message (entry ids and raw fields), not a decoded body."""
    return message


async def entries_left_raw(batch: Mapping[str, Any], default: Callable[[Mapping[str, Any]], Awaitable[Any]]) -> Any:
    """A batch subscriber's parser: FastStream's own (`default`), handed the batch without its entries, then given them.

    FastStream's batch parser decodes each entry as JSON and encodes the list again as the message's
    body; the handlers here read the entries themselves (`message.raw_message`, with `the_message`),
    so that body is never read: it was half the CPU of the log collector and the conversation
    service under load. The message keeps the batch's entry ids, which its acknowledgement uses.
    """
    message = await default({**batch, "data": []})
    message.raw_message = batch
    return message


def event_batch_consumers(
    broker: Any,
    streams: Sequence[str],
    group: str,
    consumer: str,
    handle: BatchHandler,
    *,
    batch: int,
    gather_s: float,
    claim_idle_s: float,
) -> list[Any]:
    """Consume each of `streams` (the partitions of one stream) of `broker` (a `consumer_broker`) in batches with
    `handle`: per stream, a reader of new entries and a claimer of entries left pending.

    After a batch smaller than `batch` the reader waits `gather_s` before reading on: at a few
    events a batch, FastStream's per-batch handling and the acknowledgement cost more than the
    events. The claimer takes entries that a consumer read and left unacknowledged (it died)
    for `claim_idle_s`. A batch is acknowledged once `handle` returns; when it raises the entries
    stay pending.
    """
    from faststream import AckPolicy
    from faststream.redis import StreamSub

    async def on_new(message: Any) -> None:
        await handle(message)
        if len(message.raw_message["data"]) < batch:
            await asyncio.sleep(gather_s)

    subscribers = []
    for stream in streams:

        def subscriber(stream: str = stream, **options: Any) -> Any:
            sub = StreamSub(stream, group=group, consumer=consumer, batch=True, max_records=batch, **options)
            return broker.subscriber(stream=sub, parser=entries_left_raw, decoder=the_message, ack_policy=AckPolicy.NACK_ON_ERROR)

        reader, claimer = subscriber(polling_interval=1000), subscriber(polling_interval=5000, min_idle_time=int(claim_idle_s * 1000))
        reader(on_new)
        claimer(handle)
        subscribers += [reader, claimer]
    return subscribers


class Broker(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@asynccontextmanager
async def consuming(
    client: aioredis.Redis, broker: Broker, groups: Sequence[tuple[str, str]], subscribers: Sequence[Restartable]
) -> AsyncIterator[None]:
    """Run a broker's consumers for the duration: groups made first, kept alive across Redis restarts, stopped at the end."""
    await ensure_groups(client, groups)
    await broker.start()
    stopping = asyncio.Event()
    watchdog = asyncio.create_task(keep_consuming(client, groups, subscribers, stopping))
    try:
        yield
    finally:
        stopping.set()
        watchdog.cancel()
        await broker.stop()


async def until_done(
    action: Callable[[], Awaitable[T]],
    retry_on: tuple[type[BaseException], ...],
    event: str,
    on_failure: Callable[[], None] | None = None,
    max_delay_s: float = 5.0,
) -> T:
    """Run `action` until it succeeds, backing off up to `max_delay_s` between tries.

    For a consumer whose store is slow or away: the message stays unacknowledged and the ones
    after it wait in the stream (backpressure) instead of being dropped or parked for good.
    """
    delay = 0.1
    while True:
        try:
            return await action()
        except retry_on as exc:
            if on_failure is not None:
                on_failure()
            log.warning(event, error=(str(exc).splitlines() or [type(exc).__name__])[0], retry_in_s=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, max_delay_s)


def inference_event_of(fields: Mapping[bytes, bytes], entry: str) -> AnyInferenceEvent | None:
    """The event in an `inference.events` entry; None (logged, to be acknowledged and skipped) when it cannot be read."""
    try:
        event: AnyInferenceEvent = inference_event_decoder.decode(fields.get(DATA_FIELD_BYTES, b""))
    except msgspec.MsgspecError as exc:
        log.error("event.undecodable", entry=entry, error=str(exc))
        return None
    return event


def inference_events_of(raw_message: Mapping[str, Any]) -> list[tuple[str, AnyInferenceEvent]]:
    """The readable `(entry id, event)`s of a batch a FastStream batch subscriber read (`message.raw_message`).

    An unreadable entry is logged and left out; it is acknowledged with its batch.
    """
    entries = []
    for fields, entry_id in zip(raw_message["data"], raw_message["message_ids"], strict=True):
        entry = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
        event = inference_event_of(fields, entry)
        if event is not None:
            entries.append((entry, event))
    return entries
