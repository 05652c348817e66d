"""The follower: many request streams read on one connection, each consumer getting exactly its own events."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from chatbot_contracts import DATA_FIELD, Delta, Done, Error, Keys, encode
from chatbot_gateway.follower import KEEPALIVE, READ_AHEAD, Batch, Follower, Following


@pytest.fixture
async def follower(redis: aioredis.Redis, namespace: str) -> AsyncIterator[Follower]:
    follower = Follower(redis, Keys(namespace), outage_s=1.0, wake_key=Keys(namespace).gateway_wake("test"))
    yield follower
    await follower.close()


async def write(redis: aioredis.Redis, namespace: str, request_id: str, *texts: str, done: bool = False) -> list[bytes]:
    key = Keys(namespace).request_stream(request_id)
    pipe = redis.pipeline(transaction=False)
    for text in texts:
        pipe.xadd(key, {DATA_FIELD: encode(Delta(text=text))})
    if done:
        pipe.xadd(key, {DATA_FIELD: encode(Done(reason="stop"))})
    return list(await pipe.execute())


async def read_to_end(follower: Follower, following: Following) -> Batch:
    seen: Batch = []
    try:
        while not (following.ended and not following.entries):
            seen += await asyncio.wait_for(following.next(), 5)
    finally:
        follower.forget(following)
    return seen


def texts(batch: Batch) -> list[str]:
    return [event.text for _, event in batch if isinstance(event, Delta)]


async def test_many_streams_each_get_their_own_events_in_order(follower: Follower, redis: aioredis.Redis, namespace: str) -> None:
    ids = [f"r{i}" for i in range(60)]
    followings = [follower.follow(request_id, b"0-0", time.time() + 30, 15.0) for request_id in ids]
    readers = [asyncio.create_task(read_to_end(follower, following)) for following in followings]
    for token in range(20):  # interleaved, as many workers write them
        for request_id in ids:
            await write(redis, namespace, request_id, f"{request_id}:{token}", done=token == 19)
    results = await asyncio.gather(*readers)
    for request_id, seen in zip(ids, results, strict=True):
        assert texts(seen) == [f"{request_id}:{token}" for token in range(20)]
        assert isinstance(seen[-1][1], Done)
    assert follower._streams == {}, "every stream is forgotten"


async def test_a_stream_added_during_a_blocking_read_is_read_at_once(follower: Follower, redis: aioredis.Redis, namespace: str) -> None:
    quiet = follower.follow("quiet", b"0-0", time.time() + 30, 15.0)
    await asyncio.sleep(0.2)  # the follower is now blocked in a read that names only `quiet`
    late = follower.follow("late", b"0-0", time.time() + 30, 15.0)
    await asyncio.sleep(0.05)
    began = time.monotonic()
    await write(redis, namespace, "late", "hello", done=True)
    seen = await read_to_end(follower, late)
    assert texts(seen) == ["hello"]
    assert time.monotonic() - began < 1.0, "the wake-up interrupted the blocking read (it would last 5 s)"
    follower.forget(quiet)


async def test_a_resumed_stream_starts_after_its_entry(follower: Follower, redis: aioredis.Redis, namespace: str) -> None:
    _, second, _, _ = await write(redis, namespace, "resumed", "a", "b", "c", done=True)
    seen = await read_to_end(follower, follower.follow("resumed", second, time.time() + 30, 15.0))
    assert texts(seen) == ["c"]


async def test_one_stream_followed_twice_from_different_places(follower: Follower, redis: aioredis.Redis, namespace: str) -> None:
    first, *_ = await write(redis, namespace, "twice", "a", "b")
    whole = follower.follow("twice", b"0-0", time.time() + 30, 15.0)
    tail = follower.follow("twice", first, time.time() + 30, 15.0)
    readers = asyncio.gather(read_to_end(follower, whole), read_to_end(follower, tail))
    await asyncio.sleep(0.05)
    await write(redis, namespace, "twice", "c", done=True)
    seen_whole, seen_tail = await readers
    assert texts(seen_whole) == ["a", "b", "c"]
    assert texts(seen_tail) == ["b", "c"]


async def test_a_consumer_that_falls_behind_holds_back_only_its_own_stream(
    follower: Follower, redis: aioredis.Redis, namespace: str
) -> None:
    slow = follower.follow("slow", b"0-0", time.time() + 30, 15.0)
    fast = follower.follow("fast", b"0-0", time.time() + 30, 15.0)
    fast_reader = asyncio.create_task(read_to_end(follower, fast))
    await write(redis, namespace, "slow", *[str(i) for i in range(3 * READ_AHEAD)], done=True)
    await write(redis, namespace, "fast", "quick", done=True)
    assert texts(await fast_reader) == ["quick"]
    await asyncio.sleep(0.1)
    assert READ_AHEAD <= len(slow.entries) < 2 * READ_AHEAD, "reads stopped once the stream was this far ahead"
    assert texts(await read_to_end(follower, slow)) == [str(i) for i in range(3 * READ_AHEAD)]


async def test_silence_gives_keepalives_and_the_deadline_ends_the_stream(follower: Follower) -> None:
    following = follower.follow("silent", b"0-0", time.time() + 0.8, 0.1)
    batches = []
    while not (following.ended and not following.entries):
        batches.append(await asyncio.wait_for(following.next(), 2))
    follower.forget(following)
    assert len(batches) >= 4 and all(batch is KEEPALIVE for batch in batches[:-1])
    error, done = batches[-1]
    assert isinstance(error[1], Error) and error[1].code == "deadline_exceeded"
    assert isinstance(done[1], Done) and done[1].reason == "error"


async def test_a_forgotten_stream_is_read_no_more(follower: Follower, redis: aioredis.Redis, namespace: str) -> None:
    gone = follower.follow("gone", b"0-0", time.time() + 30, 15.0)
    stays = follower.follow("stays", b"0-0", time.time() + 30, 15.0)
    follower.forget(gone)
    await write(redis, namespace, "gone", "lost")
    await write(redis, namespace, "stays", "kept", done=True)
    assert texts(await read_to_end(follower, stays)) == ["kept"]
    assert gone.entries == []


async def test_a_reader_that_fails_ends_its_streams_and_the_next_stream_gets_a_new_one(
    follower: Follower, redis: aioredis.Redis, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in the read loop must not leave clients waiting for their deadline: their streams end with an error now."""
    dispatch = Follower._dispatch

    def broken(self: Follower, *args: object) -> None:
        monkeypatch.setattr(Follower, "_dispatch", dispatch)  # fails once
        raise RuntimeError("a bug")

    monkeypatch.setattr(Follower, "_dispatch", broken)
    waiting = [follower.follow(f"w{i}", b"0-0", time.time() + 30, 15.0) for i in range(3)]
    await write(redis, namespace, "w0", "lost to the bug")
    for following in waiting:
        seen = await read_to_end(follower, following)
        assert [type(event) for _, event in seen] == [Error, Done]
        assert isinstance(seen[0][1], Error) and seen[0][1].message == "the gateway stopped reading the answer's stream"
    later = follower.follow("later", b"0-0", time.time() + 30, 15.0)
    await write(redis, namespace, "later", "read", done=True)
    assert texts(await read_to_end(follower, later)) == ["read"]


