"""Grounding a stateless request (`knowledge_bases` on `/v1/chat/completions`): sources from the conversation service,
given to the model as a system message after the request's own."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request
from litestar.datastructures import State

from chatbot_contracts import ChatMessage
from chatbot_contracts.knowledge import Grounding, GroundRequest

from .auth import Principal
from .errors import ModelNotFound

CONTEXT_SHARE = 2
"""Sources take at most 1/CONTEXT_SHARE of what the model's window leaves after its output."""
_grounding: msgspec.json.Decoder[Grounding | None] = msgspec.json.Decoder(Grounding | None)


async def ground(
    request: Request[Principal, Any, Any], state: State, alias: str, knowledge_bases: list[str], messages: list[ChatMessage]
) -> Grounding | None:
    """Sources for the last user message from these knowledge bases (searched as the caller's key); None when none is found."""
    spec = state.registry.get(alias)
    if spec is None:
        raise ModelNotFound(f"the model `{alias}` does not exist; GET /v1/models lists the available ones", param="model")
    question = next((m.content for m in reversed(messages) if m.role == "user" and m.content), "")
    if not question:
        return None
    room = max((spec.context_window - spec.max_output_tokens) // CONTEXT_SHARE, 1)
    asked = GroundRequest(knowledge_base_ids=knowledge_bases, query=question, max_tokens=room)
    answer = await state.conversations.call(
        request.user, "POST", "/knowledge/ground", body=msgspec.json.encode(asked), params={"key_id": request.user.key_id}
    )
    return _grounding.decode(answer.content)


def grounded(messages: list[ChatMessage], prompt: str) -> list[ChatMessage]:
    """The messages with the sources' system message after the request's own system messages."""
    at = next((index for index, m in enumerate(messages) if m.role != "system"), len(messages))
    return [*messages[:at], ChatMessage(role="system", content=prompt), *messages[at:]]
