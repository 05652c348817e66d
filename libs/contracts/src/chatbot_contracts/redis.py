"""How every service connects to Redis: one pooled client, quick to notice that Redis is gone; a Redis Cluster's client
when `REDIS_URL` names a node of one."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from functools import cache
from typing import Any, cast
from urllib.parse import urlparse

import hiredis
import msgspec
import redis
import redis.asyncio as aioredis
import redis.exceptions
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection, Connection, SSLConnection, UnixDomainSocketConnection, parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelManagedConnection
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.commands.core import AsyncScript

from .keys import Keys

TRANSIENT: tuple[type[Exception], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.ClusterError,
    redis.exceptions.TryAgainError,
    redis.exceptions.SlotNotCoveredError,
    redis.exceptions.ReadOnlyError,
)
"""What Redis raises while it restarts, or while a cluster's failed master is replaced: worth trying again shortly."""

TORN_DOWN: tuple[type[Exception], ...] = (RuntimeError, AttributeError, TypeError)
"""What redis-py's asyncio client lets through unwrapped when a connection is torn down under a command (a server
killed during the connection's handshake, or a cluster client closing a failed node's connections while another task
is connecting one): uvloop's `RuntimeError`, or the transport's own `AttributeError`/`TypeError` (redis-py issue
#4287). Raised by a command, they mean Redis went away under it."""

CLUSTER_PARTITIONS = 16
"""Stream partitions on a cluster unless `CHATBOT_STREAM_PARTITIONS` says otherwise."""


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
    redis_sentinels: str = ""
    """`CHATBOT_REDIS_SENTINELS`: `host:port,host:port,…` of Redis Sentinels; set, the master they name
    (`CHATBOT_REDIS_SENTINEL_MASTER`) is asked of them, again after a failover, and `REDIS_URL` only lends its
    password and database."""
    redis_sentinel_master: str = "mymaster"
    """`CHATBOT_REDIS_SENTINEL_MASTER`: the name the Sentinels monitor the master under."""
    redis_cluster: bool | None = None
    """`CHATBOT_REDIS_CLUSTER`: `true` when `REDIS_URL` names a node of a Redis Cluster; unset, the node is asked."""
    stream_partitions: int = msgspec.field(default=0)
    """`CHATBOT_STREAM_PARTITIONS`: how many streams `chat.requests` and `inference.events` are each split into; every
    process of a deployment must agree. 0: one on a single Redis, 16 on a cluster."""

    def cluster(self) -> bool:
        """Whether `REDIS_URL` is a Redis Cluster (said, or asked of the node once per process)."""
        if self.redis_sentinels:
            return False
        return self.redis_cluster if self.redis_cluster is not None else _is_cluster(self.url, self.redis_connect_timeout_s)

    def sentinels(self) -> list[tuple[str, int]]:
        """The Sentinels' addresses (none without `CHATBOT_REDIS_SENTINELS`)."""
        addresses = []
        for address in filter(None, (part.strip() for part in self.redis_sentinels.split(","))):
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"CHATBOT_REDIS_SENTINELS={self.redis_sentinels!r}: {address!r} is not host:port")
            addresses.append((host, int(port)))
        return addresses

    def keys(self) -> Keys:
        """The deployment's names: its namespace and its stream partitions (a cluster needs two or more: a request's keys
        and its queue share its partition's slot, and a gateway reads a partition's streams in one command)."""
        partitions = self.stream_partitions or (CLUSTER_PARTITIONS if self.cluster() else 1)
        if partitions == 1 and self.cluster():
            raise ValueError("CHATBOT_STREAM_PARTITIONS=1 on a Redis Cluster: give it 2 or more (0 takes 16)")
        return Keys(self.redis_namespace, partitions)


class HiredisPacking(AbstractConnection):
    """Commands packed by hiredis (`hiredis.pack_command`, in C) instead of redis-py's packer in Python.

    redis-py's synchronous client packs so when hiredis is installed; its asyncio client does not yet (redis-py issue
    #4176, pull request #4191). Packing was a large part of the client's CPU for a pipelined XADD, and a follower's
    XREAD names every stream it follows (`bench/README.md`, Round 18, has the figures). The same bytes go out: a
    name of several words (`"XINFO GROUPS"`) is split as redis-py splits it, and a command with a value hiredis does
    not take is packed (or refused, with its `DataError`) by redis-py. Drop it once redis-py packs so itself.
    """

    def pack_command(self, *args: Any) -> list[bytes]:
        name = args[0]
        if isinstance(name, str):
            words = (*name.encode().split(), *args[1:])
        elif b" " in name:
            words = (*name.split(), *args[1:])
        else:
            words = args
        try:
            return [hiredis.pack_command(words)]
        except TypeError:  # what hiredis does not take (a bytearray, a bool, None): redis-py's own packer packs or refuses it
            return super().pack_command(*args)


class PackedConnection(HiredisPacking, Connection):
    """A TCP connection (redis://) packing with hiredis."""


class PackedSSLConnection(HiredisPacking, SSLConnection):
    """A TLS connection (rediss://) packing with hiredis."""


