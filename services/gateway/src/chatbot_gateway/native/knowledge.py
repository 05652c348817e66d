"""`/api/v1/knowledge-bases`: a team's documents, their indexing progress, and search over their passages.

Everything but the progress stream is the conversation service's (signed calls as the caller); the gateway bounds
uploads at its edge and follows the progress stream `kb.progress.{id}` in Redis itself.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import msgspec
import redis.exceptions
from litestar import Request, Response, delete, get, patch, post
from litestar.datastructures import State
from litestar.params import FromPath, FromQuery, JSONBody
from litestar.response import Stream
from python_multipart import MultipartParser
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import parse_options_header

from chatbot_contracts import DATA_FIELD_BYTES
from chatbot_contracts.knowledge import (
    Document,
    DocumentAdded,
    DocumentList,
    DocumentText,
    KnowledgeBase,
    KnowledgeBaseList,
    KnowledgeBasePatch,
    NewKnowledgeBase,
    NewTextDocument,
    PassageList,
    SearchRequest,
)

from ..auth import Principal
from ..errors import BadRequest, GatewayError, Unavailable
from .routes import API, _body, _json
from .stream import SSE_HEADERS

BASES = f"{API}/knowledge-bases"
TAGS = ["knowledge bases"]
FOLLOWERS = 256
"""Progress streams one gateway follows at once (each holds a Redis connection in a blocking read)."""
FOLLOW_S = 600.0
"""A progress stream ends after this long; clients reconnect with `Last-Event-ID`."""
BLOCK_MS = 15_000
_followers = asyncio.Semaphore(FOLLOWERS)


class TooLarge(GatewayError):
    status_code = 413
    error_type = "invalid_request_error"
    code = "request_too_large"


@post(BASES, tags=TAGS, status_code=201)
async def create_knowledge_base(
    request: Request[Principal, Any, Any], state: State, data: JSONBody[NewKnowledgeBase]
) -> Response[KnowledgeBase]:
    """A knowledge base, embedded by `embedding_model` (default: the platform's)."""
    return _json(await state.conversations.call(request.user, "POST", "/knowledge-bases", body=msgspec.json.encode(data)))


@get(BASES, tags=TAGS)
async def list_knowledge_bases(request: Request[Principal, Any, Any], state: State) -> Response[KnowledgeBaseList]:
    return _json(await state.conversations.call(request.user, "GET", "/knowledge-bases"))


@get(f"{BASES}/{{knowledge_base_id:str}}", tags=TAGS)
async def read_knowledge_base(
    request: Request[Principal, Any, Any], state: State, knowledge_base_id: FromPath[str]
) -> Response[KnowledgeBase]:
    return _json(await state.conversations.call(request.user, "GET", f"/knowledge-bases/{knowledge_base_id}"))


@patch(f"{BASES}/{{knowledge_base_id:str}}", tags=TAGS)
async def rename_knowledge_base(
    request: Request[Principal, Any, Any], state: State, knowledge_base_id: FromPath[str]
) -> Response[KnowledgeBase]:
    body = _body(await request.body(), KnowledgeBasePatch)
    return _json(await state.conversations.call(request.user, "PATCH", f"/knowledge-bases/{knowledge_base_id}", body=body))


@delete(f"{BASES}/{{knowledge_base_id:str}}", tags=TAGS, status_code=204)
async def delete_knowledge_base(request: Request[Principal, Any, Any], state: State, knowledge_base_id: FromPath[str]) -> None:
    """The knowledge base, its documents and their passages; conversations that named it no longer do."""
    await state.conversations.call(request.user, "DELETE", f"/knowledge-bases/{knowledge_base_id}")


FORM_OVERHEAD = 16 * 1024
"""Bytes a form upload may have beyond the document's limit: its boundaries and parts' headers."""
FORM_PARTS = 8
FORM_HEADER_BYTES = 8 * 1024


class Upload(msgspec.Struct, frozen=True):
    data: bytes
    media_type: str
    name: str | None


@dataclass
class _Part:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    data: bytearray = field(default_factory=bytearray)
    header_bytes: int = 0


def form_upload(body: bytes, content_type: str, limit: int) -> Upload:
    """The `file` part of a `multipart/form-data` body (python-multipart parses it), with its type and file name;
    a 400 saying what is wrong with the form, a 413 for a file over `limit`."""
    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise BadRequest("a multipart/form-data upload needs a `boundary` in its Content-Type")
    parts: list[_Part] = []
    header = bytearray()

    def begin() -> None:
        if len(parts) == FORM_PARTS:
            raise BadRequest(f"the form has more than {FORM_PARTS} parts; send the document as its `file` part")
        parts.append(_Part())

    def header_field(data: bytes, start: int, end: int) -> None:
        header.extend(data[start:end])

    def header_value(data: bytes, start: int, end: int) -> None:
        part = parts[-1]
        part.header_bytes += end - start + len(header)
        if part.header_bytes > FORM_HEADER_BYTES:
            raise BadRequest(f"a part of the form has more than {FORM_HEADER_BYTES} bytes of headers")
        key = bytes(header).lower()
        part.headers[key] = part.headers.get(key, b"") + data[start:end]

    def part_data(data: bytes, start: int, end: int) -> None:
        parts[-1].data.extend(data[start:end])

    ended: list[bool] = []
    callbacks = {
        "on_end": lambda: ended.append(True),
        "on_part_begin": begin,
        "on_header_field": header_field,
        "on_header_value": header_value,
        "on_header_end": header.clear,
        "on_part_data": part_data,
    }
    try:
        parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
        parser.write(body)
        parser.finalize()
    except MultipartParseError as exc:
        raise BadRequest(f"the multipart/form-data body cannot be read: {exc}") from exc
    if not ended:
        raise BadRequest("the multipart/form-data body ends before its closing boundary (a cut upload?)")
    for part in parts:
        _, disposition = parse_options_header(part.headers.get(b"content-disposition", b""))
        if disposition.get(b"name") != b"file":
            continue
        if len(part.data) > limit:
            raise TooLarge(f"the document has {len(part.data)} bytes; at most {limit} are allowed")
        media_type = part.headers.get(b"content-type", b"application/octet-stream").decode("latin-1")
        filename = disposition.get(b"filename", b"").decode("utf-8", "replace").replace("\\", "/").rsplit("/", 1)[-1]
        return Upload(bytes(part.data), media_type, filename or None)
    raise BadRequest("the form has no `file` part: send the document as `file` (curl -F file=@handbook.pdf)")


async def _bounded(request: Request[Principal, Any, Any], limit: int) -> bytes:
    """The body, read as it comes; past `limit` bytes a 413 at once (nothing more is read)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise TooLarge(f"the document has {declared} bytes; at most {limit} are allowed")
    parts: list[bytes] = []
    size = 0
    async for part in request.stream():
        size += len(part)
        if size > limit:
            raise TooLarge(f"the document has more than {limit} bytes; at most {limit} are allowed")
        parts.append(part)
    return b"".join(parts)


@post(f"{BASES}/{{knowledge_base_id:str}}/documents", tags=TAGS, status_code=201, request_max_body_size=None)
async def add_document(
    request: Request[Principal, Any, Any], state: State, knowledge_base_id: FromPath[str], name: FromQuery[str | None] = None
) -> Response[DocumentAdded]:
    """Add a document: the file's bytes as the body (its type in `Content-Type`, its name in `?name=`), a form
    (`multipart/form-data` with a `file` part, as `curl -F file=@handbook.pdf` sends it), or `{"name", "text"}` as
    JSON. Indexing goes on in the background (follow `…/events`); the same file added again answers 200 with
    `duplicate: true` and queues nothing, unless that document failed: then it is queued again (201)."""
    content_type = request.headers.get("content-type", "application/octet-stream")
    limit = state.settings.server.kb_max_document_bytes
    media_type = content_type.split(";")[0].strip().lower()
    if media_type == "multipart/form-data":
        upload = form_upload(await _bounded(request, limit + FORM_OVERHEAD), content_type, limit)
        body, content_type, name = upload.data, upload.media_type, name or upload.name
    else:
        body = await _bounded(request, limit)
    if media_type == "application/json":
        body = _body(body, NewTextDocument)
    params = {"name": quote(name or "document", safe="")[:600], "key_id": request.user.key_id}
    added = await state.conversations.call(
        request.user, "POST", f"/knowledge-bases/{knowledge_base_id}/documents", body=body, params=params, content_type=content_type
    )
    return _json(added)


@get(f"{BASES}/{{knowledge_base_id:str}}/documents", tags=TAGS)
async def list_documents(request: Request[Principal, Any, Any], state: State, knowledge_base_id: FromPath[str]) -> Response[DocumentList]:
    """Its documents with their indexing state (`queued`, `extracting`, `embedding` n of m, `ready`, `failed`)."""
    return _json(await state.conversations.call(request.user, "GET", f"/knowledge-bases/{knowledge_base_id}/documents"))


@get(f"{BASES}/{{knowledge_base_id:str}}/documents/{{document_id:str}}", tags=TAGS)
async def read_document(
    request: Request[Principal, Any, Any], state: State, knowledge_base_id: FromPath[str], document_id: FromPath[str]
) -> Response[Document]:
    return _json(await state.conversations.call(request.user, "GET", f"/knowledge-bases/{knowledge_base_id}/documents/{document_id}"))


@get(f"{BASES}/{{knowledge_base_id:str}}/documents/{{document_id:str}}/text", tags=TAGS)
async def read_document_text(
    request: Request[Principal, Any, Any], state: State, knowledge_base_id: FromPath[str], document_id: FromPath[str]
) -> Response[DocumentText]:
    """The document's extracted text, which passages' and sources' `start`/`end` index."""
    path = f"/knowledge-bases/{knowledge_base_id}/documents/{document_id}/text"
    return _json(await state.conversations.call(request.user, "GET", path))


@delete(f"{BASES}/{{knowledge_base_id:str}}/documents/{{document_id:str}}", tags=TAGS, status_code=204)
async def delete_document(
    request: Request[Principal, Any, Any], state: State, knowledge_base_id: FromPath[str], document_id: FromPath[str]
) -> None:
    """The document and its passages (search never finds them again)."""
    await state.conversations.call(request.user, "DELETE", f"/knowledge-bases/{knowledge_base_id}/documents/{document_id}")


@post(f"{BASES}/{{knowledge_base_id:str}}/search", tags=TAGS, status_code=200)
async def search_knowledge_base(
    request: Request[Principal, Any, Any], state: State, knowledge_base_id: FromPath[str], data: JSONBody[SearchRequest]
) -> Response[PassageList]:
    """The `k` passages that best answer `query` (full text and vectors, fused), with their document, page, headings,
    character range and score. The question is embedded as your key (its usage and cost)."""
    path = f"/knowledge-bases/{knowledge_base_id}/search"
    params = {"key_id": request.user.key_id}
    return _json(await state.conversations.call(request.user, "POST", path, body=msgspec.json.encode(data), params=params))


@get(f"{BASES}/{{knowledge_base_id:str}}/events", tags=TAGS)
async def follow_progress(
    request: Request[Principal, Any, Any], state: State, knowledge_base_id: FromPath[str], last_event_id: FromQuery[str | None] = None
) -> Stream:
    """Server-sent `progress` events as its documents are indexed (`document_id`, `state`, `done`, `total`, `error`);
    every event's `id` resumes after it (`Last-Event-ID`)."""
    await state.conversations.call(request.user, "GET", f"/knowledge-bases/{knowledge_base_id}")
    after = request.headers.get("last-event-id") or last_event_id or "0-0"
    if _followers.locked():
        raise Unavailable("too many progress streams are open on this gateway; try again shortly", headers={"Retry-After": "5"})
    stream = state.redis_keys.kb_progress(knowledge_base_id)
    return Stream(_progress(state, stream, after), media_type="text/event-stream", headers=SSE_HEADERS)


async def _progress(state: State, stream: str, after: str) -> AsyncIterator[bytes]:
    async with _followers:
        until = time.monotonic() + FOLLOW_S
        yield b"retry: 3000\n\n"
        while time.monotonic() < until:
            try:
                replies = await state.redis.xread({stream: after}, count=100, block=BLOCK_MS)
            except (redis.exceptions.RedisError, OSError):
                yield b'event: error\ndata: {"message": "progress is unavailable for now"}\n\n'
                return
            if not replies:
                yield b": keepalive\n\n"
                continue
            frames = []
            for _, entries in replies:
                for entry_id, fields in entries:
                    after = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
                    frames.append(b"id: " + after.encode() + b"\nevent: progress\ndata: " + fields[DATA_FIELD_BYTES] + b"\n\n")
            yield b"".join(frames)


ROUTES = [
    create_knowledge_base,
    list_knowledge_bases,
    read_knowledge_base,
    rename_knowledge_base,
    delete_knowledge_base,
    add_document,
    list_documents,
    read_document,
    read_document_text,
    delete_document,
    search_knowledge_base,
    follow_progress,
]
