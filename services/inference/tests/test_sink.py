"""The stream sink: every event stored in order, bursts coalesced, retention set at the end."""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis import exceptions as redis_exceptions

from chatbot_contracts import (
    DATA_FIELD_BYTES,
    Delta,
    Done,
    Keys,
    Queued,
    Start,
    Started,
    encode,
    inference_event_decoder,
    stream_event_decoder,
)
from chatbot_contracts.redis import TRANSIENT, RedisSettings, connect
from chatbot_devtools.redis_server import NoRedis, RedisServer
from chatbot_inference.sink import SharedPipeline, StreamSink, TakenOver, coalesce


async def stored(redis: aioredis.Redis, key: str) -> list[object]:
    return [stream_event_decoder.decode(fields[DATA_FIELD_BYTES]) for _, fields in await redis.xrange(key)]


def sink_for(redis: aioredis.Redis, keys: Keys, request_id: str) -> StreamSink:
    return StreamSink(
        SharedPipeline(redis), keys.request_stream(request_id), keys.inference_events, open_ttl_s=600, closed_ttl_s=60, events_maxlen=1000
    )


def test_coalesce_joins_only_adjacent_deltas() -> None:
    started = Started(model="m", provider="openai")
    assert coalesce([Delta(text="a"), Delta(text="b"), started, Delta(text="c"), Done(reason="stop")]) == [
        Delta(text="ab"),
        started,
        Delta(text="c"),
        Done(reason="stop"),
    ]


async def test_a_burst_becomes_few_entries_with_the_same_text(redis: aioredis.Redis, namespace: str) -> None:
    keys = Keys(namespace)
    sink = sink_for(redis, keys, "r1")
    tokens = [f"t{i} " for i in range(500)]
    sink.push(Started(model="m", provider="openai"))
    for token in tokens:
        sink.push(Delta(text=token))
    await sink.close(Done(reason="stop"))
    events = await stored(redis, keys.request_stream("r1"))
    assert events[0] == Started(model="m", provider="openai") and events[-1] == Done(reason="stop")
    deltas = [e for e in events if isinstance(e, Delta)]
    assert "".join(d.text for d in deltas) == "".join(tokens)
    assert len(deltas) < 10, "tokens pushed together must be written together"
    assert 0 < await redis.ttl(keys.request_stream("r1")) <= 60


async def test_a_lone_token_is_written_at_once(redis: aioredis.Redis, namespace: str) -> None:
    keys = Keys(namespace)
    sink = sink_for(redis, keys, "r2")
    sink.push(Delta(text="first"))
    for _ in range(100):
        if await redis.xlen(keys.request_stream("r2")):
            break
        await asyncio.sleep(0.01)
    assert await stored(redis, keys.request_stream("r2")) == [Delta(text="first")]
    assert await redis.ttl(keys.request_stream("r2")) > 60, "an open stream keeps the longer retention"
    await sink.close(Done(reason="stop"))


async def entry_times(redis: aioredis.Redis, key: str) -> list[tuple[int, object]]:
    """Each stored event with the millisecond Redis wrote it at (from its entry id)."""
    return [(int(entry.split(b"-")[0]), stream_event_decoder.decode(fields[DATA_FIELD_BYTES])) for entry, fields in await redis.xrange(key)]


async def test_an_event_that_may_wait_goes_with_the_next_one(redis: aioredis.Redis, namespace: str) -> None:
    keys = Keys(namespace)
    key = keys.request_stream("w1")
    sink = sink_for(redis, keys, "w1")
    started = Started(model="m", provider="openai")
    sink.push(started, within_s=30)
    await asyncio.sleep(0.05)
    assert await redis.xlen(key) == 0, "an event that may wait is not written alone before its time"
    sink.push(Delta(text="first"))
    for _ in range(100):
        if await redis.xlen(key):
            break
        await asyncio.sleep(0.005)
    (written_at, first), (token_at, token) = await entry_times(redis, key)
    # One write: both in one round, so within the millisecond Redis's clock may turn between them.
    assert (first, token) == (started, Delta(text="first")) and token_at - written_at <= 1, "one write, in order"
    await sink.close(Done(reason="stop"))


