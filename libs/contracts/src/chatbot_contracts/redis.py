"""How every service connects to Redis: one pooled client, quick to notice that Redis is gone."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import hiredis
import msgspec
import redis.asyncio as aioredis
import redis.exceptions
from redis._parsers.hiredis import NOT_ENOUGH_DATA
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff


class RedisSettings(msgspec.Struct, kw_only=True, frozen=True):
    """Where Redis is and how the platform's names are placed in it."""

    url: str = msgspec.field(name="REDIS_URL", default="redis://127.0.0.1:6379/0")
    """`REDIS_URL`: the Redis server (redis://, rediss://, or unix:// for a local socket)."""
    redis_namespace: str = ""
    """`CHATBOT_REDIS_NAMESPACE`: a prefix for every key, so deployments can share one Redis."""
    redis_max_connections: int = 2048
    """`CHATBOT_REDIS_MAX_CONNECTIONS`: the size of the connection pool (opened as needed; callers past it wait)."""
    redis_connect_timeout_s: float = 0.5
    """`CHATBOT_REDIS_CONNECT_TIMEOUT_S`: how long to wait for a connection before reporting Redis down."""
    redis_socket_timeout_s: float = 30.0
    """`CHATBOT_REDIS_SOCKET_TIMEOUT_S`: longest wait for a reply; above the longest blocking read (5 s)."""


class _PackedInC:
    """Commands packed by hiredis, as redis-py's synchronous client packs them; its asyncio client packs
    in Python (an XREAD naming 1,000 streams: 860 µs, 200 µs with hiredis; an XADD: 3.2 µs, 0.8)."""

    def pack_command(self, *args: Any) -> list[bytes]:
        try:
            name = args[0].encode() if isinstance(args[0], str) else args[0]
            if b" " in name:  # a command of two words ("CLIENT SETNAME") goes as two arguments
                return [hiredis.pack_command((*name.split(), *args[1:]))]
            return [hiredis.pack_command((name, *args[1:]))]
        except TypeError:  # what hiredis does not take (a bytearray) or refuses (None): as redis-py would
            packed: list[bytes] = super().pack_command(*args)  # type: ignore[misc]
            return packed


class _Connection(_PackedInC, aioredis.Connection):
    pass


class _SSLConnection(_PackedInC, aioredis.SSLConnection):
    pass


class _UnixDomainSocketConnection(_PackedInC, aioredis.UnixDomainSocketConnection):
    pass


_PACKED_IN_C: dict[type[Any], type[Any]] = {
    aioredis.Connection: _Connection,
    aioredis.SSLConnection: _SSLConnection,
    aioredis.UnixDomainSocketConnection: _UnixDomainSocketConnection,
}


def connect(settings: RedisSettings) -> aioredis.Redis:
    """A client over a blocking pool: callers wait for a free connection instead of failing.

    A command on a connection that Redis dropped (it restarted) is retried once on a new one,
    at once: a Redis that is really gone surfaces within the connect timeout, not after a
    backoff series. The retry belongs to the pool's connections (the client's own is ignored
    when a pool is given).
    """
    pool = aioredis.BlockingConnectionPool.from_url(
        settings.url,
        max_connections=settings.redis_max_connections,
        timeout=10,
        socket_connect_timeout=settings.redis_connect_timeout_s,
        socket_timeout=settings.redis_socket_timeout_s,
        **({} if settings.url.startswith("unix:") else {"socket_keepalive": True}),
        health_check_interval=30,
        retry=Retry(NoBackoff(), 1),
        retry_on_error=[redis.exceptions.ConnectionError, redis.exceptions.TimeoutError],
    )
    pool.connection_class = _PACKED_IN_C.get(pool.connection_class, pool.connection_class)
    return aioredis.Redis(connection_pool=pool)


class Link:
    """One connection of a client's pool, held for a hot loop's round trips (one at a time).

    What a redis-py pipeline (`transaction=False`, `raise_on_error=False`) does: a round's
    commands go out together and their replies come back in order, a refused command's as its
    `ResponseError`. Unlike a pipeline (or a connection taken from the pool per round), there is
    no pool lock, health check, write timer task or reply callback per round, and replies are
    taken from hiredis's reader as they are parsed, under one timer for the round. A round
    whose connection failed is sent again once on a fresh connection, as the pool's retry rule
    does for a pipeline. The connection stays the link's until the pool is closed.
    """

    def __init__(self, client: aioredis.Redis) -> None:
        self._pool = client.connection_pool
        self._connection: Any = None

    async def round_trip(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Sends `commands` together and returns their replies in order, a refused command's as its `ResponseError`."""
        for last_try in (False, True):
            if self._connection is None:
                self._connection = await self._pool.get_connection()  # type: ignore[no-untyped-call]
            packed = _packed(self._connection, commands)  # a value Redis cannot take fails here, the connection untouched
            try:
                return await _exchange(self._connection, packed, len(commands))
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                await self._drop()
                if last_try:
                    raise
            except BaseException:
                await self._drop()  # replies may be left unread on it
                raise
        raise AssertionError("unreachable")

    async def _drop(self) -> None:
        connection, self._connection = self._connection, None
        await connection.disconnect()
        await self._pool.release(connection)


def _packed(connection: Any, commands: Sequence[Sequence[Any]]) -> bytes:
    """The round's bytes, packed by hiredis in one pass (redis-py's `pack_commands` costs a Python call and checks per
    command); what hiredis does not take is packed as redis-py packs it. A command's name is one word each:
    `("CLIENT", "ID")`, not `("CLIENT ID",)`."""
    try:
        return b"".join([hiredis.pack_command(command if isinstance(command, tuple) else tuple(command)) for command in commands])
    except TypeError:
        return b"".join(connection.pack_commands(commands))


async def _exchange(connection: Any, packed: bytes, count: int) -> list[Any]:
    if not connection.is_connected:
        await connection.connect()
    parser = connection._parser
    reader = parser._reader  # hiredis's; redis-py parses with it whenever hiredis is installed, as here
    replies: list[Any] = []
    try:
        async with asyncio.timeout(connection.socket_timeout):
            connection._writer.write(packed)
            await connection._writer.drain()
            while len(replies) < count:
                reply = reader.gets()
                if reply is NOT_ENOUGH_DATA:
                    await parser.read_from_socket()
                else:
                    replies.append(reply)
    except TimeoutError as exc:
        raise redis.exceptions.TimeoutError(f"no reply from Redis within {connection.socket_timeout} s") from exc
    except OSError as exc:
        raise redis.exceptions.ConnectionError(f"Redis connection failed: {exc}") from exc
    for reply in replies:
        if isinstance(reply, redis.exceptions.ConnectionError):  # hiredis's protocol error, as redis-py's parser raises it
            raise reply
    return replies
