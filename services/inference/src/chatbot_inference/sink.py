"""Writes one request's events to Redis, coalescing the text that arrives while a write is in flight."""

from __future__ import annotations

import asyncio
import contextlib

import redis.asyncio as aioredis

from chatbot_contracts import DATA_FIELD, Delta, InferenceEvent, StreamEvent, ToolCallDelta, encode

Event = StreamEvent | InferenceEvent


def coalesce(events: list[Event]) -> list[Event]:
    """Adjacent deltas joined into one, and adjacent argument pieces of one tool call: the same answer in fewer entries."""
    out: list[Event] = []
    run: list[str] = []
    for event in events:
        if isinstance(event, Delta):
            run.append(event.text)
            continue
        if run:
            out.append(Delta(text="".join(run)))
            run = []
        previous = out[-1] if out else None
        if (
            isinstance(event, ToolCallDelta)
            and isinstance(previous, ToolCallDelta)
            and previous.index == event.index
            and event.id is None
            and event.name is None
        ):
            out[-1] = ToolCallDelta(
                index=previous.index, id=previous.id, name=previous.name, arguments=previous.arguments + event.arguments
            )
            continue
        out.append(event)
    if run:
        out.append(Delta(text="".join(run)))
    return out


class StreamSink:
    """The write side of a request's stream.

    `push` never waits. A background task writes whatever has been pushed in one pipelined
    round trip; deltas pushed while that write is in flight are joined and go out in the
    next one. A lone token is written at once (no added latency); a burst becomes one entry.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        stream_key: str,
        events_key: str,
        *,
        open_ttl_s: int,
        closed_ttl_s: int,
        events_maxlen: int,
        release: tuple[str, str] | None = None,
    ) -> None:
        self._redis = redis
        self._stream_key = stream_key
        self._events_key = events_key
        self._open_ttl_s = open_ttl_s
        self._closed_ttl_s = closed_ttl_s
        self._events_maxlen = events_maxlen
        self._release = release
        """`(sorted set, member)` removed with the terminal write: the request no longer counts as running."""
        self._pending: list[Event] = []
        self._wakeup = asyncio.Event()
        self._closing = False
        self._first_write = True
        self._task = asyncio.create_task(self._run(), name=f"sink:{stream_key}")

    def push(self, event: Event, *, now: bool = True) -> None:
        """Write `event` soon; with `now=False` only together with the next event pushed (or the close)."""
        self._pending.append(event)
        if now:
            self._wakeup.set()

    async def close(self, *final: Event) -> None:
        """Write `final` after everything pushed, set the stream's retention, and wait until it is stored."""
        self._pending.extend(final)
        self._closing = True
        self._wakeup.set()
        await self._task

    async def abort(self) -> None:
        """Stop writing without a terminal event (the request is left for another worker)."""
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            closing = self._closing
            batch, self._pending = self._pending, []
            if batch or closing:
                await self._write(coalesce(batch), closing)
            if closing:
                return

    async def _write(self, events: list[Event], closing: bool) -> None:
        pipe = self._redis.pipeline(transaction=False)
        for event in events:
            if isinstance(event, StreamEvent):
                pipe.xadd(self._stream_key, {DATA_FIELD: encode(event)})
            else:
                pipe.xadd(self._events_key, {DATA_FIELD: encode(event)}, maxlen=self._events_maxlen, approximate=True)
        if closing:
            pipe.expire(self._stream_key, self._closed_ttl_s)
            if self._release is not None:
                pipe.zrem(*self._release)
        elif self._first_write:
            pipe.expire(self._stream_key, self._open_ttl_s)
        self._first_write = False
        await pipe.execute()
