"""`/api/v1`: the native API — stored conversations, streamed turns in the native event protocol, resume."""

from __future__ import annotations

import time
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, delete, get, patch, post, put
from litestar.datastructures import State
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from litestar.response import Stream

from chatbot_contracts import ChatRequest, GenerationParams, InQueue, Sources, Start, new_request_id
from chatbot_contracts.capabilities import refusal
from chatbot_contracts.conversations import (
    ActiveLeaf,
    Conversation,
    ConversationPage,
    ConversationPatch,
    ConversationSummary,
    Fork,
    NewConversation,
    NewMessage,
    Regenerate,
    SearchResults,
    Share,
    SharedConversation,
    Turn,
    TurnParams,
    TurnRequest,
)

from ..auth import PUBLIC, Principal
from ..errors import BadRequest, Forbidden, GatewayError, ModelNotFound, NotFound, Unprocessable, body_not_utf8
from ..fairshare import Admission, budget_terms
from ..generation import enqueue_span
from ..ratelimit import reserve
from .stream import SSE_HEADERS, native_sse

API = "/api/v1"
TAGS = ["conversations"]
Limit = Annotated[int, QueryParameter(ge=1, le=200)]
_turn_decoder = msgspec.json.Decoder(Turn)


class Gone(GatewayError):
    status_code = 410
    error_type = "invalid_request_error"
    code = "stream_expired"