class PackedUnixConnection(HiredisPacking, UnixDomainSocketConnection):
    """A local socket's connection (unix://) packing with hiredis."""


class PackedSentinelConnection(HiredisPacking, SentinelManagedConnection):
    """A connection to the master that Sentinels name, packing with hiredis."""


PACKED: dict[type[AbstractConnection], type[AbstractConnection]] = {
    Connection: PackedConnection,
    SSLConnection: PackedSSLConnection,
    UnixDomainSocketConnection: PackedUnixConnection,
}
"""redis-py's connection for a URL's scheme, and ours."""


@cache
def _is_cluster(url: str, timeout_s: float) -> bool:
    """Asks the node (`INFO cluster`); a node that does not answer yet is taken for a single Redis."""
    if url.startswith("unix:"):
        return False
    try:
        with redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s) as node:
            return bool(node.info("cluster").get("cluster_enabled"))
    except (redis.exceptions.RedisError, OSError):
        return False


def connect(settings: RedisSettings, *, timed_replies: bool = True, resend: bool = True) -> aioredis.Redis:
    """A client over a blocking pool: callers wait for a free connection instead of failing.

    Each reply is awaited for at most the socket timeout; without `timed_replies`, for a caller
    that times its whole round itself (`round_trip` with `within_s`), none is: redis-py's timer
    per reply was about a third of a pipeline's CPU.

    A command on a connection that Redis dropped (it restarted) is retried once on a new one,
    at once: a Redis that is really gone surfaces within the connect timeout, not after a
    backoff series. The retry belongs to the pool's connections (the client's own is ignored
    when a pool is given).

    With Sentinels, it is a client of the master they name, found again after a failover. On a cluster it is
    redis-py's cluster client (typed as the plain client: it takes the same commands): each command
    goes to the master of its key's slot; a moved slot or a failed master refreshes the topology and the command is
    sent again, up to 8 times (what still fails while a replica is promoted reaches the caller as Redis being away:
    one of `TRANSIENT`). Without `resend`, for writes
    that must not land twice, nothing is sent again, on any kind of Redis: a pipeline sent again after a failover
    resends the commands whose replies were lost, which may have been carried out (an XADD would be written twice);
    the caller learns of the failure instead.
    """
    if settings.cluster():
        cluster = RedisCluster.from_url(
            settings.url,
            max_connections=settings.redis_max_connections,
            socket_connect_timeout=settings.redis_connect_timeout_s,
            socket_timeout=settings.redis_socket_timeout_s if timed_replies else None,
            health_check_interval=30,
            retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), 8 if resend else 0),
        )
        return cast(aioredis.Redis, cluster)
    if sentinels := settings.sentinels():
        url = urlparse(settings.url)
        timeout = settings.redis_connect_timeout_s
        manager = Sentinel(sentinels, socket_connect_timeout=timeout, socket_timeout=timeout)  # type: ignore[no-untyped-call]
        return manager.master_for(  # type: ignore[no-any-return]
            settings.redis_sentinel_master,
            password=url.password,
            db=int(url.path.strip("/") or 0),
            max_connections=settings.redis_max_connections,
            socket_connect_timeout=settings.redis_connect_timeout_s,
            socket_timeout=settings.redis_socket_timeout_s if timed_replies else None,
            socket_keepalive=True,
            health_check_interval=30,
            retry=Retry(NoBackoff(), 1 if resend else 0),
            connection_class=PackedSentinelConnection,
            retry_on_error=[redis.exceptions.ConnectionError, redis.exceptions.TimeoutError],
        )
    url_options: dict[str, Any] = dict(parse_url(settings.url))
    base = url_options.pop("connection_class", Connection)
    pool = aioredis.BlockingConnectionPool(
        **{
            "max_connections": settings.redis_max_connections,
            "timeout": 10,
            "socket_connect_timeout": settings.redis_connect_timeout_s,
            "socket_timeout": settings.redis_socket_timeout_s if timed_replies else None,
            **({} if base is UnixDomainSocketConnection else {"socket_keepalive": True}),
            "health_check_interval": 30,
            "retry": Retry(NoBackoff(), 1 if resend else 0),
            "retry_on_error": [redis.exceptions.ConnectionError, redis.exceptions.TimeoutError],
            **url_options,  # what the URL says wins, as with redis-py's `from_url`
            "connection_class": PACKED.get(base, base),
        }
    )
    return aioredis.Redis(connection_pool=pool)


