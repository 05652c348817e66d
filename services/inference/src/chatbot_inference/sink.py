"""Writes one request's events to Redis, coalescing the text that arrives while a write is in flight."""

from __future__ import annotations

import asyncio
import math
import time
from array import array
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
import structlog

from chatbot_contracts import DATA_FIELD_BYTES, Delta, InferenceEvent, StreamEvent, ToolCallDelta, encode
from chatbot_contracts.redis import TRANSIENT, round_trip

log = structlog.get_logger()

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
    refused command fails only its own stream's write.

    A round that fails because Redis is away (a cluster's master being replaced) fails none of its streams at
    once: for `outage_s` they are repaired, each from what Redis holds of it (`StreamSink.repair`), and then
    go on.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        within_s: float | None = None,
        window_s: float = 0.0,
        *,
        outage_s: float = 0.0,
        on_rewrite: Callable[[int], None] | None = None,
    ) -> None:
        self._redis = redis
        self._within_s = within_s
        """How long a round may take (None: the client's own timer per reply)."""
        self._window_s = window_s
        """How long a round waits for more streams' writes before it goes (0: not at all); a stream's first write and its
        last do not wait."""
        self._outage_s = outage_s
        """How long streams whose round failed are tried again before they fail (0: they fail at once)."""
        self._on_rewrite = on_rewrite
        """Told how many entries a repair wrote again that Redis had lost (a failover's lost tail)."""
        self._ready: dict[StreamSink, None] = {}
        """Streams with something to write, in the order they asked."""
        self._broken: dict[StreamSink, tuple[float, BaseException]] = {}
        """Streams whose last round failed with Redis away, until they are repaired: when each is given up, and what
        stopped it last."""
        self._sender: asyncio.Task[None] | None = None
        self._repairer: asyncio.Task[None] | None = None
        self._hurry: asyncio.Future[None] | None = None
        """Set while a round waits out its window: a write that goes at once ends the wait."""
        self._at_once = False
        """The next round goes without waiting for its window (a write that goes at once is ready)."""

    def ready(self, sink: StreamSink, at_once: bool = False) -> None:
        """`sink` has events to write: they go in the next pipeline, at once when none is in flight (or after the
        write window; `at_once` for a stream's first write and its last, so that neither the time to its first token nor
        the time to its end grows). A stream being repaired writes once it is."""
        if sink in self._broken:
            return
        self._ready[sink] = None
        if at_once:
            self._at_once = True
            if self._hurry is not None:
                _settle(self._hurry)
        if self._sender is None or self._sender.done():
            self._sender = asyncio.get_running_loop().create_task(self._send(), name="shared-pipeline")

    def forget(self, sink: StreamSink) -> None:
        self._ready.pop(sink, None)
        self._broken.pop(sink, None)

    async def _send(self) -> None:
        while self._ready:
            if self._window_s and not self._at_once:
                await self._wait_window()
            self._at_once = False
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
            except TRANSIENT as exc:  # none of it is known to be stored: what can be repaired is, once Redis is back
                self._interrupted([(sink, exc) for sink, _, _ in spans])
                continue
            except Exception as exc:
                for sink, _, _ in spans:
                    sink.written(exc)
                continue
            interrupted: list[tuple[StreamSink, BaseException]] = []
            for sink, start, end in spans:
                replies = results[start:end]
                refusal = _refusal(replies)
                if isinstance(refusal, TRANSIENT):  # its node was away (a cluster's round goes on with the others)
                    sink.number(replies)
                    interrupted.append((sink, refusal))
                else:
                    sink.written(refusal, replies)
            self._interrupted(interrupted)

    def _interrupted(self, sinks: list[tuple[StreamSink, BaseException]]) -> None:
        for sink, error in sinks:
            if self._outage_s and sink.repairable():
                self._broken[sink] = (time.monotonic() + self._outage_s, error)
                self._ready.pop(sink, None)  # it writes again once repaired
            else:
                sink.written(error)
        if self._broken and (self._repairer is None or self._repairer.done()):
            self._repairer = asyncio.get_running_loop().create_task(self._repair(), name="shared-pipeline-repair")

    async def _repair(self) -> None:
        """Reads what Redis holds of each broken stream, writes what it lacks, then lets the streams go on; a stream
        still not repaired `outage_s` after its round failed fails with what last stopped it."""
        delay = 0.0
        while self._broken:
            await asyncio.sleep(delay)
            delay = min(max(delay * 2, 0.05), 0.5)
            now = time.monotonic()
            for sink, (given_up_at, error) in list(self._broken.items()):
                if now > given_up_at:
                    del self._broken[sink]
                    sink.written(error)
            sinks = [(sink, sink.checks()) for sink in self._broken]
            spans: list[tuple[StreamSink, int, int, int]] = []
            try:
                checked = await round_trip(self._redis, [command for _, checks in sinks for command in checks], self._within_s)
                commands: list[Command] = []
                for sink, checks in sinks:
                    replies, checked = checked[: len(checks)], checked[len(checks) :]
                    if sink not in self._broken or self._still_away(sink, replies):  # aborted meanwhile, or next time
                        continue
                    start = len(commands)
                    try:
                        lost = sink.repair(commands, replies, self._broken[sink][1])
                    except Exception as exc:  # taken over, or the stream is gone: it cannot go on
                        del commands[start:]
                        self._broken.pop(sink, None)
                        sink.written(exc)
                        continue
                    spans.append((sink, start, len(commands), lost))
                results = await round_trip(self._redis, commands, self._within_s) if commands else []
            except TRANSIENT as exc:
                for sink in self._broken:
                    self._broken[sink] = (self._broken[sink][0], exc)
                continue
            repaired = rewritten = 0
            for sink, start, end, lost in spans:
                replies = results[start:end]
                if sink not in self._broken or self._still_away(sink, replies):
                    continue
                del self._broken[sink]
                repaired, rewritten = repaired + 1, rewritten + lost
                sink.written(_refusal(replies), replies)  # a first write sent again is numbered by its replies
                if sink.has_more():
                    self.ready(sink)
            if repaired:
                log.warning("streams.repaired", streams=repaired, rewritten=rewritten, still_broken=len(self._broken))
            if rewritten and self._on_rewrite is not None:
                self._on_rewrite(rewritten)

    def _still_away(self, sink: StreamSink, replies: list[Any]) -> bool:
        """Whether a reply of `sink`'s says its node is still away (it is tried again, and keeps that as its error)."""
        away = next((r for r in replies if isinstance(r, TRANSIENT)), None)
        if away is not None and sink in self._broken:
            self._broken[sink] = (self._broken[sink][0], away)
        return away is not None

    async def _wait_window(self) -> None:
        loop = asyncio.get_running_loop()
        hurry = self._hurry = loop.create_future()
        timer = loop.call_later(self._window_s, _settle, hurry)
        try:
            await hurry
        finally:
            timer.cancel()
            self._hurry = None


