"""The platform's Redis client: commands packed in C are the ones redis-py would send."""

from __future__ import annotations

import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
import redis.exceptions

from chatbot_contracts.redis import Link, RedisSettings, connect

COMMANDS = [
    ("SET", "key", "välue"),
    ("XADD", b"chat.stream.{r1}", "MAXLEN", "~", 100, "*", "d", b"\x00\xff"),
    ("XREAD", "COUNT", 512, "BLOCK", 5000, "STREAMS", *[f"k{i}" for i in range(300)], *["0-0"] * 300),
    ("CLIENT SETNAME", "gateway"),
    (b"XINFO GROUPS", b"stream"),
    ("ZADD", "workers", 1700000000.25, "worker-1"),
    ("SET", "key", bytearray(b"bytes"), "PX", -1),
    ("SET", "key", memoryview(b"view")),
]


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = connect(RedisSettings(url=redis_url))
    yield client
    await client.aclose()


@pytest.mark.parametrize("command", COMMANDS, ids=[str(c[0]) for c in COMMANDS])
def test_commands_are_packed_as_redis_py_packs_them(command: tuple[object, ...]) -> None:
    ours = connect(RedisSettings()).connection_pool.connection_class()
    theirs = aioredis.Connection()
    assert type(ours) is not aioredis.Connection
    assert b"".join(ours.pack_command(*command)) == b"".join(theirs.pack_command(*command))


def test_what_redis_py_refuses_is_refused() -> None:
    ours = connect(RedisSettings()).connection_pool.connection_class()
    for value in (None, True):
        with pytest.raises(redis.exceptions.DataError):
            ours.pack_command("SET", "key", value)


async def test_values_round_trip_through_a_real_redis(client: aioredis.Redis, namespace: str) -> None:
    key = f"{namespace}packed"
    for value, stored in (("välue", "välue".encode()), (b"\x00\xff", b"\x00\xff"), (42, b"42"), (2.5, b"2.5"), (bytearray(b"ba"), b"ba")):
        await client.set(key, value, ex=60)
        assert await client.get(key) == stored
    await client.delete(key)


async def test_a_round_trip_answers_each_command_in_order_and_a_refusal_in_its_place(client: aioredis.Redis, namespace: str) -> None:
    stream, text = f"{namespace}rt.stream", f"{namespace}rt.text"
    await client.set(text, "not a stream", ex=60)
    replies = await Link(client).round_trip(
        [("XADD", stream, "*", "d", "1"), ("XADD", text, "*", "d", "2"), ("EXPIRE", stream, 60), ("XLEN", stream)]
    )
    assert isinstance(replies[0], bytes) and replies[0].count(b"-") == 1, "the entry id"
    assert isinstance(replies[1], redis.exceptions.ResponseError) and "WRONGTYPE" in str(replies[1])
    assert replies[2:] == [1, 1], "the commands after the refused one ran"
    await client.delete(stream, text)


async def test_a_round_trip_on_a_connection_redis_dropped_is_sent_again_on_a_new_one(client: aioredis.Redis, namespace: str) -> None:
    link = Link(client)
    [held] = await link.round_trip([("CLIENT", "ID")])
    [again] = await link.round_trip([("CLIENT", "ID")])
    assert again == held, "the link keeps its connection"
    kwargs = client.connection_pool.connection_kwargs
    other = aioredis.Redis(host=kwargs.get("host", "127.0.0.1"), port=kwargs.get("port", 6379), db=kwargs.get("db", 0))
    await other.execute_command("CLIENT", "KILL", "ID", held)
    await other.aclose()
    [now] = await link.round_trip([("CLIENT", "ID")])
    assert now != held


async def test_a_round_trip_packs_what_hiredis_does_not_take_as_redis_py_would(client: aioredis.Redis, namespace: str) -> None:
    key = f"{namespace}rt.packed"
    link = Link(client)
    assert await link.round_trip([("SET", key, bytearray(b"ba"), "EX", 60), ("GET", key), ("DEL", key)]) == [b"OK", b"ba", 1]
    [held] = await link.round_trip([("CLIENT", "ID")])
    with pytest.raises(redis.exceptions.DataError):
        await link.round_trip([("SET", key, None)])
    assert await link.round_trip([("CLIENT", "ID")]) == [held], "a command refused before sending leaves the connection as it was"
    assert await link.round_trip([(b"SET", key, memoryview(b"mv"), b"EX", 60), (b"GET", key), (b"DEL", key)]) == [b"OK", b"mv", 1]


async def test_a_round_trip_takes_replies_that_arrive_in_pieces(client: aioredis.Redis, namespace: str) -> None:
    """Replies larger than one socket read: the reader waits for the rest of each."""
    key, value = f"{namespace}rt.big", b"x" * 300_000
    link = Link(client)
    replies = await link.round_trip([("SET", key, value, "EX", 60), ("GET", key), ("GET", key), ("DEL", key)])
    assert replies == [b"OK", value, value, 1]


async def test_a_round_trip_that_redis_does_not_answer_in_time_fails_and_leaves_the_link_usable(redis_url: str, namespace: str) -> None:
    client = connect(RedisSettings(url=redis_url, redis_socket_timeout_s=0.2))
    link = Link(client)
    with pytest.raises(redis.exceptions.TimeoutError, match=r"no reply from Redis within 0\.2 s"):
        await link.round_trip([("BLPOP", f"{namespace}rt.never", 2)])  # twice: the retry times out too
    assert await link.round_trip([("PING",)]) == [b"PONG"]
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
    assert type(client.connection_pool.connection_class()) is not aioredis.UnixDomainSocketConnection  # packed in C too
    await client.set("k", "v")
    replies = await Link(client).round_trip([("GET", "k"), ("INCR", "k")])
    assert replies[0] == b"v" and isinstance(replies[1], redis.exceptions.ResponseError)
    await client.aclose()
