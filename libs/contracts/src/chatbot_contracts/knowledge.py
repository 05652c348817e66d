"""Knowledge bases: a team's documents, searched by passage and cited by grounded answers."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]
DocumentState = Literal["queued", "extracting", "embedding", "ready", "failed"]
Ids = Annotated[list[Annotated[str, msgspec.Meta(min_length=1, max_length=64)]], msgspec.Meta(max_length=8)]
"""The knowledge bases a conversation or a request names: at most eight."""


class KnowledgeBase(msgspec.Struct, kw_only=True):
    id: str
    name: str
    embedding_model: str
    """The `embedding` model alias that embeds its passages and the questions asked of it."""
    documents: int
    chunks: int
    created_at: str
    updated_at: str


class KnowledgeBaseList(msgspec.Struct, kw_only=True):
    items: list[KnowledgeBase]


class NewKnowledgeBase(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: Name
    embedding_model: Annotated[str, msgspec.Meta(min_length=1, max_length=200)] | None = None
    """Default: the platform's (`CHATBOT_KB_EMBEDDING_MODEL`)."""


class KnowledgeBasePatch(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    name: Name


class NewTextDocument(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """A document given as text (`POST …/documents` with a JSON body); files are uploaded as their bytes instead."""

    name: Name
    text: Annotated[str, msgspec.Meta(min_length=1)]
    media_type: Literal["text/plain", "text/markdown", "text/html"] = "text/plain"


class Document(msgspec.Struct, kw_only=True):
    id: str
    knowledge_base_id: str
    name: str
    media_type: str
    size: int
    sha256: str
    state: DocumentState
    done: int = 0
    """Passages embedded so far (`embedding` n of m)."""
    total: int = 0
    pages: int | None = None
    chunks: int = 0
    error: str | None = None
    """Why it `failed`, said so that its uploader can act on it."""
    created_at: str
    updated_at: str


class DocumentList(msgspec.Struct, kw_only=True):
    items: list[Document]


class DocumentAdded(msgspec.Struct, kw_only=True):
    document: Document
    duplicate: bool
    """The same file was there already (and had not failed): nothing was queued."""
    """The same bytes were already in this knowledge base: nothing was queued again."""


class DocumentText(msgspec.Struct, kw_only=True):
    """A document's extracted text, which every passage's `start`/`end` index."""

    id: str
    name: str
    media_type: str
    text: str


class SearchRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    query: Annotated[str, msgspec.Meta(min_length=1, max_length=2000)]
    k: Annotated[int, msgspec.Meta(ge=1, le=50)] = 5


class Passage(msgspec.Struct, kw_only=True):
    """A chunk of a document that a search found."""

    chunk_id: int
    knowledge_base_id: str
    document_id: str
    document_name: str
    page: int | None
    """The page it starts on (PDF), counted from 1."""
    heading: str
    """The headings above it, outermost first, joined by ` › `."""
    start: int
    end: int
    """Its `[start, end)` in the document's text (`GET …/documents/{id}/text`)."""
    text: str
    score: float
    """Reciprocal rank fusion of its full-text and vector ranks: higher is better."""


class PassageList(msgspec.Struct, kw_only=True):
    passages: list[Passage]


class Source(msgspec.Struct, kw_only=True):
    """A numbered passage a grounded answer was given, cited by the model as `[number]`."""

    number: int
    knowledge_base_id: str
    document_id: str
    document_name: str
    page: int | None
    heading: str
    start: int
    end: int
    score: float
    text: str


class Grounding(msgspec.Struct, kw_only=True):
    """What retrieval gives a single request: the prompt to put before it and the sources it cites."""

    prompt: str
    sources: list[Source]


class GroundRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The gateway asks for sources for one question (a stateless request naming knowledge bases)."""

    knowledge_base_ids: Ids
    query: Annotated[str, msgspec.Meta(min_length=1)]
    max_tokens: Annotated[int, msgspec.Meta(ge=1)]


class IngestJob(msgspec.Struct, frozen=True, kw_only=True):
    """An entry of `kb.ingest`: a document to extract, chunk, embed and store."""

    document_id: str
    knowledge_base_id: str
    owner: str
    traceparent: str | None = None


class Progress(msgspec.Struct, frozen=True, kw_only=True):
    """An entry of a knowledge base's progress stream `kb.progress.{<id>}`: a document's state changed."""

    document_id: str
    state: DocumentState
    done: int = 0
    total: int = 0
    error: str | None = None
    at: float