def _refusal(replies: list[Any]) -> BaseException | None:
    return next((r for r in replies if isinstance(r, Exception)), None)


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _data_of(fields: Any) -> bytes | None:
    """An entry's data field, from its fields as Redis sent them (`[name, value, …]`) or as a cluster's client
    converted them (a dict)."""
    if isinstance(fields, dict):
        return fields.get(DATA_FIELD_BYTES)
    pairs = dict(zip(fields[::2], fields[1::2], strict=True))
    return pairs.get(DATA_FIELD_BYTES)


def _entry_id(entry_id: bytes) -> tuple[int, int]:
    millis, _, seq = entry_id.partition(b"-")
    return int(millis), int(seq)


def _id_bytes(entry_id: tuple[int, int] | None) -> bytes:
    """An entry's id as XADD takes it (`*`: Redis numbers it)."""
    return b"*" if entry_id is None else b"%d-%d" % entry_id


class _Entries:
    """The entries a stream's sink wrote, kept until the stream ends to write again what a failover lost.

    Ids as two arrays of integers and the data end to end in one buffer: a bytes object and a list slot for each id
    and each entry's data cost more than the data, and at a token an entry they were most of a worker's memory at
    many long streams (`bench/README.md`, Round 29).
    """

    def __init__(self) -> None:
        self._millis = array("q")
        self._seqs = array("q")
        self._data = bytearray()
        self._ends = array("Q")
        """Where each entry's data ends in `_data`."""

    def __len__(self) -> int:
        return len(self._ends)

    def add(self, entry_id: tuple[int, int] | None, data: bytes) -> bytes:
        """An entry written under `entry_id` (None: numbered by Redis, until `renumber`); its id as XADD takes it."""
        millis, seq = entry_id or (-1, 0)
        self._millis.append(millis)
        self._seqs.append(seq)
        self._data += data
        self._ends.append(len(self._data))
        return _id_bytes(entry_id)

    def renumber(self, index: int, entry_id: tuple[int, int]) -> None:
        self._millis[index], self._seqs[index] = entry_id

    def id(self, index: int) -> tuple[int, int] | None:
        """The `index`-th entry's id (None while Redis has not numbered it)."""
        millis = self._millis[index]
        return None if millis < 0 else (millis, self._seqs[index])

    def data(self, index: int) -> bytes:
        return bytes(self._data[self._ends[index - 1] if index else 0 : self._ends[index]])