def _body(raw: bytes, kind: type[Any]) -> bytes:
    """Check the body against its contract here, at the edge (errors name the path), and pass it on as it came."""
    try:
        msgspec.json.decode(raw or b"{}", type=kind)
    except msgspec.MsgspecError as exc:
        raise BadRequest(f"invalid request: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise body_not_utf8(raw) from exc
    return raw or b"{}"


def _json(response: Any, status: int | None = None) -> Response[Any]:
    return Response(content=response.content, status_code=status or response.status_code, media_type="application/json")


@post(f"{API}/conversations", tags=TAGS, status_code=201)
async def create_conversation(
    request: Request[Principal, Any, Any], state: State, data: JSONBody[NewConversation]
) -> Response[ConversationSummary]:
    """Start a conversation (optionally with a title, model, system prompt and tags)."""
    return _json(await state.conversations.call(request.user, "POST", "/conversations", body=msgspec.json.encode(data)))


@get(f"{API}/conversations", tags=TAGS)
async def list_conversations(
    request: Request[Principal, Any, Any],
    state: State,
    q: FromQuery[str | None] = None,
    tag: FromQuery[str | None] = None,
    archived: FromQuery[bool] = False,
    limit: Limit = 50,
    cursor: FromQuery[str | None] = None,
) -> Response[ConversationPage]:
    """Your conversations, pinned first then most recent; follow `next_cursor` for more."""
    params = {"q": q, "tag": tag, "archived": str(archived).lower(), "limit": limit, "cursor": cursor}
    return _json(await state.conversations.call(request.user, "GET", "/conversations", params=params))


@get(f"{API}/conversations/{{conversation_id:str}}", tags=TAGS)
async def read_conversation(request: Request[Principal, Any, Any], state: State, conversation_id: FromPath[str]) -> Response[Conversation]:
    """A conversation with its whole message tree and active path."""
    return _json(await state.conversations.call(request.user, "GET", f"/conversations/{conversation_id}"))


@patch(f"{API}/conversations/{{conversation_id:str}}", tags=TAGS)
async def change_conversation(
    request: Request[Principal, Any, Any], state: State, conversation_id: FromPath[str]
) -> Response[ConversationSummary]:
    """Change the title, tags, pinned, archived, model or system prompt (only the fields sent)."""
    body = _body(await request.body(), ConversationPatch)
    return _json(await state.conversations.call(request.user, "PATCH", f"/conversations/{conversation_id}", body=body))


@delete(f"{API}/conversations/{{conversation_id:str}}", tags=TAGS, status_code=204)
async def delete_conversation(request: Request[Principal, Any, Any], state: State, conversation_id: FromPath[str]) -> None:
    await state.conversations.call(request.user, "DELETE", f"/conversations/{conversation_id}")


@put(f"{API}/conversations/{{conversation_id:str}}/active-leaf", tags=TAGS)
async def set_active_leaf(
    request: Request[Principal, Any, Any], state: State, conversation_id: FromPath[str], data: JSONBody[ActiveLeaf]
) -> Response[Conversation]:
    """Switch branch: the message whose path the conversation shows (on every device)."""
    return _json(
        await state.conversations.call(request.user, "PUT", f"/conversations/{conversation_id}/active-leaf", body=msgspec.json.encode(data))
    )


@post(f"{API}/conversations/{{conversation_id:str}}/fork", tags=TAGS, status_code=201)
async def fork_conversation(
    request: Request[Principal, Any, Any], state: State, conversation_id: FromPath[str], data: JSONBody[Fork]
) -> Response[ConversationSummary]:
    """A new conversation holding the path from the root to `message_id`."""
    return _json(
        await state.conversations.call(request.user, "POST", f"/conversations/{conversation_id}/fork", body=msgspec.json.encode(data))
    )


@post(f"{API}/conversations/{{conversation_id:str}}/share", tags=TAGS, status_code=201)
async def share_conversation(request: Request[Principal, Any, Any], state: State, conversation_id: FromPath[str]) -> Response[Share]:
    """A read-only link to a snapshot of the active path (a new link replaces the old one)."""
    return _json(await state.conversations.call(request.user, "POST", f"/conversations/{conversation_id}/share"))


@delete(f"{API}/conversations/{{conversation_id:str}}/share", tags=TAGS, status_code=204)
async def revoke_share(request: Request[Principal, Any, Any], state: State, conversation_id: FromPath[str]) -> None:
    await state.conversations.call(request.user, "DELETE", f"/conversations/{conversation_id}/share")


@get(f"{API}/shared/{{token:str}}", tags=TAGS, opt=PUBLIC, security=[])
async def read_shared(state: State, token: FromPath[str]) -> Response[SharedConversation]:
    """A shared conversation; no key needed."""
    return _json(await state.conversations.call(None, "GET", f"/shared/{token}"))


@get(f"{API}/shared/{{token:str}}/attachments/{{attachment_id:str}}", tags=TAGS, opt=PUBLIC, security=[])
async def read_shared_attachment(state: State, token: FromPath[str], attachment_id: FromPath[str]) -> Response[bytes]:
    """An image a shared conversation shows; no key needed."""
    stored = await state.conversations.call(None, "GET", f"/shared/{token}/attachments/{attachment_id}")
    media_type = stored.headers.get("content-type", "application/octet-stream")
    return Response(stored.content, media_type=media_type, headers={"Cache-Control": "private, max-age=300"})


@get(f"{API}/search", tags=TAGS)
async def search(request: Request[Principal, Any, Any], state: State, q: FromQuery[str], limit: Limit = 20) -> Response[SearchResults]:
    """Full-text search over your titles and messages, best first, with highlighted snippets."""
    return _json(await state.conversations.call(request.user, "GET", "/search", params={"q": q, "limit": limit}))


@get(f"{API}/conversations/{{conversation_id:str}}/export", tags=TAGS)
async def export_conversation(
    request: Request[Principal, Any, Any], state: State, conversation_id: FromPath[str], format: FromQuery[str] = "json"
) -> Response[Any]:
    """The whole tree as JSON (`format=json`) or the active path as Markdown (`format=markdown`)."""
    response = await state.conversations.call(request.user, "GET", f"/conversations/{conversation_id}/export", params={"format": format})
    return Response(content=response.content, media_type=response.headers.get("content-type", "application/json"))


@post(f"{API}/conversations/import", tags=TAGS, status_code=201)
async def import_conversations(request: Request[Principal, Any, Any], state: State) -> Response[dict[str, list[ConversationSummary]]]:
    """Import our JSON export, or ChatGPT's `conversations.json` (every conversation in it)."""
    return _json(await state.conversations.call(request.user, "POST", "/conversations/import", body=await request.body()))


# --- Turns: stored, generated and streamed -------------------------------------------------------


@post(f"{API}/conversations/{{conversation_id:str}}/messages", tags=TAGS, status_code=200)
async def send_message(
    request: Request[Principal, Any, Any], state: State, conversation_id: FromPath[str], data: JSONBody[NewMessage]
) -> Stream:
    """Add a user message (a new branch when `parent_id` is not the active leaf), with its images, and stream the answer
    as native events."""
    images = None
    if data.images:
        if len(data.images) > state.images.max_count:
            raise Unprocessable(f"the message has {len(data.images)} images; at most {state.images.max_count} are allowed", param="images")
        images = [state.images.part(image.url, f"images[{index}].url") for index, image in enumerate(data.images)]
    turn = TurnRequest(
        request_id=new_request_id(),
        content=data.content,
        parent_id=data.parent_id,
        model=data.model,
        max_tokens=_max_tokens(data.params),
        images=images,
        key_id=request.user.key_id,
    )
    return await _stream_turn(request, state, conversation_id, turn, data.params)


@post(f"{API}/conversations/{{conversation_id:str}}/messages/{{message_id:str}}/regenerate", tags=TAGS, status_code=200)
async def regenerate(
    request: Request[Principal, Any, Any],
    state: State,
    conversation_id: FromPath[str],
    message_id: FromPath[str],
    data: JSONBody[Regenerate | None] = None,
) -> Stream:
    """A new answer beside `message_id` (an assistant message), streamed as native events."""
    data = data or Regenerate()
    turn = TurnRequest(
        request_id=new_request_id(),
        regenerate_id=message_id,
        model=data.model,
        max_tokens=_max_tokens(data.params),
        key_id=request.user.key_id,
    )
    return await _stream_turn(request, state, conversation_id, turn, data.params)


@get(f"{API}/conversations/{{conversation_id:str}}/attachments/{{attachment_id:str}}", tags=TAGS)
async def read_attachment(
    request: Request[Principal, Any, Any], state: State, conversation_id: FromPath[str], attachment_id: FromPath[str]
) -> Response[bytes]:
    """An image kept with a message of the conversation, as it was sent (inert, as every API response: no sniffing,
    `default-src 'none'`)."""
    stored = await state.conversations.call(request.user, "GET", f"/conversations/{conversation_id}/attachments/{attachment_id}")
    media_type = stored.headers.get("content-type", "application/octet-stream")
    return Response(stored.content, media_type=media_type, headers={"Cache-Control": "private, max-age=86400"})


def _max_tokens(params: TurnParams | None) -> int | None:
    return params.max_tokens if params else None


async def _stream_turn(
    request: Request[Principal, Any, Any], state: State, conversation_id: str, turn: TurnRequest, params: TurnParams | None
) -> Stream:
    """Start a turn once per `Idempotency-Key`: a retried POST gets the first one's stream, from its start."""
    idempotency_key = request.headers.get("idempotency-key")
    if idempotency_key:
        if len(idempotency_key) > 255:
            raise BadRequest("Idempotency-Key is longer than 255 characters", param="Idempotency-Key")
        earlier = await state.relay.remembered(request.user.owner, idempotency_key)
        if earlier is not None:
            return await _replay(request, state, earlier)
    try:
        stream = await _start_turn(request, state, conversation_id, turn, params)
    except BaseException:
        if idempotency_key:
            await state.relay.remember(request.user.owner, idempotency_key, None)
        raise
    if idempotency_key:
        await state.relay.remember(request.user.owner, idempotency_key, turn.request_id)
    return stream


async def _replay(request: Request[Principal, Any, Any], state: State, request_id: str, after: str = "0-0") -> Stream:
    """A stream of a request already started, counted like any stream (the gateway's bound and the key's)."""
    deadline = time.time() + state.settings.chat.request_timeout_s
    admission = await state.relay.admit_stream(request.user, deadline)
    batches = state.relay.batches(request_id, deadline, admission, after=after.encode(), keepalive_s=state.settings.chat.keepalive_s)
    return Stream(native_sse(batches), media_type="text/event-stream", headers={**SSE_HEADERS, "x-request-id": request_id})


async def _start_turn(
    request: Request[Principal, Any, Any], state: State, conversation_id: str, turn: TurnRequest, params: TurnParams | None
) -> Stream:
    if turn.model is not None and turn.model not in state.registry:
        raise ModelNotFound(f"the model `{turn.model}` does not exist; GET /v1/models lists the available ones", param="model")
    generation = GenerationParams(**msgspec.structs.asdict(params)) if params else GenerationParams()
    principal = request.user
    stored = _turn_decoder.decode(
        (
            await state.conversations.call(principal, "POST", f"/conversations/{conversation_id}/turns", body=msgspec.json.encode(turn))
        ).content
    )
    try:
        chat, admission, rate_headers = await _enqueue(request, state, stored, turn, generation)
    except GatewayError as refused:
        # Refused after the turn was stored: the answer stored as streaming will never come.
        await state.conversations.call(
            principal, "POST", f"/conversations/{conversation_id}/messages/{stored.assistant_message_id}/abandon",
            body=msgspec.json.encode({"reason": refused.message}),
        )  # fmt: skip
        raise
    batches = state.relay.batches(
        chat.request_id, chat.deadline, admission, keepalive_s=state.settings.chat.keepalive_s, enqueued_at=chat.enqueued_at
    )
    return Stream(
        native_sse(batches), media_type="text/event-stream", headers={**SSE_HEADERS, **rate_headers, "x-request-id": chat.request_id}
    )


async def _enqueue(
    request: Request[Principal, Any, Any], state: State, stored: Turn, turn: TurnRequest, generation: GenerationParams
) -> tuple[ChatRequest, Admission, dict[str, str]]:
    """Check the stored turn against the key, the model and the limits, and enqueue it with its first events."""
    principal = request.user
    spec = state.registry.get(stored.model)
    if spec is None:
        raise ModelNotFound(f"the conversation's model `{stored.model}` is not in the registry", param="model")
    if not principal.may_use(stored.model):
        raise Forbidden(f"this key may not use the model `{stored.model}`", code="model_not_allowed")
    if spec.mode == "embedding":
        raise BadRequest(
            f"the model `{stored.model}` is an embedding model; it cannot answer a conversation", code="model_not_supported", param="model"
        )
    if problem := refusal(stored.model, spec, generation, stored.messages):
        raise BadRequest(problem[1], code="unsupported_parameter", param=problem[0])
    max_tokens = min(generation.max_tokens or spec.max_output_tokens, spec.max_output_tokens)
    reserved = reserve(stored.messages, max_tokens)
    rate_headers = await state.limits.take(principal, reserved)
    now = time.time()
    with enqueue_span(request, stored.model) as traceparent:
        chat = ChatRequest(
            request_id=turn.request_id,
            model=stored.model,
            messages=stored.messages,
            params=generation,
            owner=principal.owner,
            key_id=principal.key_id,
            enqueued_at=now,
            deadline=now + state.settings.chat.request_timeout_s,
            traceparent=traceparent,
            conversation_id=stored.conversation_id,
            message_id=stored.assistant_message_id,
            reserved_tokens=reserved if (principal.tpm or principal.owner_tpm) else 0,
            key_tpm=principal.tpm,
            owner_tpm=principal.owner_tpm,
            **budget_terms(principal, spec, stored.messages, max_tokens),
        )
        start = Start(
            request_id=chat.request_id,
            conversation_id=stored.conversation_id,
            user_message_id=stored.user_message_id,
            assistant_message_id=stored.assistant_message_id,
        )
        queued = InQueue(position=await state.relay.queue_position())
        prelude = (start, Sources(sources=stored.sources), queued) if stored.sources else (start, queued)
        admission = await state.relay.submit(chat, principal, prelude=prelude)
    return chat, admission, rate_headers


@get(f"{API}/requests/{{request_id:str}}/events", tags=["requests"])
async def resume(
    request: Request[Principal, Any, Any], state: State, request_id: FromPath[str], last_event_id: FromQuery[str | None] = None
) -> Stream:
    """The request's events after `Last-Event-ID` (header, or `?last_event_id=`), from any gateway, to its end."""
    owner, exists = await state.relay.owner_of(request_id)
    principal = request.user
    if owner is None or (owner != principal.owner and not principal.is_admin):
        raise NotFound(f"no request {request_id}")
    if not exists:
        raise Gone(
            f"the events of request {request_id} have expired (they are kept {state.settings.chat.stream_ttl_s}s after the answer ends)"
        )
    after = request.headers.get("last-event-id") or last_event_id or "0-0"
    if not _is_entry_id(after):
        raise BadRequest(f"Last-Event-ID {after!r} is not an event id of this stream (like 1700000000000-0)", param="last_event_id")
    return await _replay(request, state, request_id, after)


class CancelState(msgspec.Struct, kw_only=True):
    request_id: str
    status: str
    """`cancelling`: the worker has been told; `finished`: the answer had already ended."""


@post(f"{API}/requests/{{request_id:str}}/cancel", tags=["requests"], status_code=202)
async def cancel(request: Request[Principal, Any, Any], state: State, request_id: FromPath[str]) -> CancelState:
    """Stop generating: the worker aborts the provider call; the partial answer is kept as `cancelled`."""
    owner, exists = await state.relay.owner_of(request_id)
    principal = request.user
    if owner is None or (owner != principal.owner and not principal.is_admin):
        raise NotFound(f"no request {request_id}")
    if exists and await state.relay.finished(request_id):
        return CancelState(request_id=request_id, status="finished")
    await state.relay.cancel(request_id)
    return CancelState(request_id=request_id, status="cancelling")


def _is_entry_id(value: str) -> bool:
    millis, _, seq = value.partition("-")
    return millis.isdigit() and (seq == "" or seq.isdigit())


ROUTES = [
    create_conversation,
    list_conversations,
    read_conversation,
    change_conversation,
    delete_conversation,
    set_active_leaf,
    fork_conversation,
    share_conversation,
    revoke_share,
    read_shared,
    read_shared_attachment,
    search,
    export_conversation,
    import_conversations,
    send_message,
    read_attachment,
    regenerate,
    resume,
    cancel,
]
