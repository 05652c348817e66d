"""Knowledge bases and their documents, per owner: adding a document queues its ingestion; search and grounding
read the passages. Another owner's knowledge base is a 404, as everywhere."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import redis.asyncio as aioredis
import structlog
from sqlalchemy import bindparam, delete, func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from chatbot_contracts import DATA_FIELD, Keys, Registry, encode
from chatbot_contracts.knowledge import (
    Document,
    DocumentAdded,
    DocumentState,
    DocumentText,
    Grounding,
    IngestJob,
    KnowledgeBase,
    NewKnowledgeBase,
    Passage,
    Progress,
)

from ..attachments import BlobStore
from ..db.engine import Database
from ..db.schema import ConversationKnowledgeRow, DocumentRow, KnowledgeBaseRow
from ..errors import Invalid, NotFound, TooLarge, Unavailable
from ..service import Principal, iso, new_id, now
from ..settings import KnowledgeSettings
from . import grounding, retrieval
from .embedder import Embedder, EmbeddingFailed
from .extract import MEDIA_TYPES, media_type_of
from .vectors import SearchTooSlow, VectorIndex

log = structlog.get_logger()
CANDIDATES = 50
"""Passages each ranking (full text, vector) gives the fusion."""
PROGRESS_MAXLEN = 1_000
PROGRESS_TTL_S = 7 * 86_400


def blob_folder(knowledge_base_id: str) -> str:
    """The attachment store's folder of a knowledge base's uploaded files."""
    return f"kb{knowledge_base_id}"


@dataclass(frozen=True, slots=True)
class Upload:
    name: str
    media_type: str
    data: bytes


def document_of(row: DocumentRow, chunks: int = 0) -> Document:
    return Document(
        id=row.id,
        knowledge_base_id=row.knowledge_base_id,
        name=row.name,
        media_type=row.media_type,
        size=row.size,
        sha256=row.sha256,
        state=cast(DocumentState, row.state),
        done=row.done,
        total=row.total,
        pages=row.pages,
        chunks=chunks,
        error=row.error,
        created_at=iso(row.created_at),
        updated_at=iso(row.updated_at),
    )


class ProgressLog:
    """A knowledge base's progress stream `kb.progress.{id}`, which clients follow while documents are indexed."""

    def __init__(self, redis: aioredis.Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys

    async def __call__(self, knowledge_base_id: str, progress: Progress) -> None:
        stream = self._keys.kb_progress(knowledge_base_id)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.xadd(stream, {DATA_FIELD: encode(progress)}, maxlen=PROGRESS_MAXLEN, approximate=True)
            pipe.expire(stream, PROGRESS_TTL_S)
            await pipe.execute()


class KnowledgeService:
    def __init__(
        self,
        db: Database,
        registry: Registry,
        blobs: BlobStore,
        redis: aioredis.Redis,
        keys: Keys,
        vectors: VectorIndex,
        settings: KnowledgeSettings,
        timed: Callable[[float], object] = lambda _: None,
    ) -> None:
        self.db = db
        self.registry = registry
        self.blobs = blobs
        self.redis = redis
        self.keys = keys
        self.vectors = vectors
        self.settings = settings
        self.timed = timed
        """Takes each retrieval's seconds (embedding the question, both rankings, the passages)."""
        self.embed = Embedder(redis, keys)
        self.progress = ProgressLog(redis, keys)
        embedding = [alias for alias, spec in registry.models.items() if spec.mode == "embedding"]
        self.default_model = settings.kb_embedding_model or (embedding[0] if embedding else None)
        if settings.kb_embedding_model and registry.get(settings.kb_embedding_model) is None:
            raise ValueError(f"CHATBOT_KB_EMBEDDING_MODEL `{settings.kb_embedding_model}` is not in the model registry")

    # --- knowledge bases -------------------------------------------------------------------------

    async def create(self, who: Principal, new: NewKnowledgeBase) -> KnowledgeBase:
        model = new.embedding_model or self.default_model
        if model is None:
            raise Invalid("the model registry has no `embedding` model; knowledge bases need one")
        spec = self.registry.get(model)
        if spec is None or spec.mode != "embedding":
            raise Invalid(f"`{model}` is not an embedding model of the registry (at $.embedding_model)")
        moment = now()
        row = KnowledgeBaseRow(id=new_id(), owner=who.owner, name=new.name, embedding_model=model, created_at=moment, updated_at=moment)
        async with self.db.write() as session:
            owned = await session.scalar(select(func.count()).select_from(KnowledgeBaseRow).where(KnowledgeBaseRow.owner == who.owner))
            if (owned or 0) >= self.settings.kb_max_knowledge_bases:
                raise Invalid(f"an owner may have {self.settings.kb_max_knowledge_bases} knowledge bases; delete one first")
            session.add(row)
        return self._described(row, 0, 0)

    async def list_bases(self, who: Principal) -> list[KnowledgeBase]:
        async with self.db.read() as session:
            rows = (
                await session.scalars(
                    select(KnowledgeBaseRow).where(KnowledgeBaseRow.owner == who.owner).order_by(KnowledgeBaseRow.created_at)
                )
            ).all()
            counts = await self._counts(session, [row.id for row in rows])
        return [self._described(row, *counts.get(row.id, (0, 0))) for row in rows]

    async def get(self, who: Principal, knowledge_base_id: str) -> KnowledgeBase:
        async with self.db.read() as session:
            row = await self._owned(session, who, knowledge_base_id)
            counts = await self._counts(session, [row.id])
        return self._described(row, *counts.get(row.id, (0, 0)))

    async def rename(self, who: Principal, knowledge_base_id: str, name: str) -> KnowledgeBase:
        async with self.db.write() as session:
            row = await self._owned(session, who, knowledge_base_id)
            row.name, row.updated_at = name, now()
        return await self.get(who, knowledge_base_id)

    async def delete(self, who: Principal, knowledge_base_id: str) -> None:
        async with self.db.write() as session:
            await self._owned(session, who, knowledge_base_id)
            await session.execute(text("DELETE FROM kb_chunks WHERE knowledge_base_id = :kb"), {"kb": knowledge_base_id})
            await session.execute(delete(DocumentRow).where(DocumentRow.knowledge_base_id == knowledge_base_id))
            await session.execute(delete(ConversationKnowledgeRow).where(ConversationKnowledgeRow.knowledge_base_id == knowledge_base_id))
            await session.execute(delete(KnowledgeBaseRow).where(KnowledgeBaseRow.id == knowledge_base_id))
        await self.vectors.sync()
        await self.blobs.drop(blob_folder(knowledge_base_id))
        await self.redis.delete(self.keys.kb_progress(knowledge_base_id))

    async def owned_ids(self, session: AsyncSession, who: Principal, ids: list[str]) -> list[str]:
        """`ids`, checked to be knowledge bases of `who` (422 naming the first that is not), without repeats."""
        unique: list[str] = list(dict.fromkeys(ids))
        if not unique:
            return []
        found = set(
            (
                await session.scalars(
                    select(KnowledgeBaseRow.id).where(KnowledgeBaseRow.id.in_(unique), KnowledgeBaseRow.owner == who.owner)
                )
            ).all()
        )
        for index, knowledge_base_id in enumerate(unique):
            if knowledge_base_id not in found:
                raise Invalid(f"no knowledge base {knowledge_base_id} (at $.knowledge_base_ids[{index}])")
        return unique

    # --- documents -------------------------------------------------------------------------------

    async def add_document(self, who: Principal, knowledge_base_id: str, upload: Upload, key_id: str | None) -> DocumentAdded:
        """Keep the file and queue its ingestion. The same bytes added again to the same knowledge base are the document
        already there, unless it failed: then it is queued again."""
        if len(upload.data) > self.settings.kb_max_document_bytes:
            raise TooLarge(f"the document has {len(upload.data)} bytes; at most {self.settings.kb_max_document_bytes} are allowed")
        if not upload.data:
            raise Invalid("the document is empty")
        media_type = media_type_of(upload.media_type, upload.name)
        if media_type is None:
            kinds = ", ".join(sorted(MEDIA_TYPES))
            raise Invalid(f"`{upload.media_type}` ({upload.name}) cannot be indexed; send one of {kinds}, or a file name ending so")
        digest = hashlib.sha256(upload.data).hexdigest()
        moment = now()
        row = DocumentRow(
            id=new_id(),
            knowledge_base_id=knowledge_base_id,
            owner=who.owner,
            key_id=key_id,
            name=upload.name,
            media_type=media_type,
            size=len(upload.data),
            sha256=digest,
            state="queued",
            done=0,
            total=0,
            created_at=moment,
            updated_at=moment,
        )
        folder = blob_folder(knowledge_base_id)
        try:
            async with self.db.write() as session:
                await self._owned(session, who, knowledge_base_id)
                existing = await self._same(session, knowledge_base_id, digest)
                if existing is not None and existing.state != "failed":
                    return DocumentAdded(document=document_of(existing), duplicate=True)
                if existing is None:
                    count = await session.scalar(
                        select(func.count()).select_from(DocumentRow).where(DocumentRow.knowledge_base_id == knowledge_base_id)
                    )
                    if (count or 0) >= self.settings.kb_max_documents:
                        raise Invalid(f"a knowledge base may hold {self.settings.kb_max_documents} documents; delete one first")
                    session.add(row)
                else:
                    # The same file again after it failed: indexed again (its cause may have passed, a provider that
                    # was down), going on after the passages it stored; the key that retries pays for the rest.
                    existing.state, existing.error, existing.key_id, existing.updated_at = "queued", None, key_id, moment
                    row = existing
                await self.blobs.put(folder, row.id, upload.data)
        except IntegrityError:
            # The same bytes, added at the same moment by another request: theirs is the one queued.
            await self.blobs.remove(folder, row.id)
            async with self.db.read() as session:
                existing = await self._same(session, knowledge_base_id, digest)
            if existing is None:
                raise
            return DocumentAdded(document=document_of(existing), duplicate=True)
        job = IngestJob(document_id=row.id, knowledge_base_id=knowledge_base_id, owner=who.owner)
        await self.redis.xadd(self.keys.ingest, {DATA_FIELD: encode(job)})
        await self.progress(knowledge_base_id, Progress(document_id=row.id, state="queued", at=time.time()))
        log.info("document.queued", document_id=row.id, knowledge_base_id=knowledge_base_id, bytes=row.size, media_type=media_type)
        return DocumentAdded(document=document_of(row), duplicate=False)

    @staticmethod
    async def _same(session: AsyncSession, knowledge_base_id: str, digest: str) -> DocumentRow | None:
        statement = select(DocumentRow).where(DocumentRow.knowledge_base_id == knowledge_base_id, DocumentRow.sha256 == digest)
        return (await session.scalars(statement)).first()

    async def documents(self, who: Principal, knowledge_base_id: str) -> list[Document]:
        async with self.db.read() as session:
            await self._owned(session, who, knowledge_base_id)
            rows = (
                await session.scalars(
                    select(DocumentRow).where(DocumentRow.knowledge_base_id == knowledge_base_id).order_by(DocumentRow.created_at)
                )
            ).all()
            chunks: dict[str, int] = dict(
                (
                    await session.execute(
                        text("SELECT document_id, count(*) FROM kb_chunks WHERE knowledge_base_id = :kb GROUP BY document_id"),
                        {"kb": knowledge_base_id},
                    )
                ).all()
            )
        return [document_of(row, chunks.get(row.id, 0)) for row in rows]

    async def document(self, who: Principal, knowledge_base_id: str, document_id: str) -> Document:
        return next((d for d in await self.documents(who, knowledge_base_id) if d.id == document_id), None) or self._no_document(
            document_id
        )

    @staticmethod
    def _no_document(document_id: str) -> Any:
        raise NotFound(f"no document {document_id} in this knowledge base")

    async def document_text(self, who: Principal, knowledge_base_id: str, document_id: str) -> DocumentText:
        async with self.db.read() as session:
            await self._owned(session, who, knowledge_base_id)
            row = await session.get(DocumentRow, document_id)
        if row is None or row.knowledge_base_id != knowledge_base_id:
            self._no_document(document_id)
        assert row is not None
        if row.text is None:
            raise NotFound(f"the document {document_id} has no text yet (it is {row.state})")
        return DocumentText(id=row.id, name=row.name, media_type=row.media_type, text=row.text)

    async def delete_document(self, who: Principal, knowledge_base_id: str, document_id: str) -> None:
        async with self.db.write() as session:
            await self._owned(session, who, knowledge_base_id)
            row = await session.get(DocumentRow, document_id)
            if row is None or row.knowledge_base_id != knowledge_base_id:
                self._no_document(document_id)
            await session.execute(text("DELETE FROM kb_chunks WHERE document_id = :d"), {"d": document_id})
            await session.execute(delete(DocumentRow).where(DocumentRow.id == document_id))
        await self.vectors.sync()
        await self.blobs.remove(blob_folder(knowledge_base_id), document_id)

    # --- retrieval -------------------------------------------------------------------------------

    async def search(self, who: Principal, knowledge_base_id: str, query: str, k: int, key_id: str | None) -> list[Passage]:
        async with self.db.read() as session:
            await self._owned(session, who, knowledge_base_id)
        return await self.retrieve(who.owner, [knowledge_base_id], query, k, key_id)

    async def retrieve(self, owner: str, knowledge_base_ids: list[str], query: str, k: int, key_id: str | None) -> list[Passage]:
        """The `k` passages of these knowledge bases (all `owner`'s) that best answer `query`: full text and vectors, fused."""
        started = time.monotonic()
        async with self.db.read() as session:
            rows = (
                await session.scalars(
                    select(KnowledgeBaseRow).where(KnowledgeBaseRow.id.in_(knowledge_base_ids), KnowledgeBaseRow.owner == owner)
                )
            ).all()
            ids = [row.id for row in rows]
            if not ids:
                return []
            by_text = await retrieval.full_text(session, self.db.dialect, ids, query, CANDIDATES)
        by_vector: list[int] = []
        models: dict[str, list[str]] = {}
        for row in rows:
            models.setdefault(row.embedding_model, []).append(row.id)
        for model, group in models.items():
            try:
                (vector,) = await self.embed(model, [query[:8000]], owner=owner, key_id=key_id)
            except EmbeddingFailed as exc:
                raise Unavailable(f"the knowledge bases cannot be searched now: {exc}") from exc
            try:
                by_vector.extend(chunk_id for chunk_id, _ in await self.vectors.nearest(group, vector, CANDIDATES))
            except SearchTooSlow as exc:
                raise Unavailable(f"the knowledge bases cannot be searched now: {exc} (pgvector would make it fast)") from exc
        best = retrieval.fused(by_text, by_vector)[:k]
        passages = await self._passages(best, ids)
        self.timed(time.monotonic() - started)
        return passages

    async def _passages(self, best: list[tuple[int, float]], knowledge_base_ids: list[str]) -> list[Passage]:
        """The passages ranked `best`, of these knowledge bases only (the searched ones, checked again here)."""
        if not best:
            return []
        statement = text(
            """SELECT c.id, c.knowledge_base_id, c.document_id, d.name, c.page, c.heading, c.start_at, c.end_at, c.content
                 FROM kb_chunks c JOIN kb_documents d ON d.id = c.document_id WHERE c.id IN :ids AND c.knowledge_base_id IN :kbs"""
        ).bindparams(bindparam("ids", expanding=True), bindparam("kbs", expanding=True))
        chosen = {"ids": [chunk_id for chunk_id, _ in best], "kbs": knowledge_base_ids}
        async with self.db.read() as session:
            rows = {row[0]: row for row in (await session.execute(statement, chosen)).all()}
        return [
            Passage(
                chunk_id=chunk_id,
                knowledge_base_id=row[1],
                document_id=row[2],
                document_name=row[3],
                page=row[4],
                heading=row[5],
                start=row[6],
                end=row[7],
                text=row[8],
                score=round(score, 6),
            )
            for chunk_id, score in best
            if (row := rows.get(chunk_id)) is not None
        ]

    async def ground(self, owner: str, knowledge_base_ids: list[str], query: str, max_tokens: int, key_id: str | None) -> Grounding | None:
        """Numbered sources for a question, within `max_tokens` (and `CHATBOT_KB_CONTEXT_TOKENS`); None when none is found."""
        passages = await self.retrieve(owner, knowledge_base_ids, query, self.settings.kb_context_passages, key_id)
        sources = grounding.sources_within(passages, min(max_tokens, self.settings.kb_context_tokens))
        if not sources:
            return None
        return Grounding(prompt=grounding.prompt(sources), sources=sources)

    # --- helpers ---------------------------------------------------------------------------------

    async def _owned(self, session: AsyncSession, who: Principal, knowledge_base_id: str) -> KnowledgeBaseRow:
        row = await session.get(KnowledgeBaseRow, knowledge_base_id)
        if row is None or (row.owner != who.owner and not who.is_admin):
            raise NotFound(f"no knowledge base {knowledge_base_id}")
        return row

    @staticmethod
    async def _counts(session: AsyncSession, ids: list[str]) -> dict[str, tuple[int, int]]:
        if not ids:
            return {}
        documents = dict(
            (
                await session.execute(
                    select(DocumentRow.knowledge_base_id, func.count())
                    .where(DocumentRow.knowledge_base_id.in_(ids))
                    .group_by(DocumentRow.knowledge_base_id)
                )
            ).all()
        )
        chunks: dict[str, int] = dict(
            (
                await session.execute(
                    text(
                        "SELECT knowledge_base_id, count(*) FROM kb_chunks WHERE knowledge_base_id IN :ids GROUP BY knowledge_base_id"
                    ).bindparams(bindparam("ids", expanding=True)),
                    {"ids": ids},
                )
            ).all()
        )
        return {i: (documents.get(i, 0), chunks.get(i, 0)) for i in ids}

    @staticmethod
    def _described(row: KnowledgeBaseRow, documents: int, chunks: int) -> KnowledgeBase:
        return KnowledgeBase(
            id=row.id,
            name=row.name,
            embedding_model=row.embedding_model,
            documents=documents,
            chunks=chunks,
            created_at=iso(row.created_at),
            updated_at=iso(row.updated_at),
        )
