"""Every request stream a gateway relays, read on one Redis connection: the reading half of the hot path.

One blocking XREAD names every followed stream (and a wake-up stream of the gateway's own) and
returns whatever any of them has: at a thousand streams of twenty tokens a second each, one round
trip carries dozens of tokens instead of one, and the gateway holds one connection instead of a
thousand. Each stream's consumer takes what was read for it (`Following.next`); a consumer that
falls behind (a slow client) leaves its stream out of reads until it catches up.

On a Redis Cluster one command may name keys of one slot only, so there is a reader per stream
partition (`Followers`): a partition's streams and its wake-up stream share its hash tag, and its
reads go to whichever master holds that slot now. A slot that moves (a failover, resharding) moves
with its reader, which reads on from the entry ids it had.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Coroutine, Iterable
from typing import Any

import msgspec
import redis.asyncio as aioredis
import redis.exceptions
import structlog

from chatbot_contracts import DATA_FIELD_BYTES, AnyStreamEvent, Done, Error, ErrorCode, Keys, stream_event_decoder
from chatbot_contracts.redis import TORN_DOWN, TRANSIENT

log = structlog.get_logger()

Batch = list[tuple[bytes, AnyStreamEvent]]
"""Events read together, each with its stream entry id."""

KEEPALIVE: Batch = []
"""Returned when nothing arrived for `keepalive_s`, so the caller can keep its connection warm."""

READ_AHEAD = 512
"""Entries read for a stream and not yet taken by its consumer, past which the stream is left out of reads
(a slow client slows its own stream; the gateway's memory stays bounded)."""

GATHER_PER_STREAM_S = 100e-6
MAX_GATHER_S = 0.010
"""After a read of every followed stream, the streams that have begun are read again once entries have gathered
for 100 µs per stream read, 10 ms at most: a blocking XREAD costs Redis (it registers and unregisters every key
it names) and the gateway time for every stream it names, so at scores of busy streams reads are spaced to
carry many entries each, while a lone stream is read again at once. Streams that still wait for their first
entry are read meanwhile on their own, by reads that name only them: spacing never adds to a time to first
token. `bench/README.md` (Round 17) has the figures."""

BLOCK_MS = 5000
"""Longest blocking read; below the socket timeout (`CHATBOT_REDIS_SOCKET_TIMEOUT_S`)."""

READ_FAILURES: tuple[type[Exception], ...] = (*TRANSIENT, *TORN_DOWN)
"""A read that failed this way is tried again (an outage), not the reader's end."""

OUTAGE_RETRY_S = 0.2
WAKE_TTL_S = 3600
"""The wake-up stream outlives its last wake by this much (it is not deleted: a gateway may stop without warning)."""


def ending(code: ErrorCode, message: str) -> Batch:
    """A stream's end made by the gateway itself (such events have no entry id)."""
    return [(b"", Error(code=code, message=message)), (b"", Done(reason="error"))]


def _as_sent(response: Any, **_: Any) -> Any:
    return response


def _data(fields: list[bytes] | None) -> bytes:
    """The event in an entry's fields, `[field, value, …]`."""
    pairs = fields or []
    for i in range(0, len(pairs) - 1, 2):
        if pairs[i] == DATA_FIELD_BYTES:
            return pairs[i + 1]
    raise ValueError(f"the entry has no {DATA_FIELD_BYTES.decode()} field")


def _entry_order(entry_id: bytes) -> tuple[int, int]:
    milliseconds, _, sequence = entry_id.partition(b"-")
    return int(milliseconds), int(sequence or 0)


class Following:
    """One followed stream as its consumer sees it: entries read and not yet taken, and what wakes the consumer."""

    __slots__ = (
        "_deadline",
        "_keepalive_s",
        "_last",
        "_loop",
        "_timer",
        "_waiter",
        "after",
        "ended",
        "entries",
        "follower",
        "fresh",
        "key",
        "request_id",
    )

    def __init__(self, follower: Follower, request_id: str, key: bytes, after: bytes, deadline: float, keepalive_s: float) -> None:
        self.request_id = request_id
        self.key = key
        self.after = after
        """The last entry read: the next read starts after it."""
        self.entries: Batch = []
        self.ended = False
        """Its last event is read (`done`, or an ending of the gateway's making): it is read no more."""
        self.fresh = True
        """Nothing is read for it yet: its client waits for a first event (it is read without waiting for the others)."""
        self.follower = follower
        self._loop = asyncio.get_running_loop()
        self._keepalive_s = keepalive_s
        self._last = self._loop.time()
        self._deadline = self._last + (deadline - time.time())
        self._waiter: asyncio.Future[None] | None = None
        # One timer for keepalives and the deadline, moved only when it fires (not on every entry).
        self._timer = self._loop.call_at(min(self._last + keepalive_s, self._deadline), self._on_timer)

    def readable(self) -> bool:
        return not self.ended and len(self.entries) < READ_AHEAD

    async def next(self) -> Batch:
        """The events read since the last call, waiting for some; `KEEPALIVE` after `keepalive_s` of silence."""
        if not self.entries:
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
            if not self.entries:
                return KEEPALIVE
        batch, self.entries = self.entries, []
        if len(batch) >= READ_AHEAD and not self.ended:
            self.follower.changed()  # it was left out of reads while it was this far ahead
        return batch

    def add(self, batch: Batch, now: float) -> None:
        """Entries read for this stream."""
        if not batch:
            return
        self.entries += batch
        self.after = batch[-1][0]
        self.ended = isinstance(batch[-1][1], Done)
        self._last = now
        self.fresh = False
        self._wake()

    def end(self, batch: Batch) -> None:
        """Ends the stream with events of the gateway's making."""
        self.ended = True
        self.entries += batch
        self.fresh = False
        self._wake()

    def close(self) -> None:
        self._timer.cancel()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _on_timer(self) -> None:
        if self.ended:
            return
        now = self._loop.time()
        if now >= self._deadline:
            log.warning("stream.deadline_exceeded", request_id=self.request_id)
            self.end(ending("deadline_exceeded", "no answer arrived before the request's deadline"))
            return
        if now - self._last >= self._keepalive_s - 0.001:
            self._last = now
            self._wake()  # with nothing to take: a keepalive
        self._timer = self._loop.call_at(min(self._last + self._keepalive_s, self._deadline), self._on_timer)


class Follower:
    """Reads every stream this gateway follows with one blocking XREAD at a time, on one connection.

    A stream added while a read is in flight interrupts it through the gateway's wake-up stream
    (the read names explicit entry ids, so nothing written meanwhile is missed). Streams that have
    begun are read at spaced intervals (`GATHER_PER_STREAM_S`), and between those reads the streams
    that wait for their first entry are read on their own. When Redis is
    unreachable, reads are retried for `outage_s`, then every stream ends with an error; after an
    outage, streams whose request Redis no longer knows (it restarted empty) end at once.
    On a cluster (`cluster`), `redis` is a cluster client of the follower's own and every key it
    reads must hash to the slot of `wake_key`.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        outage_s: float,
        wake_key: str,
        *,
        cluster: bool = False,
        gather_per_stream_s: float = GATHER_PER_STREAM_S,
        max_gather_s: float = MAX_GATHER_S,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self._outage_s = outage_s
        self._cluster = cluster
        self._gather_per_stream_s = gather_per_stream_s
        self._max_gather_s = max_gather_s
        self._streams: dict[bytes, list[Following]] = {}
        self._fresh: set[bytes] = set()
        """Streams that may wait for their first entry (a superset: one is dropped when a fresh-only read finds it has
        begun or is forgotten), so that those reads need not look at every followed stream."""
        self._wake_key = wake_key.encode()
        self._woken_at = b"0-0"
        self._changed = asyncio.Event()
        self._reading = False
        """A read is in flight: streams added since are not in it."""
        self._waking = False
        self._task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()

    def follow(self, request_id: str, after: bytes, deadline: float, keepalive_s: float) -> Following:
        """Starts reading the request's stream after entry `after`; `forget` it when done."""
        key = self._keys.request_stream(request_id).encode()
        following = Following(self, request_id, key, after, deadline, keepalive_s)
        self._streams.setdefault(key, []).append(following)
        self._fresh.add(key)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        self.changed()
        return following

    def forget(self, following: Following) -> None:
        following.close()
        followings = self._streams.get(following.key)
        if followings is not None and following in followings:
            followings.remove(following)
            if not followings:
                del self._streams[following.key]

    def changed(self) -> None:
        """A stream is readable that may not be in the read in flight: interrupt that read."""
        self._changed.set()
        if self._reading and not self._waking:
            self._waking = True
            self._spawn(self._wake())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for task in list(self._background):
            task.cancel()

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _wake(self) -> None:
        pipe = self._redis.pipeline(transaction=False)
        pipe.xadd(self._wake_key, {b"w": b""}, maxlen=1, approximate=False)
        pipe.expire(self._wake_key, WAKE_TTL_S)
        try:
            await pipe.execute()
        except redis.exceptions.RedisError as exc:  # the read notices an outage by itself
            log.debug("follower.wake_failed", error=str(exc))

    def _positions(self, fresh_only: bool = False) -> tuple[list[bytes], list[bytes]]:
        """The streams to read now (`fresh_only`: those that wait for their first entry) and the entry each is read
        after."""
        keys: list[bytes] = []
        after: list[bytes] = []
        streams: Iterable[tuple[bytes, list[Following]]] = self._streams.items()
        if fresh_only:
            self._fresh = {key for key in self._fresh if any(f.fresh for f in self._streams.get(key, ()))}
            streams = [(key, self._streams[key]) for key in self._fresh]
        for key, followings in streams:
            if len(followings) == 1:
                if followings[0].readable():
                    keys.append(key)
                    after.append(followings[0].after)
            elif any(following.readable() for following in followings):
                # One stream followed twice (a client resuming it from two places): read after the
                # earlier of the two, and give each only what it has not seen.
                keys.append(key)
                after.append(min((f.after for f in followings if not f.ended), key=_entry_order))
        return keys, after

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        reader = self._reader()
        outage_since: float | None = None
        try:
            steady_due = 0.0  # when every stream is read next; until then a read names only the fresh ones
            while True:
                self._changed.clear()
                now = loop.time()
                due = now >= steady_due
                keys, after = self._positions(fresh_only=not due)
                if not keys:
                    if due:
                        await self._changed.wait()
                    else:
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(steady_due - now):
                                await self._changed.wait()
                    continue
                block_ms = BLOCK_MS if due else max(1, int((steady_due - now) * 1000))
                started = loop.time()
                try:
                    if outage_since is not None:
                        await self._end_lost()
                        outage_since = None
                        continue
                    self._reading = True
                    command = ("XREAD", "COUNT", READ_AHEAD, "BLOCK", block_ms, "STREAMS", *keys, self._wake_key, *after, self._woken_at)
                    if self._cluster:
                        # Sent to the slot's master as redis-py knows it now, without asking the node for the keys of
                        # the command (XREAD's keys move); an error refreshes what redis-py knows.
                        node = reader.get_node_from_key(self._wake_key)  # type: ignore[attr-defined]
                        reply = await reader.execute_command(*command, target_nodes=node)  # type: ignore[no-untyped-call]
                    else:
                        reply = await reader.execute_command(*command)  # type: ignore[no-untyped-call]
                except READ_FAILURES as exc:
                    # Redis is restarting, or a master is being replaced: keep trying for a while; clients hear of it
                    # only if it lasts. (A connection torn down under the read can let the transport's own error
                    # through redis-py unwrapped: `TORN_DOWN`.)
                    outage_since = outage_since or time.monotonic()
                    if time.monotonic() - outage_since > self._outage_s:
                        log.error("stream.redis_unreachable", streams=len(keys), error=str(exc))
                        self._end_all(ending("internal", "the platform's Redis is unreachable; the answer could not be followed"))
                    await asyncio.sleep(OUTAGE_RETRY_S)
                    if not self._cluster:
                        # A connection of its own is made anew: one held across a Sentinel's failover would keep
                        # dialling the master that died.
                        await reader.aclose()
                        reader = self._reader()
                    continue
                except redis.exceptions.ResponseError as exc:
                    log.error("stream.unreadable", streams=len(keys), error=str(exc))
                    self._end_all(ending("internal", f"the answer's stream could not be read: {exc}"))
                    continue
                finally:
                    self._reading = self._waking = False
                if reply:
                    self._dispatch(reply, loop.time())
                if due:
                    steady_due = started + min(self._max_gather_s, len(keys) * self._gather_per_stream_s)
        except Exception:
            # A reader that stopped would leave every stream waiting for its deadline: end them now; the
            # next stream followed starts a new reader.
            log.exception("follower.failed")
            self._end_all(ending("internal", "the gateway stopped reading the answer's stream"))
            self._task = None
        finally:
            if not self._cluster:
                await reader.aclose()

    def _reader(self) -> aioredis.Redis:
        """A single Redis: one connection held for every read. A cluster: a connection of the slot's master's pool per
        read (the master changes on a failover)."""
        reader = self._redis if self._cluster else self._redis.client()
        # Replies as Redis sent them: redis-py's XREAD callback builds a dict per entry (a tenth of the gateway's CPU).
        reader.set_response_callback("XREAD", _as_sent)
        return reader

    def _dispatch(self, reply: dict[bytes, list[Any]] | list[list[Any]], now: float) -> None:
        """Hands what a read returned to each stream's consumer: `{key: [[entry id, [field, value, …]], …]}` (RESP3,
        redis-py's default), or in RESP2 the same as a list of `[key, entries]` pairs."""
        for key, entries in reply.items() if isinstance(reply, dict) else reply:
            if key == self._wake_key:
                self._woken_at = entries[-1][0]
                continue
            followings = self._streams.get(key)
            if not followings:
                continue  # forgotten while the read was in flight
            batch: Batch = []
            try:
                for entry_id, fields in entries:
                    event = stream_event_decoder.decode(_data(fields))
                    batch.append((entry_id, event))
                    if isinstance(event, Done):
                        break
            except (msgspec.DecodeError, ValueError) as exc:
                log.error("stream.undecodable", key=key.decode(), error=str(exc))
                for following in followings:
                    if not following.ended:
                        following.add(batch, now)
                        following.end(ending("internal", "the answer's stream holds an event this gateway cannot read"))
                continue
            if len(followings) == 1:
                if not followings[0].ended:
                    followings[0].add(batch, now)
                continue
            for following in followings:
                if not following.ended:
                    seen = _entry_order(following.after)
                    following.add([entry for entry in batch if _entry_order(entry[0]) > seen], now)

    def _end_all(self, batch: Batch) -> None:
        for followings in self._streams.values():
            for following in followings:
                if not following.ended:
                    following.end(list(batch))

    async def _end_lost(self) -> None:
        """After an outage: a Redis that restarted empty no longer knows these requests."""
        followings = [following for followings in self._streams.values() for following in followings if not following.ended]
        pipe = self._redis.pipeline(transaction=False)
        for following in followings:
            pipe.exists(self._keys.request_owner(following.request_id))
        for following, known in zip(followings, await pipe.execute(), strict=True):
            if not known:
                log.error("stream.lost", request_id=following.request_id)
                following.end(ending("internal", "Redis restarted and lost this request's events; send the request again"))


class Followers:
    """The followers of a gateway: one for every stream on a single Redis, one per stream partition on a cluster."""

    def __init__(self, redis: aioredis.Redis, keys: Keys, outage_s: float, *, cluster_reader: aioredis.Redis | None = None) -> None:
        gateway = uuid.uuid4().hex
        self._keys = keys
        if cluster_reader is None:
            self._each = [Follower(redis, keys, outage_s, keys.gateway_wake(gateway))]
        else:
            self._each = [
                Follower(cluster_reader, keys, outage_s, keys.gateway_wake(gateway, partition), cluster=True)
                for partition in range(keys.partitions)
            ]
        self._cluster_reader = cluster_reader

    def follow(self, request_id: str, after: bytes, deadline: float, keepalive_s: float) -> Following:
        """Starts reading the request's stream after entry `after`; `forget` it when done."""
        follower = self._each[self._keys.partition_of(request_id)] if len(self._each) > 1 else self._each[0]
        return follower.follow(request_id, after, deadline, keepalive_s)

    def forget(self, following: Following) -> None:
        following.follower.forget(following)

    async def close(self) -> None:
        for follower in self._each:
            await follower.close()
        if self._cluster_reader is not None:
            await self._cluster_reader.aclose()
