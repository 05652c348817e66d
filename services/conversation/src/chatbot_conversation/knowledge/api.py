"""The internal API of knowledge bases, called by the gateway (signed, the caller's identity in its headers)."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

import msgspec
from litestar import Request, Response, delete, get, patch, post
from litestar.datastructures import State
from litestar.params import FromPath, FromQuery

from chatbot_contracts.knowledge import (
    Document,
    DocumentAdded,
    DocumentList,
    DocumentText,
    GroundRequest,
    KnowledgeBase,
    KnowledgeBaseList,
    KnowledgeBasePatch,
    NewKnowledgeBase,
    NewTextDocument,
    PassageList,
    SearchRequest,
)

from ..api import PREFIX, decode, principal
from .service import Upload

BASES = f"{PREFIX}/knowledge-bases"


@post(BASES, status_code=201)
async def create_base(request: Request[Any, Any, Any], state: State) -> KnowledgeBase:
    return await state.knowledge.create(principal(request), decode(await request.body(), NewKnowledgeBase))  # type: ignore[no-any-return]


@get(BASES)
async def list_bases(request: Request[Any, Any, Any], state: State) -> KnowledgeBaseList:
    return KnowledgeBaseList(items=await state.knowledge.list_bases(principal(request)))


@get(f"{BASES}/{{knowledge_base_id:str}}")
async def read_base(request: Request[Any, Any, Any], state: State, knowledge_base_id: FromPath[str]) -> KnowledgeBase:
    return await state.knowledge.get(principal(request), knowledge_base_id)  # type: ignore[no-any-return]


@patch(f"{BASES}/{{knowledge_base_id:str}}")
async def rename_base(request: Request[Any, Any, Any], state: State, knowledge_base_id: FromPath[str]) -> KnowledgeBase:
    change = decode(await request.body(), KnowledgeBasePatch)
    return await state.knowledge.rename(principal(request), knowledge_base_id, change.name)  # type: ignore[no-any-return]


@delete(f"{BASES}/{{knowledge_base_id:str}}", status_code=204)
async def delete_base(request: Request[Any, Any, Any], state: State, knowledge_base_id: FromPath[str]) -> None:
    await state.knowledge.delete(principal(request), knowledge_base_id)


@post(f"{BASES}/{{knowledge_base_id:str}}/documents", status_code=201)
async def add_document(
    request: Request[Any, Any, Any],
    state: State,
    knowledge_base_id: FromPath[str],
    name: FromQuery[str | None] = None,
    key_id: FromQuery[str | None] = None,
) -> Response[DocumentAdded]:
    """A file as its bytes (its type in `content-type`, its name in `name`), or `{name, text}` as JSON."""
    body = await request.body()
    media_type = request.headers.get("content-type", "application/octet-stream")
    if media_type.split(";")[0].strip() == "application/json":
        given = decode(body, NewTextDocument)
        upload = Upload(name=given.name, media_type=given.media_type, data=given.text.encode())
    else:
        upload = Upload(name=unquote(name or "document")[:200], media_type=media_type, data=body)
    added = await state.knowledge.add_document(principal(request), knowledge_base_id, upload, key_id)
    return Response(added, status_code=200 if added.duplicate else 201)


@get(f"{BASES}/{{knowledge_base_id:str}}/documents")
async def list_documents(request: Request[Any, Any, Any], state: State, knowledge_base_id: FromPath[str]) -> DocumentList:
    return DocumentList(items=await state.knowledge.documents(principal(request), knowledge_base_id))


@get(f"{BASES}/{{knowledge_base_id:str}}/documents/{{document_id:str}}")
async def read_document(
    request: Request[Any, Any, Any], state: State, knowledge_base_id: FromPath[str], document_id: FromPath[str]
) -> Document:
    return await state.knowledge.document(principal(request), knowledge_base_id, document_id)  # type: ignore[no-any-return]


@get(f"{BASES}/{{knowledge_base_id:str}}/documents/{{document_id:str}}/text")
async def document_text(
    request: Request[Any, Any, Any], state: State, knowledge_base_id: FromPath[str], document_id: FromPath[str]
) -> DocumentText:
    return await state.knowledge.document_text(principal(request), knowledge_base_id, document_id)  # type: ignore[no-any-return]


@delete(f"{BASES}/{{knowledge_base_id:str}}/documents/{{document_id:str}}", status_code=204)
async def delete_document(
    request: Request[Any, Any, Any], state: State, knowledge_base_id: FromPath[str], document_id: FromPath[str]
) -> None:
    await state.knowledge.delete_document(principal(request), knowledge_base_id, document_id)


@post(f"{BASES}/{{knowledge_base_id:str}}/search", status_code=200)
async def search(
    request: Request[Any, Any, Any], state: State, knowledge_base_id: FromPath[str], key_id: FromQuery[str | None] = None
) -> PassageList:
    asked = decode(await request.body(), SearchRequest)
    return PassageList(passages=await state.knowledge.search(principal(request), knowledge_base_id, asked.query, asked.k, key_id))


@post(f"{PREFIX}/knowledge/ground", status_code=200)
async def ground(request: Request[Any, Any, Any], state: State, key_id: FromQuery[str | None] = None) -> Response[Any]:
    """Sources for one question of a stateless request (`null` when none is found)."""
    asked = decode(await request.body(), GroundRequest)
    who = principal(request)
    async with state.knowledge.db.read() as session:
        ids = await state.knowledge.owned_ids(session, who, asked.knowledge_base_ids)
    found = await state.knowledge.ground(who.owner, ids, asked.query, asked.max_tokens, key_id)
    return Response(msgspec.json.encode(found), media_type="application/json")


ROUTES = [
    create_base,
    list_bases,
    read_base,
    rename_base,
    delete_base,
    add_document,
    list_documents,
    read_document,
    document_text,
    delete_document,
    search,
    ground,
]
