"""The platform's Redis client and its pipelined round trips, against a real Redis."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection

from chatbot_contracts.redis import (
    TRANSIENT,
    HiredisPacking,
    PackedConnection,
    RedisSettings,
    SharedRounds,
    connect,
    raise_refused,
    round_trip,
    run_script,
)
from chatbot_devtools.redis_server import free_port


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


@pytest.mark.parametrize(
    "command",
    [
        (b"XADD", b"ns:stream", b"MAXLEN", b"~", 1000, b"*", b"data", b'{"type":"delta","text":" hi"}'),
        ("SET", "k\u00e9y", "v\u00e4lue \u2603", "EX", 60),
        ("XINFO GROUPS", "ns:stream"),
        (b"CLIENT SETNAME", b"worker"),
        ("ZADD", "z", 0.1, "a", 1e20, "b", 1 / 3, "c", -5, "d", 2**70, "e"),
        ("SET", "big", b"x" * 300_000),
        ("SET", "mv", memoryview(b"view")),
        ("SET", "ba", bytearray(b"array")),
    ],
)
def test_commands_go_out_as_redis_py_itself_packs_them(command: tuple[object, ...]) -> None:
    ours, theirs = PackedConnection(), Connection()
    assert b"".join(ours.pack_command(*command)) == b"".join(theirs.pack_command(*command))  # type: ignore[arg-type]


def test_what_redis_py_refuses_to_send_is_refused_the_same_way() -> None:
    for value in (None, True):
        with pytest.raises(redis.exceptions.DataError):
            PackedConnection().pack_command("SET", "k", value)


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("redis://127.0.0.1:1/0", Connection),
        ("rediss://127.0.0.1:1/0", SSLConnection),
        ("unix:///tmp/none.sock", UnixDomainSocketConnection),
    ],
)
def test_every_kind_of_redis_url_gets_its_connections_packing_with_hiredis(url: str, kind: type[object]) -> None:
    client = connect(RedisSettings(url=url, redis_cluster=False))
    connection_class = client.connection_pool.connection_class
    assert issubclass(connection_class, HiredisPacking) and issubclass(connection_class, kind)


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


async def test_callers_of_one_loop_turn_share_one_round_trip_and_each_gets_its_own_replies(client: aioredis.Redis, namespace: str) -> None:
    rounds = SharedRounds(client)
    counter, stream, text = f"{namespace}sr.n", f"{namespace}sr.stream", f"{namespace}sr.text"
    await client.set(text, "not a stream", ex=60)
    entry = await client.xadd(stream, {"d": "1"})
    await client.expire(stream, 60)
    first, second, third = await asyncio.gather(
        rounds.send(("CLIENT", "ID"), ("INCR", counter)),
        rounds.send(("CLIENT", "ID"), ("XADD", text, "*", "d", "2")),
        rounds.send(("CLIENT", "ID"), ("XPENDING", stream, "none", "-", "+", 1, {"parse_detail": True}), ("EXPIRE", counter, 60)),
    )
    assert first[0] == second[0] == third[0], "the three went on one connection, in one round"
    assert first[1] == 1
    assert isinstance(second[1], redis.exceptions.ResponseError) and "WRONGTYPE" in str(second[1]), "a refusal is its caller's alone"
    assert isinstance(third[1], redis.exceptions.ResponseError) and "NOGROUP" in str(third[1])
    assert third[2] is True, "named in text, a reply goes through redis-py's callback"
    with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
        raise_refused(second)
    await client.xgroup_create(stream, "readers", id="0")
    await client.xreadgroup("readers", "reader-1", {stream: ">"})
    [pending] = await rounds.send(("XPENDING", stream, "readers", entry, entry, 1, {"parse_detail": True}))
    assert [(p["message_id"], p["consumer"]) for p in pending] == [(entry, b"reader-1")], "options reach the reply's callback"
    later = await rounds.send(("CLIENT", "ID"), ("INCR", counter))
    assert later[1] == 2, "a caller of a later turn gets a round of its own"
    await client.delete(counter, stream, text)


async def test_a_shared_round_that_cannot_reach_redis_fails_for_every_caller_of_it() -> None:
    client = connect(RedisSettings(url=f"redis://127.0.0.1:{free_port()}/0", redis_connect_timeout_s=0.5))
    rounds = SharedRounds(client)
    outcomes = await asyncio.gather(rounds.send(("PING",)), rounds.send(("INCR", "sr.never")), return_exceptions=True)
    assert all(isinstance(outcome, redis.exceptions.ConnectionError) for outcome in outcomes), outcomes
    await client.aclose()


async def test_a_script_redis_does_not_know_is_loaded_by_its_first_shared_round(client: aioredis.Redis, namespace: str) -> None:
    # A script no Redis has seen (its text names this test's namespace): the first round is refused with NOSCRIPT.
    script = client.register_script(f"-- {namespace}\nreturn redis.call('INCRBY', KEYS[1], ARGV[1])")
    rounds = SharedRounds(client)
    key = f"{namespace}sr.script"
    assert await client.script_exists(script.sha) == [False]
    assert await run_script(rounds, script, [key], [5]) == 5
    assert await client.script_exists(script.sha) == [True], "loaded"
    assert await asyncio.gather(run_script(rounds, script, [key], [1]), run_script(rounds, script, [key], [2])) == [6, 8]
    with pytest.raises(redis.exceptions.ResponseError, match="not an integer"):
        await run_script(rounds, script, [key], ["x"])
    await client.delete(key)


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
