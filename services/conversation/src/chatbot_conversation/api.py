"""The internal HTTP API, called by the gateway; the caller's identity comes in `x-chatbot-owner`/`x-chatbot-admin`."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, delete, get, patch, post, put
from litestar.datastructures import State
from litestar.params import FromPath, FromQuery, QueryParameter

from chatbot_contracts.codec import not_utf8
from chatbot_contracts.conversations import (
    ActiveLeaf,
    Conversation,
    ConversationPage,
    ConversationPatch,
    ConversationSummary,
    Fork,
    NewConversation,
    SearchResults,
    Share,
    SharedConversation,
    Turn,
    TurnRequest,
)

from . import importers
from .errors import ConversationError, Invalid, Malformed
from .service import Principal

PREFIX = "/internal/v1"
Limit = Annotated[int, QueryParameter(ge=1, le=200)]


def principal(request: Request[Any, Any, Any]) -> Principal:
    owner = request.headers.get("x-chatbot-owner")
    if not owner:
        raise Invalid("x-chatbot-owner is missing: this API is the gateway's")
    return Principal(owner=owner, is_admin=request.headers.get("x-chatbot-admin") == "1")


def decode(raw: bytes, kind: type[Any]) -> Any:
    try:
        return msgspec.json.decode(raw or b"{}", type=kind)
    except msgspec.MsgspecError as exc:
        raise Invalid(f"invalid request: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise Invalid(f"invalid request: the body is not valid JSON: {not_utf8(raw)}") from exc
    except RecursionError as exc:
        raise Malformed("invalid request: the JSON is nested too deeply") from exc


@post(f"{PREFIX}/conversations", status_code=201)
async def create(request: Request[Any, Any, Any], state: State) -> ConversationSummary:
    return await state.service.create(principal(request), decode(await request.body(), NewConversation))  # type: ignore[no-any-return]


@get(f"{PREFIX}/conversations")
async def list_conversations(
    request: Request[Any, Any, Any],
    state: State,
    q: FromQuery[str | None] = None,
    tag: FromQuery[str | None] = None,
    archived: FromQuery[bool] = False,
    limit: Limit = 50,
    cursor: FromQuery[str | None] = None,
) -> ConversationPage:
    return await state.service.list_conversations(principal(request), q=q, tag=tag, archived=archived, limit=limit, cursor=cursor)  # type: ignore[no-any-return]


@get(f"{PREFIX}/conversations/{{conversation_id:str}}")
async def read(request: Request[Any, Any, Any], state: State, conversation_id: FromPath[str]) -> Conversation:
    return await state.service.get(principal(request), conversation_id)  # type: ignore[no-any-return]


@patch(f"{PREFIX}/conversations/{{conversation_id:str}}")
async def change(request: Request[Any, Any, Any], state: State, conversation_id: FromPath[str]) -> ConversationSummary:
    return await state.service.patch(principal(request), conversation_id, decode(await request.body(), ConversationPatch))  # type: ignore[no-any-return]


@delete(f"{PREFIX}/conversations/{{conversation_id:str}}", status_code=204)
async def remove(request: Request[Any, Any, Any], state: State, conversation_id: FromPath[str]) -> None:
    await state.service.delete(principal(request), conversation_id)


@post(f"{PREFIX}/conversations/{{conversation_id:str}}/turns", status_code=201)
async def turn(request: Request[Any, Any, Any], state: State, conversation_id: FromPath[str]) -> Turn:
    """Store a turn and give its context; in a conversation that names knowledge bases, grounded in what they hold."""
    who, asked = principal(request), decode(await request.body(), TurnRequest)
    grounding = None
    if (wanted := await state.service.grounding_for(who, conversation_id, asked)) is not None:
        bases, question, max_tokens = wanted
        grounding = await state.knowledge.ground(who.owner, bases, question, max_tokens, asked.key_id)
    return await state.service.start_turn(who, conversation_id, asked, grounding)  # type: ignore[no-any-return]


class Abandon(msgspec.Struct, kw_only=True):
    reason: str


@post(f"{PREFIX}/conversations/{{conversation_id:str}}/messages/{{message_id:str}}/abandon", status_code=204)
async def abandon(request: Request[Any, Any, Any], state: State, conversation_id: FromPath[str], message_id: FromPath[str]) -> None:
    """Mark an answer that will never be generated (its request was refused) as failed."""
    why = decode(await request.body(), Abandon)
    await state.service.abandon(principal(request), conversation_id, message_id, why.reason)


@put(f"{PREFIX}/conversations/{{conversation_id:str}}/active-leaf")
async def active_leaf(request: Request[Any, Any, Any], state: State, conversation_id: FromPath[str]) -> Conversation:
    leaf = decode(await request.body(), ActiveLeaf)
    return await state.service.set_active_leaf(principal(request), conversation_id, leaf.message_id)  # type: ignore[no-any-return]


@post(f"{PREFIX}/conversations/{{conversation_id:str}}/fork", status_code=201)
async def fork(request: Request[Any, Any, Any], state: State, conversation_id: FromPath[str]) -> ConversationSummary:
    at = decode(await request.body(), Fork)
    return await state.service.fork(principal(request), conversation_id, at.message_id)  # type: ignore[no-any-return]


@post(f"{PREFIX}/conversations/{{conversation_id:str}}/share", status_code=201)
async def share(request: Request[Any, Any, Any], state: State, conversation_id: FromPath[str]) -> Share:
    return await state.service.share(principal(request), conversation_id)  # type: ignore[no-any-return]


@delete(f"{PREFIX}/conversations/{{conversation_id:str}}/share", status_code=204)
async def unshare(request: Request[Any, Any, Any], state: State, conversation_id: FromPath[str]) -> None:
    await state.service.revoke_share(principal(request), conversation_id)


@get(f"{PREFIX}/shared/{{token:str}}")
async def shared(state: State, token: FromPath[str]) -> SharedConversation:
    return await state.service.shared(token)  # type: ignore[no-any-return]


@get(f"{PREFIX}/search")
async def search(request: Request[Any, Any, Any], state: State, q: FromQuery[str], limit: Limit = 20) -> SearchResults:
    return await state.service.search(principal(request), q, limit)  # type: ignore[no-any-return]


@get(f"{PREFIX}/conversations/{{conversation_id:str}}/export")
async def export(
    request: Request[Any, Any, Any], state: State, conversation_id: FromPath[str], format: FromQuery[str] = "json"
) -> Response[Any]:
    who = principal(request)
    if format == "markdown":
        return Response(await state.service.export_markdown(who, conversation_id), media_type="text/markdown; charset=utf-8")
    if format != "json":
        raise Invalid(f"unknown export format {format!r}; use json or markdown")
    return Response(await state.service.export(who, conversation_id))


@post(f"{PREFIX}/conversations/import", status_code=201)
async def import_conversations(request: Request[Any, Any, Any], state: State) -> dict[str, list[ConversationSummary]]:
    """Parse on a worker thread (one import at a time per replica beyond two): the event loop keeps serving others."""
    who = principal(request)
    raw = await request.body()
    async with state.import_slots:
        conversations = await asyncio.to_thread(importers.parse, raw, state.import_limits)
    return {"imported": await state.service.store_import(who, conversations)}


def handle_error(_: Request[Any, Any, Any], exc: ConversationError) -> Response[dict[str, Any]]:
    kind = {404: "not_found", 413: "request_too_large", 422: "invalid", 503: "unavailable"}.get(exc.status, "invalid_request")
    return Response({"error": {"message": exc.message, "type": "invalid_request_error", "code": kind}}, status_code=exc.status)


@get(f"{PREFIX}/conversations/{{conversation_id:str}}/attachments/{{attachment_id:str}}")
async def attachment(
    request: Request[Any, Any, Any], state: State, conversation_id: FromPath[str], attachment_id: FromPath[str]
) -> Response[bytes]:
    """A stored image of the conversation, as it was sent."""
    media_type, data = await state.service.attachment(principal(request), conversation_id, attachment_id)
    return Response(data, media_type=media_type)


@get(f"{PREFIX}/shared/{{token:str}}/attachments/{{attachment_id:str}}")
async def shared_attachment(state: State, token: FromPath[str], attachment_id: FromPath[str]) -> Response[bytes]:
    """A stored image that a shared snapshot shows."""
    media_type, data = await state.service.shared_attachment(token, attachment_id)
    return Response(data, media_type=media_type)


ROUTES = [
    create,
    list_conversations,
    read,
    change,
    remove,
    turn,
    attachment,
    abandon,
    active_leaf,
    fork,
    share,
    unshare,
    shared,
    shared_attachment,
    search,
    export,
    import_conversations,
]
