"""One document through the pipeline: extract its text (in a child process), cut it into passages, embed them in
batches through the platform's embedding path, store them; its state and progress go to its row and to the
knowledge base's progress stream. Taken over after a crash, it goes on where the stored passages end."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import structlog
from sqlalchemy import text, update
from sqlalchemy.exc import IntegrityError

from chatbot_contracts.knowledge import DocumentState, IngestJob, Progress

from ..attachments import BlobStore
from ..db.engine import Database
from ..db.schema import DocumentRow, KnowledgeBaseRow
from ..service import now
from ..settings import KnowledgeSettings
from .chunking import Chunk, split
from .embedder import Embedder, EmbeddingFailed
from .extract import ExtractionError, Limits, extract_in_child
from .service import ProgressLog, blob_folder
from .vectors import VectorIndex

log = structlog.get_logger()
EMBED_TRIES = 6
"""Tries of one batch whose embedding failed in a way that may pass (overloaded, rate-limited, …)."""

_INSERT = text(
    """INSERT INTO kb_chunks (knowledge_base_id, document_id, position, page, heading, start_at, end_at, content, embedding)
       VALUES (:kb, :document, :position, :page, :heading, :start, :end, :content, :embedding)
       ON CONFLICT (document_id, position) DO NOTHING"""
)


class Gone(Exception):
    """The document (or its knowledge base) was deleted while it was being indexed."""


class Ingestor:
    def __init__(
        self,
        db: Database,
        blobs: BlobStore,
        vectors: VectorIndex,
        embed: Embedder,
        progress: ProgressLog,
        settings: KnowledgeSettings,
        on_chunks: Callable[[int], Any] = lambda _: None,
    ) -> None:
        self.db = db
        self.blobs = blobs
        self.vectors = vectors
        self.embed = embed
        self.progress = progress
        self.settings = settings
        self.limits = Limits(
            max_pages=settings.kb_max_pages,
            max_chars=settings.kb_max_chars,
            time_s=settings.kb_extract_time_s,
            memory_bytes=settings.kb_extract_memory_mb * 2**20,
        )
        self.on_chunks = on_chunks

    async def run(self, job: IngestJob) -> DocumentState | None:
        """Index the job's document; its final state (None when it is gone or was done already)."""
        async with self.db.read() as session:
            row = await session.get(DocumentRow, job.document_id)
            base = await session.get(KnowledgeBaseRow, job.knowledge_base_id)
        if row is None or base is None or row.state in ("ready", "failed"):
            return None
        try:
            await self._set(row, "extracting")
            data = await self.blobs.get(blob_folder(row.knowledge_base_id), row.id)
            if data is None:
                raise ExtractionError("the uploaded file is gone from the attachment store")
            extracted = await extract_in_child(data, row.media_type, self.limits)
            chunks = split(extracted.text, extracted.marks, self.settings.kb_chunk_chars)
            stored = await self._stored_positions(row.id)
            await self._set(row, "embedding", done=len(stored), total=len(chunks), text_=extracted.text, pages=extracted.pages)
            missing = [chunk for chunk in chunks if chunk.position not in stored]
            done = len(stored)
            for first in range(0, len(missing), self.settings.kb_embed_batch):
                batch = missing[first : first + self.settings.kb_embed_batch]
                vectors = await self._vectors(base.embedding_model, batch, row)
                await self._keep(row, batch, vectors)
                await self.vectors.sync()
                done += len(batch)
                self.on_chunks(len(batch))
                await self._set(row, "embedding", done=done, total=len(chunks))
            await self._set(row, "ready", done=len(chunks), total=len(chunks))
            log.info("document.ready", document_id=row.id, chunks=len(chunks), pages=extracted.pages)
            return "ready"
        except (ExtractionError, EmbeddingFailed) as exc:
            await self._set(row, "failed", error=str(exc))
            log.warning("document.failed", document_id=row.id, error=str(exc))
            return "failed"
        except Gone:
            log.info("document.gone", document_id=row.id)
            return None

    async def _vectors(self, model: str, batch: list[Chunk], row: DocumentRow) -> list[bytes]:
        delay = 1.0
        for attempt in range(1, EMBED_TRIES + 1):
            try:
                return await self.embed(model, [chunk.embedded for chunk in batch], owner=row.owner, key_id=row.key_id)
            except EmbeddingFailed as exc:
                if not exc.retryable or attempt == EMBED_TRIES:
                    raise
                log.warning("document.embed_retry", document_id=row.id, error=str(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
        raise AssertionError("unreachable")

    async def _stored_positions(self, document_id: str) -> set[int]:
        async with self.db.read() as session:
            found = await session.execute(text("SELECT position FROM kb_chunks WHERE document_id = :d"), {"d": document_id})
        return {int(position) for (position,) in found.all()}

    async def _keep(self, row: DocumentRow, batch: list[Chunk], vectors: list[bytes]) -> None:
        """Store a batch's passages; a passage stored already (by a worker that was thought dead) is left as it is."""
        rows = [
            {
                "kb": row.knowledge_base_id,
                "document": row.id,
                "position": chunk.position,
                "page": chunk.page,
                "heading": chunk.heading,
                "start": chunk.start,
                "end": chunk.end,
                "content": chunk.content,
                "embedding": self.vectors.stored(vector),
            }
            for chunk, vector in zip(batch, vectors, strict=True)
        ]
        try:
            async with self.db.write() as session:
                if await session.get(DocumentRow, row.id) is None:
                    raise Gone
                await session.execute(_INSERT, rows)
        except IntegrityError as exc:
            raise Gone from exc

    async def _set(
        self,
        row: DocumentRow,
        state: DocumentState,
        *,
        done: int = 0,
        total: int = 0,
        error: str | None = None,
        text_: str | None = None,
        pages: int | None = None,
    ) -> None:
        values: dict[str, Any] = {"state": state, "done": done, "total": total, "error": error, "updated_at": now()}
        if text_ is not None:
            values |= {"text": text_, "pages": pages}
        async with self.db.write() as session:
            changed = await session.execute(update(DocumentRow).where(DocumentRow.id == row.id).values(**values))
        if not changed.rowcount:  # type: ignore[attr-defined]
            raise Gone
        await self.progress(
            row.knowledge_base_id, Progress(document_id=row.id, state=state, done=done, total=total, error=error, at=time.time())
        )