async def round_trip(client: aioredis.Redis, commands: Sequence[Sequence[Any]], within_s: float | None = None) -> list[Any]:
    """Sends `commands` in one pipeline (no transaction) and returns their replies in order, a refused command's as its
    `ResponseError`. A pipeline whose connection failed is sent again once on a fresh connection if the client
    resends (`connect`). With `within_s`, the round (its retry included) fails with `TimeoutError` past that long, and the
    connection it was on is closed; otherwise the client's socket timeout bounds each reply.

    A command named in bytes (`b"XADD"`) gets Redis's reply as it is (on a cluster, converted as if named in text);
    named in text, redis-py's reply callback converts it (`"SET"` -> `True`), given the options that a dict as the
    command's last item names (`("XPENDING", …, {"parse_detail": True})`, as redis-py's `xpending_range` sends it). A
    connection torn down under the round (`TORN_DOWN`) raises `ConnectionError`, as Redis being away."""
    pipeline = client.pipeline(transaction=False)
    # A cluster's pipeline looks up each command's routing by its name, which it takes in text only.
    named = isinstance(client, RedisCluster)
    for command in commands:
        name, *arguments = command
        options = arguments.pop() if arguments and isinstance(arguments[-1], dict) else {}
        pipeline.execute_command(name.decode() if named and isinstance(name, bytes) else name, *arguments, **options)
    try:
        async with asyncio.timeout(within_s):
            replies: list[Any] = await pipeline.execute(raise_on_error=False)
    except TimeoutError as exc:
        raise redis.exceptions.TimeoutError(f"no reply from Redis within {within_s} s") from exc
    except (*TRANSIENT, *TORN_DOWN) as exc:
        if named:
            # A client that does not send again (`resend`) learns the cluster's new shape here, before its next round.
            await cast(RedisCluster, client).nodes_manager.initialize()
        if isinstance(exc, TORN_DOWN):
            raise redis.exceptions.ConnectionError(f"the connection was torn down under the round: {exc!r}") from exc
        raise
    return replies


class SharedRounds:
    """Commands that several callers send in the same turn of the event loop go to Redis in one round trip.

    On these machines a round trip costs a process tens of µs of system calls and event-loop work,
    whatever it carries, and redis-py adds as much again per call: a service that sends one small
    command per request (an acknowledgement, a counter, a release) pays that per request. `send`
    holds its commands until the loop's current turn ends, then every caller's commands of that turn
    go in one pipeline (`round_trip`); under load, callers woken together (a batch of entries read,
    streams closed in one write round) share it, and a lone caller waits for no one.

    Each caller gets its own commands' replies, a refused command's as its `ResponseError`; when the
    round fails (Redis away), every caller of it gets the error. Commands are sent again after a
    dropped connection as the client's own are (`connect`'s `resend`); on a cluster, so are those that
    a node which failed under the round answered with its error.
    """

    def __init__(self, client: aioredis.Redis) -> None:
        self._client = client
        self._pending: list[tuple[Sequence[Sequence[Any]], asyncio.Future[list[Any]]]] = []
        self._rounds: set[asyncio.Task[None]] = set()

    async def send(self, *commands: Sequence[Any]) -> list[Any]:
        loop = asyncio.get_running_loop()
        if not self._pending:
            loop.call_soon(self._start_round)
        future: asyncio.Future[list[Any]] = loop.create_future()
        self._pending.append((commands, future))
        return await future

    def _start_round(self) -> None:
        callers, self._pending = self._pending, []
        task = asyncio.get_running_loop().create_task(self._round(callers))
        self._rounds.add(task)
        task.add_done_callback(self._rounds.discard)

    async def _round(self, callers: list[tuple[Sequence[Sequence[Any]], asyncio.Future[list[Any]]]]) -> None:
        try:
            replies = await self._replies([command for commands, _ in callers for command in commands])
        except BaseException as exc:
            for _, future in callers:
                if not future.done():
                    future.set_exception(exc if isinstance(exc, Exception) else redis.exceptions.ConnectionError("the round was cut short"))
            if not isinstance(exc, Exception):
                raise
            return
        at = 0
        for commands, future in callers:
            if not future.done():
                future.set_result(replies[at : at + len(commands)])
            at += len(commands)

    async def _replies(self, commands: list[Sequence[Any]]) -> list[Any]:
        """The round's replies. On a cluster, the commands of a node that failed under the round (its master died)
        come back with the error while the other nodes' went through: those are sent again on the cluster as it is
        found now, as often as the client sends a command of its own again (none, for a client that does not resend)."""
        replies = await round_trip(self._client, commands)
        if not isinstance(self._client, RedisCluster):
            return replies
        for attempt in range(self._client.retry.get_retries()):
            failed = [i for i, reply in enumerate(replies) if isinstance(reply, (*TRANSIENT, *TORN_DOWN))]
            if not failed:
                break
            await asyncio.sleep(min(1.0, 0.05 * 2**attempt))
            await self._client.nodes_manager.initialize()
            for i, reply in zip(failed, await round_trip(self._client, [commands[i] for i in failed]), strict=True):
                replies[i] = reply
        return replies


async def run_script(rounds: SharedRounds, script: AsyncScript, keys: Sequence[Any], args: Sequence[Any]) -> Any:
    """`script` (a client's `register_script`) by its digest in a shared round; sent whole, which loads it, when Redis
    does not know it (a new, restarted or failed-over Redis)."""
    (reply,) = await rounds.send(("EVALSHA", script.sha, len(keys), *keys, *args))
    if isinstance(reply, redis.exceptions.NoScriptError):
        return await script(keys=keys, args=args)
    return raise_refused([reply])[0]


def raise_refused(replies: list[Any]) -> list[Any]:
    """`replies` of a `SharedRounds.send`, raising the first command's failure if any failed: Redis refused it
    (`ResponseError`), or, on a cluster, its node could not be reached."""
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies
