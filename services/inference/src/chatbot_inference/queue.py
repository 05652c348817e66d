"""The worker's reading of `chat.requests`: XREADGROUP and XAUTOCLAIM on redis-py's public API, never more than fits.

A worker runs at most `slots` requests at once and reads only as many entries as it has free
slots: an entry read is pending in this worker's name, where no other worker takes it until the
claim time has passed and where the queue-lag autoscaling no longer counts it, so one read ahead
of a free slot would sit there while other workers idle. (FastStream's subscribers read first
and wait for a slot after, which is why the worker does not use them.)

One loop per stream (a partition of `chat.requests`) does both kinds of reads: every
`claim_every_s` it takes over entries that another consumer read and left idle for
`claim_idle_s` (it died), then it blocks on new entries for up to `block_ms`. Each read first
sets aside the slots it may fill, at most an equal share of them per stream, so that the
partitions' reads together never bring more than the free slots. A group that vanished (Redis
restarted empty) is made again from the stream's start; a Redis that is away is asked again
every `retry_s`, so reading resumes within about that long of its return.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping, Sequence
from typing import Any

import redis.asyncio as aioredis
import redis.exceptions
import structlog

from chatbot_contracts import DATA_FIELD_BYTES
from chatbot_contracts.consumers import ensure_groups

log = structlog.get_logger()

Handler = Callable[[str, str, bytes], Coroutine[Any, Any, None]]
"""Runs one entry: its stream, its id and its payload (the `__data__` field; empty when the entry has none)."""


class QueueReader:
    """Consumer `consumer` of `group` on each of `streams`, running each entry it reads with `handle`, `slots` at a time."""

    def __init__(
        self,
        redis: aioredis.Redis,
        streams: str | Sequence[str],
        group: str,
        consumer: str,
        handle: Handler,
        *,
        slots: int,
        claim_idle_s: float,
        claim_every_s: float = 1.0,
        block_ms: int = 1000,
        retry_s: float = 0.5,
    ) -> None:
        self._redis = redis
        self._streams = [streams] if isinstance(streams, str) else list(streams)
        self._group = group
        self._consumer = consumer
        self._handle = handle
        self._slots = max(1, slots)
        self._share = max(1, self._slots // len(self._streams))
        """The most one stream's read may take."""
        self._reserved = 0
        """Slots set aside for reads in flight."""
        self._claim_idle_ms = int(claim_idle_s * 1000)
        self._claim_every_s = claim_every_s
        self._block_ms = block_ms
        self._retry_s = retry_s
        self._running: set[asyncio.Task[None]] = set()
        self._freed = asyncio.Event()
        self._stopping = asyncio.Event()
        self._claim_cursors = dict.fromkeys(self._streams, "0-0")
        self._loops: list[asyncio.Task[None]] = []

    @property
    def running(self) -> int:
        """Entries being handled now."""
        return len(self._running)

    def start(self) -> None:
        """Read and handle entries until `stop` is called."""
        self._loops = [asyncio.create_task(self._run(stream), name=f"queue-reader-{stream}") for stream in self._streams]

    async def _run(self, stream: str) -> None:
        claimed_at = 0.0
        while not self._stopping.is_set():
            if not await self._free_slot():
                continue
            try:
                if time.monotonic() - claimed_at >= self._claim_every_s:
                    claimed_at = time.monotonic()
                    await self._claim(stream)
                if self._free() > 0:
                    await self._read(stream)
            except redis.exceptions.ResponseError as exc:
                if str(exc).startswith("UNBLOCKED"):
                    # Its slot is moving to another master (resharding): the stream went while the read waited on it.
                    log.info("queue.read_moved", stream=stream, error=str(exc))
                    continue
                if "NOGROUP" not in str(exc):
                    log.error("queue.read_refused", error=str(exc), retry_in_s=self._retry_s)
                    await self._pause(self._retry_s)
                    continue
                log.warning("queue.group_missing", stream=stream, group=self._group)
                await self._retry(ensure_groups(self._redis, [(stream, self._group)]))
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError) as exc:
                log.warning("queue.redis_unreachable", error=str(exc), retry_in_s=self._retry_s)
                await self._pause(self._retry_s)
            except Exception:  # a reader that stopped would leave the worker idle for good: log it and read on
                log.exception("queue.read_failed", retry_in_s=self._retry_s)
                await self._pause(self._retry_s)

    async def stop(self, grace_s: float) -> None:
        """Read no more; let what runs finish for `grace_s`, then cancel it (its entries stay pending for another worker).

        A read in flight is abandoned: what it would have brought stays pending for the claim time.
        """
        self._stopping.set()
        for loop in self._loops:
            loop.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        if self._running:
            _, late = await asyncio.wait(set(self._running), timeout=grace_s)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late)

    def _free(self) -> int:
        return self._slots - len(self._running) - self._reserved

    async def _free_slot(self) -> bool:
        """Wait (a second at most) until a slot is free; whether one is."""
        if self._free() > 0:
            return True
        self._freed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._freed.wait(), timeout=1.0)
        return self._free() > 0 and not self._stopping.is_set()

    @contextlib.contextmanager
    def _reserving(self) -> Iterator[int]:
        """Sets aside the slots a read may fill (its share of the free ones) while it is in flight."""
        count = min(self._free(), self._share)
        self._reserved += count
        try:
            yield count
        finally:
            self._reserved -= count
            self._freed.set()

    async def _read(self, stream: str) -> None:
        with self._reserving() as count:
            replies: Any = await self._redis.xreadgroup(self._group, self._consumer, {stream: ">"}, count=count, block=self._block_ms)
        for _, entries in replies or ():
            self._start(stream, entries)

    async def _claim(self, stream: str) -> None:
        """Take over entries left idle past the claim time, as many as fit, walking the pending list a step per call."""
        with self._reserving() as count:
            reply: Any = await self._redis.xautoclaim(
                stream, self._group, self._consumer, self._claim_idle_ms, start_id=self._claim_cursors[stream], count=count
            )
        cursor, entries = reply[0], reply[1]
        self._claim_cursors[stream] = cursor.decode() if isinstance(cursor, bytes) else str(cursor)
        if entries:
            log.info("queue.claimed", stream=stream, entries=len(entries))
        self._start(stream, entries)

    def _start(self, stream: str, entries: list[tuple[bytes | str, Mapping[bytes, bytes] | None]]) -> None:
        for entry_id, fields in entries:
            entry = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
            payload = (fields or {}).get(DATA_FIELD_BYTES, b"")
            task = asyncio.create_task(self._handle(stream, entry, payload), name=f"request-{entry}")
            self._running.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        self._freed.set()
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("queue.handler_failed", error=repr(error), exc_info=error)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), timeout=seconds)

    async def _retry(self, action: Awaitable[None]) -> None:
        try:
            await action
        except (redis.exceptions.RedisError, OSError) as exc:
            log.warning("queue.redis_unreachable", error=str(exc), retry_in_s=self._retry_s)
            await self._pause(self._retry_s)
