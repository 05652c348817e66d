"""Applying inference events to stored answers (idempotent), and asking for titles after a first exchange."""

from __future__ import annotations

import time

import redis.asyncio as aioredis
import structlog

from chatbot_contracts import (
    DATA_FIELD,
    AnyInferenceEvent,
    Cancelled,
    ChatMessage,
    ChatRequest,
    Completed,
    Failed,
    GenerationParams,
    Keys,
    encode,
    new_request_id,
)
from chatbot_contracts.tracing import SpanKind, span_in, tracer

from .service import ConversationService

log = structlog.get_logger()
TRACER = tracer("chatbot.conversation")

TITLE_PROMPT = "Write a title of at most six words for this conversation. Reply with the title only, no quotes."


class EventApplier:
    """Writes each answer's final state from `inference.events`; redelivered or late events change nothing."""

    def __init__(self, service: ConversationService, title_model: str | None, enqueue: TitleQueue | None = None) -> None:
        self.service = service
        self.title_model = title_model
        self.enqueue = enqueue

    async def apply(self, event: AnyInferenceEvent) -> None:
        if isinstance(event, Completed | Cancelled | Failed) and event.conversation_id is not None:
            attributes = {"messaging.system": "redis", "messaging.operation.type": "process", "gen_ai.request.model": event.model}
            with span_in(event.traceparent, TRACER, f"persist {event.purpose}", SpanKind.CONSUMER, attributes):
                await self._apply(event)

    async def _apply(self, event: AnyInferenceEvent) -> None:
        match event:
            case Completed(purpose="title", conversation_id=str(conversation_id)):
                await self.service.set_generated_title(conversation_id, event.text)
            case Completed(message_id=str(message_id)):
                answered = await self.service.finish_answer(
                    message_id, status="complete", text=event.text, model=event.model, usage=event.usage, error=None
                )
                if answered is not None:
                    await self._maybe_title(answered, event)
            case Cancelled(message_id=str(message_id)):
                await self.service.finish_answer(
                    message_id, status="cancelled", text=event.text, model=event.model, usage=event.usage, error=None
                )
            case Failed(message_id=str(message_id)):
                await self.service.finish_answer(
                    message_id, status="failed", text=event.text, model=event.model, usage=event.usage, error=event.message
                )
            case _:
                return

    async def _maybe_title(self, conversation_id: str, turn: Completed) -> None:
        """Ask for a title after the first exchange, as the key that made the turn: charged to its usage and budget."""
        if not self.title_model or self.enqueue is None:
            return
        exchange = await self.service.first_exchange(conversation_id)
        if exchange is None:
            return
        owner, question, answer = exchange
        now = time.time()
        request = ChatRequest(
            request_id=new_request_id(),
            model=self.title_model,
            messages=[
                ChatMessage(role="system", content=TITLE_PROMPT),
                ChatMessage(role="user", content=f"{question[:2000]}\n\n{answer[:2000]}"),
            ],
            params=GenerationParams(max_tokens=24, temperature=0.2),
            owner=owner,
            key_id=turn.key_id or "conversation-service",
            budget_period=turn.budget_period,
            enqueued_at=now,
            deadline=now + 120,
            conversation_id=conversation_id,
            purpose="title",
        )
        await self.enqueue(request)
        log.info("title.requested", conversation_id=conversation_id, model=self.title_model)


class TitleQueue:
    """Puts a title request on `chat.requests`, like any other generation."""

    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys

    async def __call__(self, request: ChatRequest) -> None:
        await self._redis.xadd(self._keys.requests_for(request.request_id), {DATA_FIELD: encode(request)})
