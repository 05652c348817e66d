"""The platform's Redis client and its pipelined round trips, against a real Redis."""

from __future__ import annotations

import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
import redis.exceptions

from chatbot_contracts.redis import TRANSIENT, RedisSettings, connect, round_trip


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = connect(RedisSettings(url=redis_url))
    yield client
    await client.aclose()


async def test_values_round_trip_through_a_real_redis(client: aioredis.Redis, namespace: str) -> None:
    key = f"{namespace}packed"
    for value, stored in (("välue", "välue".encode()), (b"\x00\xff", b"\x00\xff"), (42, b"42"), (2.5, b"2.5"), (bytearray(b"ba"), b"ba")):
        await client.set(key, value, ex=60)
        assert await client.get(key) == stored
    await client.delete(key)


async def test_a_round_trip_answers_each_command_in_order_and_a_refusal_in_its_place(client: aioredis.Redis, namespace: str) -> None:
    stream, text = f"{namespace}rt.stream", f"{namespace}rt.text"
    await client.set(text, "not a stream", ex=60)
    replies = await round_trip(
        client,
        [("XADD", stream, "*", "d", "1"), ("XADD", text, "*", "d", "2"), ("EXPIRE", stream, 60), ("XLEN", stream)],
    )
    assert isinstance(replies[0], bytes) and replies[0].count(b"-") == 1, "the entry id"
    assert isinstance(replies[1], redis.exceptions.ResponseError) and "WRONGTYPE" in str(replies[1])
    assert replies[2:] == [1, 1], "the commands after the refused one ran"
    await client.delete(stream, text)


async def test_a_round_trip_on_a_connection_redis_dropped_is_sent_again_on_a_new_one(client: aioredis.Redis, namespace: str) -> None:
    [held] = await round_trip(client, [("CLIENT", "ID")])
    [again] = await round_trip(client, [("CLIENT", "ID")])
    assert again == held, "the pool's connection is kept for the next round"
    kwargs = client.connection_pool.connection_kwargs
    other = aioredis.Redis(host=kwargs.get("host", "127.0.0.1"), port=kwargs.get("port", 6379), db=kwargs.get("db", 0))
    await other.execute_command("CLIENT", "KILL", "ID", held)
    await other.aclose()
    key = f"{namespace}rt.resent"
    now, count = await round_trip(client, [("CLIENT", "ID"), ("INCR", key)])
    assert now != held and count == 1, "sent again once, on a new connection"
    await client.delete(key)


async def test_a_client_that_does_not_resend_reports_a_dropped_connection_and_sends_nothing_twice(redis_url: str, namespace: str) -> None:
    client = connect(RedisSettings(url=redis_url), timed_replies=False, resend=False)
    [held] = await round_trip(client, [("CLIENT", "ID")])
    kwargs = client.connection_pool.connection_kwargs
    other = aioredis.Redis(host=kwargs.get("host", "127.0.0.1"), port=kwargs.get("port", 6379), db=kwargs.get("db", 0))
    await other.execute_command("CLIENT", "KILL", "ID", held)
    key = f"{namespace}rt.not-resent"
    with pytest.raises(TRANSIENT):
        await round_trip(client, [("INCR", key)])
    [count] = await round_trip(client, [("INCR", key)])
    assert count == 1, "the failed round was not sent again behind the caller's back; the next one went on a new connection"
    await other.delete(key)
    await other.aclose()
    await client.aclose()


async def test_a_round_trip_takes_bytes_like_values_and_refuses_what_redis_cannot_take(client: aioredis.Redis, namespace: str) -> None:
    key = f"{namespace}rt.packed"
    assert await round_trip(client, [("SET", key, bytearray(b"ba"), "EX", 60), ("GET", key), ("DEL", key)]) == [True, b"ba", 1]
    with pytest.raises(redis.exceptions.DataError):
        await round_trip(client, [("SET", key, None)])
    assert await round_trip(client, [(b"SET", key, memoryview(b"mv"), b"EX", 60), (b"GET", key), (b"DEL", key)]) == [b"OK", b"mv", 1], (
        "no reply callback for a command named in bytes"
    )


async def test_a_round_trip_takes_replies_that_arrive_in_pieces(client: aioredis.Redis, namespace: str) -> None:
    """Replies larger than one socket read: the reader waits for the rest of each."""
    key, value = f"{namespace}rt.big", b"x" * 300_000
    replies = await round_trip(client, [("SET", key, value, "EX", 60), ("GET", key), ("GET", key), ("DEL", key)])
    assert replies == [True, value, value, 1]


async def test_a_round_trip_that_redis_does_not_answer_in_time_fails_and_leaves_the_client_usable(redis_url: str, namespace: str) -> None:
    client = connect(RedisSettings(url=redis_url, redis_socket_timeout_s=0.2))
    with pytest.raises(redis.exceptions.TimeoutError):
        await round_trip(client, [("BLPOP", f"{namespace}rt.never", 2)])  # twice: the retry times out too
    assert await round_trip(client, [("PING",)]) == [True]
    await client.aclose()


async def test_a_round_timed_whole_fails_past_its_time_and_leaves_the_client_usable(redis_url: str, namespace: str) -> None:
    client = connect(RedisSettings(url=redis_url), timed_replies=False)
    with pytest.raises(redis.exceptions.TimeoutError, match=r"no reply from Redis within 0\.2 s"):
        await round_trip(client, [("PING",), ("BLPOP", f"{namespace}rt.never", 2)], within_s=0.2)
    assert await round_trip(client, [(b"PING",), (b"INCR", f"{namespace}rt.n")], within_s=1) == [b"PONG", 1], "its connection was closed"
    await client.delete(f"{namespace}rt.n")
    await client.aclose()


@pytest.fixture
def unix_redis(tmp_path: Path) -> Iterator[Path]:
    """A redis-server of its own listening on a Unix socket only."""
    socket_path = tmp_path / "redis.sock"
    server = subprocess.Popen(
        ["redis-server", "--port", "0", "--unixsocket", str(socket_path), "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not socket_path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        yield socket_path
    finally:
        server.terminate()
        server.wait(5)


async def test_a_redis_on_a_unix_socket_is_reached_by_its_url(unix_redis: Path) -> None:
    """`REDIS_URL=unix:///…` (a local Redis without TCP): the pool's TCP-only options are not passed to it."""
    client = connect(RedisSettings(url=f"unix://{unix_redis}?db=0"))
    await client.set("k", "v")
    replies = await round_trip(client, [("GET", "k"), ("INCR", "k")])
    assert replies[0] == b"v" and isinstance(replies[1], redis.exceptions.ResponseError)
    await client.aclose()


def test_a_cluster_with_one_stream_partition_is_refused_with_what_to_set() -> None:
    with pytest.raises(ValueError, match="CHATBOT_STREAM_PARTITIONS=1 on a Redis Cluster"):
        RedisSettings(url="redis://127.0.0.1:7000", redis_cluster=True, stream_partitions=1).keys()
    assert RedisSettings(url="redis://127.0.0.1:7000", redis_cluster=True).keys().partitions == 16
    assert RedisSettings(url="redis://127.0.0.1:7000", redis_cluster=False).keys().partitions == 1
