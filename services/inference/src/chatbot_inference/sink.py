"""Writes one request's events to Redis, coalescing the text that arrives while a write is in flight."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

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


class SharedPipeline:
    """One worker's writes to Redis, many requests' at a time.

    What the request streams submit while a round trip is in flight goes out together in the
    next pipeline: at a thousand streams a worker sends tens of pipelines a second, not
    thousands. A lone write goes at once. A refused command fails only its own write; a lost
    round trip fails every write in it.
    """

    def __init__(self, redis: aioredis.Redis) -> None:
        self._redis = redis
        self._waiting: list[tuple[Callable[[Pipeline], object], asyncio.Future[None]]] = []
        self._sender: asyncio.Task[None] | None = None

    async def write(self, fill: Callable[[Pipeline], object]) -> None:
        """Have `fill` queue commands on the next pipeline, and wait until that pipeline has run."""
        done = asyncio.get_running_loop().create_future()
        self._waiting.append((fill, done))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send(), name="shared-pipeline")
        await done

    async def _send(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, []
            pipe = self._redis.pipeline(transaction=False)
            spans = []
            for fill, _ in batch:
                start = len(pipe.command_stack)
                fill(pipe)
                spans.append((start, len(pipe.command_stack)))
            try:
                results = await pipe.execute(raise_on_error=False)
            except Exception as exc:  # the round trip failed: none of it is known to be stored
                for _, done in batch:
                    if not done.done():
                        done.set_exception(exc)
                continue
            for (_, done), (start, end) in zip(batch, spans, strict=True):
                failed = next((r for r in results[start:end] if isinstance(r, Exception)), None)
                if done.done():
                    continue
                if failed is None:
                    done.set_result(None)
                else:  # a command of this write was refused; the others' went through
                    done.set_exception(failed)


class StreamSink:
    """The write side of a request's stream.

    `push` never waits. A background task writes whatever has been pushed in one pipelined
    round trip (shared with the worker's other streams); deltas pushed while that write is in
    flight are joined and go out in the next one. A lone token is written at once (no added
    latency); a burst becomes one entry. Events pushed to wait a moment go with the next one.
    """

    def __init__(
        self,
        writer: SharedPipeline,
        stream_key: str,
        events_key: str,
        *,
        open_ttl_s: int,
        closed_ttl_s: int,
        events_maxlen: int,
        release: tuple[str, str] | None = None,
    ) -> None:
        self._writer = writer
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
        self._deadline: asyncio.TimerHandle | None = None
        """When events that may wait are written at the latest."""
        self._task = asyncio.create_task(self._run(), name=f"sink:{stream_key}")

    def push(self, event: Event, *, within_s: float = 0.0) -> None:
        """Write `event` now, or (`within_s` > 0) together with the next event pushed, `within_s` seconds later at the latest.

        An event that can wait a moment, like `started` ahead of a first token that usually
        follows within milliseconds, then costs no round trip of its own and does not hold up
        the token behind its write. `math.inf` waits for the next event or the close.
        """
        self._pending.append(event)
        if within_s <= 0:
            self._wakeup.set()
        elif within_s != math.inf and self._deadline is None:
            self._deadline = asyncio.get_running_loop().call_later(within_s, self._wakeup.set)

    async def let_write_start(self) -> None:
        """Give the loop to the writes of what was pushed (this sink's task, then the shared pipeline's sender).

        For the first token: a provider's response that arrived in one piece is otherwise parsed
        to its end before the first token's write is even sent.
        """
        for _ in range(2):
            await asyncio.sleep(0)

    async def close(self, *final: Event) -> None:
        """Write `final` after everything pushed, set the stream's retention, and wait until it is stored."""
        self._pending.extend(final)
        self._closing = True
        self._wakeup.set()
        await self._task

    async def abort(self) -> None:
        """Stop writing without a terminal event (the request is left for another worker)."""
        if self._deadline is not None:
            self._deadline.cancel()
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None
            closing = self._closing
            batch, self._pending = self._pending, []
            if batch or closing:
                await self._write(coalesce(batch), closing)
            if closing:
                return

    async def _write(self, events: list[Event], closing: bool) -> None:
        first, self._first_write = self._first_write, False
        encoded = [(isinstance(event, StreamEvent), encode(event)) for event in events]

        def fill(pipe: Pipeline) -> None:
            for to_stream, data in encoded:
                if to_stream:
                    pipe.xadd(self._stream_key, {DATA_FIELD: data})
                else:
                    pipe.xadd(self._events_key, {DATA_FIELD: data}, maxlen=self._events_maxlen, approximate=True)
            if closing:
                pipe.expire(self._stream_key, self._closed_ttl_s)
                if self._release is not None:
                    pipe.zrem(*self._release)
            elif first:
                pipe.expire(self._stream_key, self._open_ttl_s)

        await self._writer.write(fill)
