"""Nearest passages by vector: sqlite-vec on SQLite, pgvector on PostgreSQL where it is installed, and otherwise
an exact dot product over the stored `real[]` in SQL. Every search is exact (no approximate index): a question is
compared with every passage of the knowledge bases it names."""

from __future__ import annotations

import asyncio
import queue
from array import array
from typing import Any, Protocol

from sqlalchemy import text
from sqlalchemy.engine import make_url

from ..db.engine import Database


class VectorIndex(Protocol):
    def stored(self, vector: bytes) -> Any:
        """The vector as the `embedding` column takes it."""

    async def nearest(self, knowledge_base_ids: list[str], vector: bytes, n: int) -> list[tuple[int, float]]:
        """The `n` passages nearest `vector` as `(chunk id, cosine similarity)`, nearest first."""


def _placeholders(count: int) -> str:
    return ", ".join("?" * count)


class SqliteVec:
    """Passages' vectors compared by sqlite-vec's `vec_distance_cosine`, in the extension's own connections.

    Python's own `sqlite3` often cannot load extensions (it is built without them on many systems), so these
    connections come from `sqlean.py`, a build of the same module that can; they only read, on worker
    threads, beside the service's aiosqlite engine (WAL lets readers and the writer go on together).
    """

    def __init__(self, database_url: str, connections: int = 2) -> None:
        path = make_url(database_url).database
        if not path:
            raise ValueError("knowledge bases need a SQLite database file, not an in-memory one")
        self._path = path
        self._idle: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._slots = asyncio.Semaphore(connections)

    def stored(self, vector: bytes) -> bytes:
        return vector

    def _connect(self) -> Any:
        import sqlean
        import sqlite_vec

        connection = sqlean.connect(self._path, check_same_thread=False)
        connection.enable_load_extension(True)
        sqlite_vec.load(connection)
        connection.enable_load_extension(False)
        connection.execute("PRAGMA query_only = ON")
        return connection

    def _nearest(self, knowledge_base_ids: list[str], vector: bytes, n: int) -> list[tuple[int, float]]:
        try:
            connection = self._idle.get_nowait()
        except queue.Empty:
            connection = self._connect()
        try:
            rows = connection.execute(
                f"SELECT id, vec_distance_cosine(embedding, ?) AS distance FROM kb_chunks "
                f"WHERE knowledge_base_id IN ({_placeholders(len(knowledge_base_ids))}) ORDER BY distance LIMIT ?",
                (vector, *knowledge_base_ids, n),
            ).fetchall()
        except BaseException:
            connection.close()
            raise
        self._idle.put(connection)
        return [(int(row[0]), 1.0 - float(row[1])) for row in rows]

    async def nearest(self, knowledge_base_ids: list[str], vector: bytes, n: int) -> list[tuple[int, float]]:
        async with self._slots:
            return await asyncio.to_thread(self._nearest, knowledge_base_ids, vector, n)


class PostgresVectors:
    """On PostgreSQL: pgvector's cosine distance when the extension is installed, else the dot product of the stored
    unit vectors in plain SQL (exact, and slower: no SIMD)."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._pgvector: bool | None = None

    def stored(self, vector: bytes) -> list[float]:
        values = array("f")
        values.frombytes(vector)
        return values.tolist()

    async def _has_pgvector(self) -> bool:
        if self._pgvector is None:
            async with self._db.read() as session:
                found = await session.execute(text("SELECT 1 FROM pg_extension WHERE extname = 'vector'"))
                self._pgvector = found.first() is not None
        return self._pgvector

    async def nearest(self, knowledge_base_ids: list[str], vector: bytes, n: int) -> list[tuple[int, float]]:
        if await self._has_pgvector():
            statement = """
                SELECT id, 1 - (embedding::vector <=> CAST(:q AS real[])::vector) AS similarity FROM kb_chunks
                 WHERE knowledge_base_id = ANY(:kbs) ORDER BY embedding::vector <=> CAST(:q AS real[])::vector LIMIT :n"""
        else:
            statement = """
                SELECT c.id, (SELECT sum(a * b) FROM unnest(c.embedding, CAST(:q AS real[])) AS t(a, b)) AS similarity
                  FROM kb_chunks c WHERE c.knowledge_base_id = ANY(:kbs) ORDER BY similarity DESC NULLS LAST LIMIT :n"""
        async with self._db.read() as session:
            rows = (await session.execute(text(statement), {"q": self.stored(vector), "kbs": knowledge_base_ids, "n": n})).all()
        return [(int(row[0]), float(row[1] or 0.0)) for row in rows]


def vector_index(db: Database) -> VectorIndex:
    return PostgresVectors(db) if db.dialect == "postgresql" else SqliteVec(db.url)