@pytest.fixture
async def slow_follower(redis: aioredis.Redis, namespace: str) -> AsyncIterator[Follower]:
    """A follower whose reads, once every stream has begun, are spaced 2 s apart."""
    follower = Follower(
        redis, Keys(namespace), outage_s=1.0, wake_key=Keys(namespace).gateway_wake("slow"), gather_per_stream_s=2.0, max_gather_s=2.0
    )
    yield follower
    await follower.close()


async def begun(follower: Follower, redis: aioredis.Redis, namespace: str) -> Following:
    """A stream followed and its first event read (at once): the follower's next read of it waits out the spacing."""
    following = follower.follow("steady", b"0-0", time.time() + 30, 15.0)
    await write(redis, namespace, "steady", "first")
    assert texts(await asyncio.wait_for(following.next(), 1.5)) == ["first"], "a first event is read at once"
    return following


async def test_once_every_stream_has_begun_reads_are_spaced_and_carry_more(
    slow_follower: Follower, redis: aioredis.Redis, namespace: str
) -> None:
    following = await begun(slow_follower, redis, namespace)
    # The read that found it is followed by a gathering: what is written meanwhile comes in one read.
    waiting = asyncio.create_task(following.next())
    await write(redis, namespace, "steady", "second")
    await asyncio.sleep(0.2)
    await write(redis, namespace, "steady", "third")
    assert texts(await asyncio.wait_for(waiting, 5)) == ["second", "third"]
    slow_follower.forget(following)


async def test_a_stream_that_waits_for_its_first_event_is_not_held_back_by_the_gathering(
    slow_follower: Follower, redis: aioredis.Redis, namespace: str
) -> None:
    steady = await begun(slow_follower, redis, namespace)  # read again in 2 s
    began = time.monotonic()
    new = slow_follower.follow("new", b"0-0", time.time() + 30, 15.0)
    await write(redis, namespace, "steady", "second")  # a read finds it while `new` still waits
    await asyncio.sleep(0.05)
    await write(redis, namespace, "new", "hello")
    assert texts(await asyncio.wait_for(new.next(), 5)) == ["hello"]
    assert time.monotonic() - began < 1.0, "a stream waiting for its first event is read on its own"
    for following in (steady, new):
        slow_follower.forget(following)


async def test_streams_that_have_begun_are_still_read_while_another_waits_for_its_first_event(
    slow_follower: Follower, redis: aioredis.Redis, namespace: str
) -> None:
    steady = await begun(slow_follower, redis, namespace)
    waiting = slow_follower.follow("waiting", b"0-0", time.time() + 30, 15.0)  # its first event never comes
    await asyncio.sleep(0.05)
    began = time.monotonic()
    await write(redis, namespace, "steady", "second")
    assert texts(await asyncio.wait_for(steady.next(), 4.5)) == ["second"], "read within the spacing (2 s), not after a 5 s block"
    assert time.monotonic() - began < 3.0
    for following in (steady, waiting):
        slow_follower.forget(following)