async def test_an_event_that_may_wait_is_written_after_its_time(redis: aioredis.Redis, namespace: str) -> None:
    """No token comes (a provider slow to start): `started` is written all the same, `within_s` later."""
    keys = Keys(namespace)
    key = keys.request_stream("w2")
    sink = sink_for(redis, keys, "w2")
    pushed_at = time.time()
    sink.push(Started(model="m", provider="openai"), within_s=0.2)
    for _ in range(200):
        if await redis.xlen(key):
            break
        await asyncio.sleep(0.01)
    [(written_at, event)] = await entry_times(redis, key)
    assert event == Started(model="m", provider="openai")
    assert written_at / 1000 - pushed_at >= 0.19, "written at its time, not at once"
    await sink.close(Done(reason="stop"))
    assert [e for _, e in await entry_times(redis, key)] == [Started(model="m", provider="openai"), Done(reason="stop")]


async def test_inference_events_go_to_their_own_stream(redis: aioredis.Redis, namespace: str) -> None:
    keys = Keys(namespace)
    sink = sink_for(redis, keys, "r3")
    queued = Queued(request_id="r3", model="m", at=1.0)
    await sink.close(queued, Done(reason="stop"))
    [(_, fields)] = await redis.xrange(keys.inference_events)
    assert inference_event_decoder.decode(fields[DATA_FIELD_BYTES]) == queued
    assert await stored(redis, keys.request_stream("r3")) == [Done(reason="stop")]


def test_coalesce_joins_argument_pieces_of_one_tool_call_only() -> None:
    from chatbot_contracts import ToolCallDelta

    pieces = [
        ToolCallDelta(index=0, id="a", name="f", arguments=""),
        ToolCallDelta(index=0, arguments='{"x":'),
        ToolCallDelta(index=0, arguments="1}"),
        ToolCallDelta(index=1, id="b", name="g", arguments="{}"),
    ]
    assert coalesce(pieces) == [
        ToolCallDelta(index=0, id="a", name="f", arguments='{"x":1}'),
        ToolCallDelta(index=1, id="b", name="g", arguments="{}"),
    ]


async def test_the_terminal_write_releases_the_request_from_its_keys_running_set(redis: aioredis.Redis, namespace: str) -> None:
    keys = Keys(namespace)
    await redis.zadd(keys.inflight("key-1"), {"r9": 1e12, "other": 1e12})
    sink = StreamSink(
        SharedPipeline(redis),
        keys.request_stream("r9"),
        keys.inference_events,
        open_ttl_s=60,
        closed_ttl_s=60,
        events_maxlen=10,
        release=(keys.inflight("key-1"), "r9"),
    )
    sink.push(Delta(text="hi"))
    await sink.close(Done(reason="stop"))
    assert await redis.zrange(keys.inflight("key-1"), 0, -1) == [b"other"]


async def test_many_streams_written_at_once_share_round_trips(redis: aioredis.Redis, namespace: str) -> None:
    """Streams that write together go out in a few pipelines; each stream keeps its own order."""
    keys = Keys(namespace)
    writer = SharedPipeline(redis)
    pipelines = 0
    execute = redis.pipeline

    def counted(*args: object, **kwargs: object) -> object:
        nonlocal pipelines
        pipelines += 1
        return execute(*args, **kwargs)  # type: ignore[arg-type]

    redis.pipeline = counted  # type: ignore[method-assign]
    sinks = [
        StreamSink(writer, keys.request_stream(f"s{i}"), keys.inference_events, open_ttl_s=60, closed_ttl_s=60, events_maxlen=1000)
        for i in range(50)
    ]
    for round_ in range(3):
        for sink in sinks:
            sink.push(Delta(text=f"{round_} "))
        await asyncio.sleep(0)
    await asyncio.gather(*(sink.close(Done(reason="stop")) for sink in sinks))
    assert pipelines <= 10, f"{pipelines} pipelines for 50 streams"
    for i in range(50):
        events = await stored(redis, keys.request_stream(f"s{i}"))
        assert "".join(e.text for e in events if isinstance(e, Delta)) == "0 1 2 " and events[-1] == Done(reason="stop")
        assert 0 < await redis.ttl(keys.request_stream(f"s{i}")) <= 60


