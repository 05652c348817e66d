"""The worker's queue reader against a real Redis: only what fits is read, idle entries are taken over, lost groups and
a restarted Redis are survived, and a stop leaves what did not finish pending."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from chatbot_contracts import DATA_FIELD_BYTES
from chatbot_contracts.consumers import ensure_groups
from chatbot_contracts.redis import RedisSettings, connect
from chatbot_devtools.redis_server import RedisServer
from chatbot_inference.queue import QueueReader

GROUP = "inference"


class Recorder:
    """A handler that holds each entry until released, noting what it saw and how many ran at once."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, bytes]] = []
        self.streams: set[str] = set()
        self.running = 0
        self.most = 0
        self.release = asyncio.Event()

    async def __call__(self, stream: str, entry: str, payload: bytes) -> None:
        self.streams.add(stream)
        self.seen.append((entry, payload))
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await self.release.wait()
        finally:
            self.running -= 1


async def until(condition: Callable[[], bool], within_s: float = 5.0) -> None:
    deadline = time.monotonic() + within_s
    while not condition():
        assert time.monotonic() < deadline, "not within the time"
        await asyncio.sleep(0.02)


@pytest.fixture
async def stream(redis: aioredis.Redis, namespace: str) -> str:
    name = f"{namespace}chat.requests"
    await ensure_groups(redis, [(name, GROUP)])
    return name


async def enqueue(redis: aioredis.Redis, stream: str, count: int) -> list[str]:
    return [(await redis.xadd(stream, {DATA_FIELD_BYTES: f"request {i}".encode()})).decode() for i in range(count)]


async def pending_of(redis: aioredis.Redis, stream: str, consumer: str) -> int:
    consumers = await redis.xinfo_consumers(stream, GROUP)
    return next((int(c["pending"]) for c in consumers if c["name"].decode() == consumer), 0)


async def test_a_busy_reader_reads_only_as_many_entries_as_it_has_free_slots(redis: aioredis.Redis, stream: str) -> None:
    handler = Recorder()
    reader = QueueReader(redis, stream, GROUP, "w1", handler, slots=2, claim_idle_s=60, block_ms=100)
    reader.start()
    try:
        ids = await enqueue(redis, stream, 5)
        await until(lambda: len(handler.seen) == 2)
        await asyncio.sleep(0.5)  # several reads' time: none of them may take more
        assert len(handler.seen) == 2 and await pending_of(redis, stream, "w1") == 2, "three entries left for other workers"
        assert [entry for entry, _ in handler.seen] == ids[:2] and handler.seen[0][1] == b"request 0"
        handler.release.set()
        await until(lambda: len(handler.seen) == 5)
        assert handler.most == 2
    finally:
        await reader.stop(1)


async def test_entries_a_dead_consumer_left_idle_are_taken_over(redis: aioredis.Redis, stream: str) -> None:
    ids = await enqueue(redis, stream, 3)
    await redis.xreadgroup(GROUP, "dead", {stream: ">"}, count=3)  # read, never acknowledged
    handler = Recorder()
    handler.release.set()
    reader = QueueReader(redis, stream, GROUP, "w1", handler, slots=4, claim_idle_s=0.3, claim_every_s=0.1, block_ms=100)
    reader.start()
    try:
        await until(lambda: len(handler.seen) == 3)
        assert sorted(entry for entry, _ in handler.seen) == ids
        assert await pending_of(redis, stream, "dead") == 0
    finally:
        await reader.stop(1)


async def test_a_group_that_vanished_is_made_again_and_reading_goes_on(redis: aioredis.Redis, stream: str) -> None:
    handler = Recorder()
    handler.release.set()
    reader = QueueReader(redis, stream, GROUP, "w1", handler, slots=4, claim_idle_s=60, block_ms=100, retry_s=0.1)
    reader.start()
    try:
        await enqueue(redis, stream, 1)
        await until(lambda: len(handler.seen) == 1)
        await redis.delete(stream)  # as after a restart without persistence: stream and group gone
        await enqueue(redis, stream, 2)
        await until(lambda: len(handler.seen) == 3)
    finally:
        await reader.stop(1)


async def test_reading_resumes_within_seconds_of_a_restarted_redis(tmp_path: Path, namespace: str) -> None:
    server = RedisServer(tmp_path / "volatile", persist=False).start()
    client = connect(RedisSettings(url=server.url, redis_connect_timeout_s=0.2))
    stream = f"{namespace}chat.requests"
    handler = Recorder()
    handler.release.set()
    try:
        await ensure_groups(client, [(stream, GROUP)])
        reader = QueueReader(client, stream, GROUP, "w1", handler, slots=4, claim_idle_s=60)
        reader.start()
        await enqueue(client, stream, 1)
        await until(lambda: len(handler.seen) == 1)
        server.kill()
        await asyncio.sleep(1.5)  # reads fail meanwhile
        server.start()
        back = time.monotonic()
        while True:  # the request as the gateway enqueues it: the stream made if Redis lost it
            try:
                await enqueue(client, stream, 1)
                break
            except Exception:
                await asyncio.sleep(0.05)
        await until(lambda: len(handler.seen) == 2, within_s=10)
        assert time.monotonic() - back < 5, "served again within 5 s of Redis returning"
        await reader.stop(1)
    finally:
        await client.aclose()
        server.stop()


async def test_a_stop_waits_out_the_grace_then_leaves_the_unfinished_pending(redis: aioredis.Redis, stream: str) -> None:
    finished: list[str] = []

    async def handle(stream: str, entry: str, payload: bytes) -> None:
        await asyncio.sleep(0.1 if payload == b"request 0" else 30)
        finished.append(entry)
        await redis.xack(stream, GROUP, entry)

    reader = QueueReader(redis, stream, GROUP, "w1", handle, slots=4, claim_idle_s=60, block_ms=100)
    reader.start()
    ids = await enqueue(redis, stream, 2)
    await until(lambda: reader.running == 2)
    started = time.monotonic()
    await reader.stop(grace_s=0.5)
    assert 0.4 < time.monotonic() - started < 2
    assert finished == ids[:1] and reader.running == 0
    assert await pending_of(redis, stream, "w1") == 1, "the cancelled one is left for another worker"
    await enqueue(redis, stream, 1)
    await asyncio.sleep(0.3)
    assert finished == ids[:1], "a stopped reader reads nothing more"


async def test_partitions_share_the_slots_and_each_is_read(redis: aioredis.Redis, namespace: str) -> None:
    streams = [f"{namespace}chat.requests.{{p{i}}}" for i in range(4)]
    await ensure_groups(redis, [(name, GROUP) for name in streams])
    handler = Recorder()
    reader = QueueReader(redis, streams, GROUP, "w1", handler, slots=6, claim_idle_s=60, block_ms=100)
    reader.start()
    try:
        for name in streams:
            await enqueue(redis, name, 3)
        await until(lambda: len(handler.seen) == 6)
        await asyncio.sleep(0.3)
        assert handler.most == 6, "more entries were read than the worker has slots"
        assert sum([await pending_of(redis, name, "w1") for name in streams]) == 6, "entries were read ahead of a free slot"
        handler.release.set()
        await until(lambda: len(handler.seen) == 12)
        assert handler.streams == set(streams)
    finally:
        await reader.stop(1)
