"""The stream sink: every event stored in order, bursts coalesced, retention set at the end."""

from __future__ import annotations

import asyncio
import time

import redis.asyncio as aioredis
from redis import exceptions as redis_exceptions

from chatbot_contracts import DATA_FIELD_BYTES, Delta, Done, Keys, Queued, Started, inference_event_decoder, stream_event_decoder
from chatbot_inference.sink import SharedPipeline, StreamSink, coalesce


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


async def test_a_write_window_gathers_streams_into_one_round_and_never_delays_a_first_write(redis: aioredis.Redis, namespace: str) -> None:
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
    for sink in sinks:
        await sink.close(Done(reason="stop"))