async def test_a_refused_write_fails_alone_in_a_shared_round_trip(redis: aioredis.Redis, namespace: str) -> None:
    keys = Keys(namespace)
    writer = SharedPipeline(redis)
    await redis.set(f"{namespace}not-a-stream", "x")
    broken = StreamSink(writer, f"{namespace}not-a-stream", keys.inference_events, open_ttl_s=60, closed_ttl_s=60, events_maxlen=10)
    fine = StreamSink(writer, keys.request_stream("fine"), keys.inference_events, open_ttl_s=60, closed_ttl_s=60, events_maxlen=10)
    broken.push(Delta(text="lost"))
    fine.push(Delta(text="kept"))
    results = await asyncio.gather(broken.close(Done(reason="stop")), fine.close(Done(reason="stop")), return_exceptions=True)
    assert isinstance(results[0], redis_exceptions.ResponseError) and results[1] is None
    assert await stored(redis, keys.request_stream("fine")) == [Delta(text="kept"), Done(reason="stop")]


async def test_a_write_window_gathers_streams_into_one_round_and_never_delays_a_first_or_last_write(
    redis: aioredis.Redis, namespace: str
) -> None:
    keys = Keys(namespace)
    shared = SharedPipeline(redis, window_s=0.2)
    sinks = [
        StreamSink(shared, keys.request_stream(f"ww{i}"), keys.inference_events, open_ttl_s=600, closed_ttl_s=60, events_maxlen=1000)
        for i in range(2)
    ]
    pushed = time.monotonic()
    for sink in sinks:
        sink.push(Delta(text="first"))
    await asyncio.sleep(0.05)
    assert [await redis.xlen(keys.request_stream(f"ww{i}")) for i in range(2)] == [1, 1], "first writes go at once"

    for sink in sinks:
        sink.push(Delta(text="later"))
    await asyncio.sleep(0.1)
    assert [await redis.xlen(keys.request_stream(f"ww{i}")) for i in range(2)] == [1, 1], "later ones wait for the window"
    for _ in range(100):
        if await redis.xlen(keys.request_stream("ww1")) == 2:
            break
        await asyncio.sleep(0.01)
    waited = time.monotonic() - pushed
    (_, _), (a_at, _) = await entry_times(redis, keys.request_stream("ww0"))
    (_, _), (b_at, _) = await entry_times(redis, keys.request_stream("ww1"))
    assert abs(a_at - b_at) <= 1 and 0.2 <= waited < 0.6, "both streams' later writes went in one round, after the window"

    sinks[0].push(Delta(text="waits"))
    await asyncio.sleep(0.01)
    closing = time.monotonic()
    await sinks[1].close(Done(reason="stop"))
    assert time.monotonic() - closing < 0.15, "a stream's last write goes at once, and takes what waited with it"
    assert await stored(redis, keys.request_stream("ww0")) == [Delta(text="first"), Delta(text="later"), Delta(text="waits")]
    await sinks[0].close(Done(reason="stop"))


class Outage:
    """A Redis of the test's own that goes away and comes back with what it held (as a promoted replica does), a
    sink writing to it through a client that never resends, as the worker's writer."""

    def __init__(self, data_dir: Path) -> None:
        self.server = RedisServer(data_dir, persist=True).start()
        self.settings = RedisSettings(url=self.server.url)
        self.keys = self.settings.keys()
        self.writer = connect(self.settings, timed_replies=False, resend=False)
        self.rewritten: list[int] = []
        self.pipeline = SharedPipeline(self.writer, 5.0, outage_s=10.0, on_rewrite=self.rewritten.append)

    def sink(self, request_id: str, attempt: int = 1) -> StreamSink:
        return StreamSink(
            self.pipeline,
            self.keys.request_stream(request_id),
            self.keys.events_for(request_id),
            open_ttl_s=600,
            closed_ttl_s=60,
            events_maxlen=1000,
            fence=(self.keys.attempts(request_id), attempt),
        )

    async def written(self, key: str, count: int) -> None:
        async with aioredis.Redis.from_url(self.server.url) as redis:
            for _ in range(200):
                if await redis.xlen(key) >= count:
                    return
                await asyncio.sleep(0.01)
        raise AssertionError(f"{key} did not reach {count} entries")

    def away(self) -> None:
        self.server.stop()  # its data stays on disk for `back`

    def back(self) -> None:
        self.server.start()

    async def entries(self, key: str) -> list[tuple[bytes, object]]:
        async with aioredis.Redis.from_url(self.server.url) as redis:
            return [(entry_id, stream_event_decoder.decode(fields[DATA_FIELD_BYTES])) for entry_id, fields in await redis.xrange(key)]

    def first_round(self, request_id: str) -> tuple[StreamSink, list[tuple[bytes | str | int, ...]]]:
        """A sink's first round (an event, `started` and a token) as the shared pipeline would send it, taken out of
        the pipeline: the test sends it by hand, as much of it as landed, and drops the reply."""
        sink = self.sink(request_id)
        sink.push(Queued(request_id=request_id, model="m", at=1.0))
        sink.push(Started(model="m", provider="openai"))
        sink.push(Delta(text="a "))
        commands: list[tuple[bytes | str | int, ...]] = []
        sink.fill(commands)
        self.pipeline.forget(sink)
        return sink, commands

    async def send(self, commands: list[tuple[bytes | str | int, ...]]) -> list[object]:
        async with aioredis.Redis.from_url(self.server.url) as redis:
            return [await redis.execute_command(*command) for command in commands]

    async def close(self) -> None:
        await self.writer.aclose()
        self.server.stop()


