"""Read-your-writes for answers: an answer whose stream has ended reads as ended, even before its event is stored.

The store learns an answer's end from `inference.events` (batched, a few tens of milliseconds
after the stream's `done`); a client that reads the conversation right after `done` would see
the answer still `streaming` and empty. A read that finds a streaming answer looks at the end of
its request's stream, and when that is `done`, shows the answer as the stream has it. Nothing is
written here: the event, applied once, stays what stores the answer (and asks for a title).
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
import redis.asyncio as aioredis
import redis.exceptions
import structlog

from chatbot_contracts import DATA_FIELD_BYTES, Delta, Done, Error, Keys, Restart, Started, Usage, stream_event_decoder
from chatbot_contracts.conversations import Conversation, Message

from .citations import unknown_citations

log = structlog.get_logger()

STATUS = {"cancelled": "cancelled", "error": "failed"}
"""A `done` reason to the stored status it becomes (any other reason: `complete`)."""


class FinishedStreams:
    def __init__(self, redis: aioredis.Redis | None, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys

    async def overlay(self, conversation: Conversation) -> Conversation:
        """The conversation with each streaming answer whose stream has ended shown as it ended."""
        streaming = [m for m in conversation.messages if m.status == "streaming" and m.request_id]
        if not streaming or self._redis is None:
            return conversation
        try:
            ended = await self._ended(streaming)
        except (redis.exceptions.RedisError, OSError, KeyError, msgspec.MsgspecError) as exc:
            # The stored state is still a true answer, only an older one: serve it.
            log.warning("live.unavailable", error=type(exc).__name__)
            return conversation
        if not ended:
            return conversation
        messages = [ended.get(m.id, m) for m in conversation.messages]
        return msgspec.structs.replace(conversation, messages=messages)

    async def _ended(self, streaming: Sequence[Message]) -> dict[str, Message]:
        assert self._redis is not None
        pipe = self._redis.pipeline(transaction=False)
        for message in streaming:
            pipe.xrevrange(self._keys.request_stream(str(message.request_id)), count=1)
        lasts = await pipe.execute()
        done = [m for m, last in zip(streaming, lasts, strict=True) if last and _is_done(last[0][1])]
        if not done:
            return {}
        pipe = self._redis.pipeline(transaction=False)
        for message in done:
            pipe.xrange(self._keys.request_stream(str(message.request_id)))
        entries = await pipe.execute()
        return {message.id: _as_ended(message, stream) for message, stream in zip(done, entries, strict=True)}


def _is_done(fields: dict[bytes, bytes]) -> bool:
    return isinstance(stream_event_decoder.decode(fields[DATA_FIELD_BYTES]), Done)


def _as_ended(message: Message, stream: list[tuple[bytes, dict[bytes, bytes]]]) -> Message:
    text: list[str] = []
    model, usage, error, status = message.model, message.usage, message.error, "complete"
    for _, fields in stream:
        match stream_event_decoder.decode(fields[DATA_FIELD_BYTES]):
            case Restart():
                text = []
            case Started(model=started_model):
                model = started_model
            case Delta(text=piece):
                text.append(piece)
            case Usage(usage=used):
                usage = used
            case Error(message=failure):
                error = failure
            case Done(reason=reason):
                status = STATUS.get(reason, "complete")
    content = "".join(text)
    flagged = unknown_citations(content, len(message.sources)) if message.sources else []
    return msgspec.structs.replace(
        message, content=content, status=status, model=model, usage=usage, error=error, unknown_citations=flagged
    )
