"""Writes one request's events to Redis, coalescing the text that arrives while a write is in flight."""

from __future__ import annotations

import asyncio
import math

import redis.asyncio as aioredis

from chatbot_contracts import DATA_FIELD_BYTES, Delta, InferenceEvent, StreamEvent, ToolCallDelta, encode
from chatbot_contracts.redis import round_trip

Event = StreamEvent | InferenceEvent
Command = tuple[bytes | str | int, ...]
"""One Redis command, as `round_trip` sends it: named in bytes, so that Redis's replies come as they are (no reply
callbacks: only a refusal matters), with its keys in bytes (no encoding per command)."""


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

    A stream with events to write says so (`ready`); the sender puts what every ready stream has
    into one pipeline and runs it, and what streams push while that round trip is in flight goes
    out together in the next: at a thousand paced streams a worker sends about 550 pipelines a
    second for its 10,000 tokens, and a token costs no task wake-up of its own. A lone write goes at once. A
    refused command fails only its own stream's write; a lost round trip fails every write in it.
    """

    def __init__(self, redis: aioredis.Redis, within_s: float | None = None, window_s: float = 0.0) -> None:
        self._redis = redis
        self._within_s = within_s
        """How long a round may take (None: the client's own timer per reply)."""
        self._window_s = window_s
        """How long a round waits for more streams' writes before it goes (0: not at all); a first write does not wait."""
        self._ready: dict[StreamSink, None] = {}
        """Streams with something to write, in the order they asked."""
        self._sender: asyncio.Task[None] | None = None
        self._hurry: asyncio.Future[None] | None = None
        """Set while a round waits out its window: a first write ends the wait."""

    def ready(self, sink: StreamSink, first: bool = False) -> None:
        """`sink` has events to write: they go in the next pipeline, at once when none is in flight (or after the
        write window; at once for a stream's `first` write)."""
        self._ready[sink] = None
        if first and self._hurry is not None:
            _settle(self._hurry)
        if self._sender is None or self._sender.done():
            self._sender = asyncio.get_running_loop().create_task(self._send(first), name="shared-pipeline")

    def forget(self, sink: StreamSink) -> None:
        self._ready.pop(sink, None)

    async def _send(self, first: bool = False) -> None:
        while self._ready:
            if self._window_s and not first:
                await self._wait_window()
            first = False
            sinks, self._ready = list(self._ready), {}
            commands: list[Command] = []
            spans: list[tuple[StreamSink, int, int]] = []
            for sink in sinks:
                start = len(commands)
                try:
                    sink.fill(commands)
                except Exception as exc:  # a stream that cannot be written fails alone
                    del commands[start:]
                    sink.written(exc)
                    continue
                spans.append((sink, start, len(commands)))
            try:
                results = await round_trip(self._redis, commands, self._within_s) if commands else []
            except Exception as exc:  # the round trip failed: none of it is known to be stored
                for sink, _, _ in spans:
                    sink.written(exc)
                continue
            for sink, start, end in spans:
                sink.written(next((r for r in results[start:end] if isinstance(r, Exception)), None))

    async def _wait_window(self) -> None:
        loop = asyncio.get_running_loop()
        hurry = self._hurry = loop.create_future()
        timer = loop.call_later(self._window_s, _settle, hurry)
        try:
            await hurry
        finally:
            timer.cancel()
            self._hurry = None


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class StreamSink:
    """The write side of a request's stream.

    `push` never waits. The worker's shared pipeline writes whatever has been pushed in one
    round trip shared with the worker's other streams; deltas pushed while that write is in
    flight are joined and go out in the next one. A lone token is written at once (no added
    latency); a burst becomes one entry. Events pushed to wait a moment go with the next one.
    After a write failed, nothing more is written and `close` raises what refused it.
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
        self._stream_key = stream_key.encode()
        self._events_key = events_key.encode()
        self._open_ttl_s = open_ttl_s
        self._closed_ttl_s = closed_ttl_s
        self._events_maxlen = events_maxlen
        self._release = release
        """`(sorted set, member)` removed with the terminal write: the request no longer counts as running."""
        self._pending: list[Event] = []
        self._first_write = True
        self._deadline: asyncio.TimerHandle | None = None
        """When events that may wait are written at the latest."""
        self._closing = False
        self._close_sent = False
        self._closed: asyncio.Future[None] | None = None
        """Settled once the terminal write has run."""
        self._failure: BaseException | None = None
        self._aborted = False

    def push(self, event: Event, *, within_s: float = 0.0) -> None:
        """Write `event` now, or (`within_s` > 0) together with the next event pushed, `within_s` seconds later at the latest.

        An event that can wait a moment, like `started` ahead of a first token that usually
        follows within milliseconds, then costs no round trip of its own and does not hold up
        the token behind its write. `math.inf` waits for the next event or the close.
        """
        if self._aborted or self._failure is not None:
            return
        self._pending.append(event)
        if within_s <= 0:
            self._writer.ready(self, self._first_write)
        elif within_s != math.inf and self._deadline is None:
            self._deadline = asyncio.get_running_loop().call_later(within_s, self._writer.ready, self)

    async def let_write_start(self) -> None:
        """Give the loop to the shared pipeline's sender, so that what was pushed is on its way.

        For the first token: a provider's response that arrived in one piece is otherwise parsed
        to its end before the first token's write is even sent.
        """
        await asyncio.sleep(0)

    async def close(self, *final: Event) -> None:
        """Write `final` after everything pushed, set the stream's retention, and wait until it is stored."""
        if self._failure is not None:
            raise self._failure
        self._pending.extend(final)
        self._closing = True
        self._closed = asyncio.get_running_loop().create_future()
        self._writer.ready(self)
        await self._closed

    async def abort(self) -> None:
        """Stop writing without a terminal event (the request is left for another worker)."""
        self._aborted = True
        self._pending = []
        self._drop_deadline()
        self._writer.forget(self)

    def _drop_deadline(self) -> None:
        """Events that could wait are being written (or dropped): their timer is no longer needed."""
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def fill(self, commands: list[Command]) -> None:
        """Add the commands for what was pushed to `commands` (the shared pipeline calls it as it sends)."""
        self._drop_deadline()
        events, self._pending = coalesce(self._pending), []
        closing = self._close_sent = self._closing
        if self._aborted or self._failure is not None or not (events or closing):
            return
        first, self._first_write = self._first_write, False
        for event in events:
            if isinstance(event, StreamEvent):
                commands.append((b"XADD", self._stream_key, b"*", DATA_FIELD_BYTES, encode(event)))
            else:
                commands.append((b"XADD", self._events_key, b"MAXLEN", b"~", self._events_maxlen, b"*", DATA_FIELD_BYTES, encode(event)))
        if closing:
            commands.append((b"EXPIRE", self._stream_key, self._closed_ttl_s))
            if self._release is not None:
                commands.append((b"ZREM", *self._release))
        elif first:
            commands.append((b"EXPIRE", self._stream_key, self._open_ttl_s))

    def written(self, error: BaseException | None) -> None:
        """The pipeline with this stream's last `fill` has run; `error` is what refused it, if anything did."""
        if error is not None and self._failure is None:
            self._failure = error
        closed = self._closed
        if closed is None or closed.done() or not (self._close_sent or self._failure is not None):
            return
        if self._failure is not None:
            closed.set_exception(self._failure)
        else:
            closed.set_result(None)