@pytest.fixture
async def outage(tmp_path: Path) -> AsyncIterator[Outage]:
    try:
        outage = Outage(tmp_path / "redis")
    except NoRedis as exc:
        pytest.skip(str(exc))
    yield outage
    await outage.close()


async def test_a_stream_keeps_being_written_through_an_outage_each_entry_once(outage: Outage) -> None:
    key = outage.keys.request_stream("through")
    sink = outage.sink("through")
    sink.push(Delta(text="a "))
    await outage.written(key, 1)
    sink.push(Delta(text="b "))
    await outage.written(key, 2)
    outage.away()
    sink.push(Delta(text="c "))  # its round fails: Redis is away
    await asyncio.sleep(0.3)
    sink.push(Delta(text="d "))
    outage.back()
    await sink.close(Done(reason="stop"))
    stored = await outage.entries(key)
    assert [event for _, event in stored] == [Delta(text="a "), Delta(text="b "), Delta(text="c "), Delta(text="d "), Done(reason="stop")]
    assert [entry_id for entry_id, _ in stored] == sorted(entry_id for entry_id, _ in stored)
    assert outage.rewritten == [], "nothing that had been stored was lost"


async def test_a_lost_tail_is_written_again_under_its_own_ids(outage: Outage) -> None:
    """The promoted replica lacks the last entry the master had confirmed: the repair writes it again, with the id
    a client that read it from the master already has."""
    key = outage.keys.request_stream("tail")
    sink = outage.sink("tail")
    for i, text in enumerate(["a ", "b ", "c "]):
        sink.push(Delta(text=text))
        await outage.written(key, i + 1)
    before = await outage.entries(key)
    async with aioredis.Redis.from_url(outage.server.url) as redis:
        # What a replica that missed the last write holds: the stream without it, its last id the one before.
        await redis.delete(key)
        for entry_id, event in before[:-1]:
            await redis.xadd(key, {DATA_FIELD_BYTES: encode(event)}, id=entry_id)
    outage.away()
    sink.push(Delta(text="d "))
    outage.back()
    await sink.close(Done(reason="stop"))
    stored = await outage.entries(key)
    assert stored[:3] == before, "the lost entry is back under the id it had"
    assert [event for _, event in stored[3:]] == [Delta(text="d "), Done(reason="stop")]
    assert outage.rewritten == [1]


async def test_a_stream_taken_over_during_an_outage_is_left_to_the_new_attempt(outage: Outage) -> None:
    key = outage.keys.request_stream("taken")
    sink = outage.sink("taken", attempt=1)
    async with aioredis.Redis.from_url(outage.server.url) as redis:
        await redis.set(outage.keys.attempts("taken"), 1)
    sink.push(Delta(text="mine "))
    await outage.written(key, 1)
    async with aioredis.Redis.from_url(outage.server.url) as redis:
        await redis.incr(outage.keys.attempts("taken"))  # another worker started attempt 2
    outage.away()
    sink.push(Delta(text="not written"))
    outage.back()
    with pytest.raises(TakenOver):
        await sink.close(Done(reason="stop"))
    assert [event for _, event in await outage.entries(key)] == [Delta(text="mine ")]