class TakenOver(Exception):
    """The request is not this worker's to run: another worker claimed it (another attempt writes its stream), or it
    already runs here. Leave it unacknowledged."""


class StreamSink:
    """The write side of a request's stream.

    `push` never waits. The worker's shared pipeline writes whatever has been pushed in one
    round trip shared with the worker's other streams; deltas pushed while that write is in
    flight are joined and go out in the next one. A lone token is written at once (no added
    latency); a burst becomes one entry. Events pushed to wait a moment go with the next one.
    After a write failed, nothing more is written and `close` raises what refused it.

    Its entries carry ids of its own making after the first (which Redis numbers): written again, an entry
    lands once, so a stream can be repaired after a failover from the entries it keeps (`repair`).
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
        fence: tuple[str, int] | None = None,
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
        self._fence = (fence[0].encode(), fence[1]) if fence is not None else None
        """`(attempts key, attempt)`: a repair finds the stream another attempt's when the count has moved on."""
        self._entries = _Entries()
        """Every entry this sink wrote or is writing: its id and its data, to write it again if a failover lost it."""
        self._last: tuple[int, int] | None = None
        """The id of its latest entry, once known."""
        self._round: list[Command] = []
        """The commands of its write in flight."""
        self._round_entries = 0
        """Where that write's entries start in `_entries`."""

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
        self._writer.ready(self, at_once=True)
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

    @property
    def stream(self) -> str:
        return self._stream_key.decode()

    def fill(self, commands: list[Command]) -> None:
        """Add the commands for what was pushed to `commands` (the shared pipeline calls it as it sends)."""
        self._drop_deadline()
        events, self._pending = coalesce(self._pending), []
        closing = self._close_sent = self._closing
        self._round, self._round_entries = [], len(self._entries)
        if self._aborted or self._failure is not None or not (events or closing):
            return
        first, self._first_write = self._first_write, False
        own = self._round
        # The request's events before its stream's entries: an entry found stored after a failover means they are too.
        for event in events:
            if not isinstance(event, StreamEvent):
                own.append((b"XADD", self._events_key, b"MAXLEN", b"~", self._events_maxlen, b"*", DATA_FIELD_BYTES, encode(event)))
        for event in events:
            if isinstance(event, StreamEvent):
                data = encode(event)
                own.append((b"XADD", self._stream_key, self._entries.add(self._next_id(), data), DATA_FIELD_BYTES, data))
        if closing:
            own.append((b"EXPIRE", self._stream_key, self._closed_ttl_s))
            if self._release is not None:
                own.append((b"ZREM", *self._release))
        elif first:
            own.append((b"EXPIRE", self._stream_key, self._open_ttl_s))
        commands.extend(own)

    def _next_id(self) -> tuple[int, int] | None:
        """The id of a new entry: after the latest, at this millisecond if the clock has passed it (None, for Redis to
        number it, until the first entry's id is known)."""
        return None if self._last is None else self._following_id(self._last)

    def _following_id(self, last: tuple[int, int]) -> tuple[int, int]:
        """The id after `last`, which becomes the latest."""
        now = time.time_ns() // 1_000_000
        millis, seq = last
        self._last = (now, 0) if now > millis else (millis, seq + 1)
        return self._last

    def written(self, error: BaseException | None, replies: list[Any] | None = None) -> None:
        """The pipeline with this stream's last `fill` has run; `error` is what refused it, if anything did, and
        `replies` are its commands' replies."""
        if replies is not None:
            self.number(replies)
        if error is not None and self._failure is None:
            self._failure = error
        closed = self._closed
        if closed is None or closed.done() or not (self._close_sent or self._failure is not None):
            return
        if self._failure is not None:
            closed.set_exception(self._failure)
        else:
            closed.set_result(None)

    def number(self, replies: list[Any]) -> None:
        """Its first entries: Redis numbered them (`replies` to their round), and the next ones are numbered after them
        here. Entries whose numbers did not come back are found by their data in a repair."""
        if self._last is not None:
            return
        index = self._round_entries
        for command, reply in zip(self._round, replies, strict=True):
            if command[0] == b"XADD" and command[1] == self._stream_key:
                if not isinstance(reply, bytes):
                    return
                self._entries.renumber(index, _entry_id(reply))
                index += 1
        if len(self._entries) > self._round_entries:
            self._last = self._entries.id(len(self._entries) - 1)

    def repairable(self) -> bool:
        return self._failure is None and not self._aborted

    def has_more(self) -> bool:
        return bool(self._pending) or (self._closing and not self._close_sent)

    def checks(self) -> list[Command]:
        """What a repair reads first: the stream's latest entry, and whose attempt the request is."""
        # Its first entries' ids are Redis's: they are told by their data among the stream's latest.
        latest = 1 if self._last is not None else max(1, len(self._entries) - self._round_entries)
        checks: list[Command] = [(b"XREVRANGE", self._stream_key, b"+", b"-", b"COUNT", latest)]
        if self._fence is not None:
            checks.append((b"GET", self._fence[0]))
        return checks

    def repair(self, commands: list[Command], checked: list[Any], error: BaseException) -> int:
        """After a round failed with Redis away: add to `commands` what the stream lacks of what this sink wrote (its
        lost entries, under their own ids) and its failed write's other commands. `checked`: the replies to `checks`.
        Returns how many entries that had been stored were lost (a failover's asynchronous replication).

        Raises `error` when the stream is gone (Redis lost its data: there is nothing to go on from), and
        `TakenOver` when another attempt has started."""
        latest, *attempt = checked
        for reply in checked:
            if isinstance(reply, Exception):
                raise reply
        if self._fence is not None and attempt[0] is not None and int(attempt[0]) != self._fence[1]:
            raise TakenOver(f"{self.stream} is attempt {int(attempt[0])}'s now, not {self._fence[1]}'s")
        if self._last is None and not self._first_entries_stored(latest):
            commands.extend(self._round)  # its first write, which did not land: as it was (Redis numbers its entries)
            return 0
        if not latest:
            raise error
        stored, entries = _entry_id(latest[0][0]), self._entries
        # Numbered all, since `_last` is known: an entry is only ever numbered after the one before it.
        missing = [i for i in range(len(entries)) if (entries.id(i) or stored) > stored]
        # The round's events went before its first entry: with that stored, they are too (what is missing is a suffix).
        round_stored = self._round_entries < len(entries) and (not missing or missing[0] > self._round_entries)
        if not round_stored:
            commands.extend(command for command in self._round if command[1] == self._events_key)
        commands.extend((b"XADD", self._stream_key, _id_bytes(entries.id(i)), DATA_FIELD_BYTES, entries.data(i)) for i in missing)
        commands.extend(command for command in self._round if command[1] != self._events_key and command[0] != b"XADD")
        return sum(i < self._round_entries for i in missing)

    def _first_entries_stored(self, latest: list[Any]) -> bool:
        """Whether the stream's `latest` entries (newest first) end with the first of this sink's entries, whose ids
        Redis gave them in a round whose replies were lost: those are numbered from the stream (a round runs in
        order, so what landed is a prefix of its entries), the others after them. Each attempt's first entry is its
        own (`started` after the gateway's events, or `restart` with its number), so its data tells it apart."""
        start, entries = self._round_entries, self._entries
        ours = [entries.data(i) for i in range(start, len(entries))]
        tail = [(entry_id, _data_of(fields)) for entry_id, fields in reversed(latest)]
        landed = next((k for k in range(len(ours), 0, -1) if [data for _, data in tail[-k:]] == ours[:k]), 0)
        if not landed:
            return False
        for index, (entry_id, _) in enumerate(tail[-landed:], start):
            entries.renumber(index, _entry_id(entry_id))
        self._last = last = _entry_id(tail[-1][0])
        for index in range(start + landed, len(entries)):
            entries.renumber(index, last := self._following_id(last))
        return True