async def test_a_stream_redis_lost_entirely_fails_as_redis_being_away(tmp_path: Path) -> None:
    try:
        outage = Outage(tmp_path / "redis")
    except NoRedis as exc:
        pytest.skip(str(exc))
    try:
        key = outage.keys.request_stream("gone")
        sink = outage.sink("gone")
        sink.push(Delta(text="a "))
        await outage.written(key, 1)
        outage.server.kill()
        for path in outage.server.data_dir.glob("appendonly*"):
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        sink.push(Delta(text="b "))
        outage.back()
        with pytest.raises(TRANSIENT):
            await sink.close(Done(reason="stop"))
        assert await outage.entries(key) == [], "nothing is written into a Redis that lost the stream"
    finally:
        await outage.close()


async def test_a_first_write_lost_with_its_connection_is_written_again(outage: Outage) -> None:
    """Redis came back (a restart, a failover) and the writer's first round found its connection dead: that round is
    sent again, and its entries get Redis's ids then (one of the other tests covers a round that landed)."""
    key = outage.keys.request_stream("first")
    async with aioredis.Redis.from_url(outage.server.url) as redis:
        await redis.xadd(key, {DATA_FIELD_BYTES: encode(Start(request_id="first"))})  # the gateway's first event
    outage.away()
    sink = outage.sink("first")
    sink.push(Started(model="m", provider="openai"))  # its first round fails: Redis is away
    await asyncio.sleep(0.2)
    sink.push(Delta(text="a "))
    outage.back()
    await sink.close(Done(reason="stop"))
    events = [event for _, event in await outage.entries(key)]
    assert events == [
        Start(request_id="first"),
        Started(model="m", provider="openai"),
        Delta(text="a "),
        Done(reason="stop"),
    ]


async def test_a_first_write_that_landed_before_its_reply_was_lost_is_not_written_twice(outage: Outage) -> None:
    """Its entries are found among the stream's latest by their data and take the ids Redis gave them."""
    key = outage.keys.request_stream("landed")
    sink, commands = outage.first_round("landed")
    await outage.send(commands)  # all of it landed
    checked = await outage.send(sink.checks())
    again: list[tuple[bytes | str | int, ...]] = []
    assert sink.repair(again, checked, redis_exceptions.ConnectionError("lost")) == 0
    assert not any(command[0] == b"XADD" for command in again), "nothing written twice, its event in inference.events neither"
    sink.written(None)
    sink.push(Delta(text="b "))
    await sink.close(Done(reason="stop"))
    stored = await outage.entries(key)
    assert [event for _, event in stored] == [
        Started(model="m", provider="openai"),
        Delta(text="a "),
        Delta(text="b "),
        Done(reason="stop"),
    ]
    async with aioredis.Redis.from_url(outage.server.url) as redis:
        assert await redis.xlen(outage.keys.events_for("landed")) == 1


async def test_a_first_write_that_landed_in_part_is_finished_not_repeated(outage: Outage) -> None:
    """A round runs in order: its event and first entry landed, its second entry did not. The repair writes that one,
    and neither the event nor the first entry again."""
    key = outage.keys.request_stream("part")
    sink, commands = outage.first_round("part")
    stream_writes = [i for i, command in enumerate(commands) if command[0] == b"XADD" and command[1] == key.encode()]
    await outage.send(commands[: stream_writes[-1]])  # up to the last entry, which the dead connection lost
    checked = await outage.send(sink.checks())
    again: list[tuple[bytes | str | int, ...]] = []
    sink.repair(again, checked, redis_exceptions.ConnectionError("lost"))
    assert [command[1] for command in again if command[0] == b"XADD"] == [key.encode()], "only the lost entry again"
    await outage.send(again)
    sink.written(None)
    await sink.close(Done(reason="stop"))
    stored = await outage.entries(key)
    assert [event for _, event in stored] == [Started(model="m", provider="openai"), Delta(text="a "), Done(reason="stop")]
    async with aioredis.Redis.from_url(outage.server.url) as redis:
        assert await redis.xlen(outage.keys.events_for("part")) == 1
