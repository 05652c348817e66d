"""Nearest passages by vector: sqlite-vec on SQLite, pgvector on PostgreSQL where it is installed, and otherwise
an exact dot product over the stored `real[]` in SQL. Every search is exact (no approximate index): a question is
compared with every passage of the knowledge bases it names."""

from __future__ import annotations

import asyncio
import queue
import re
import threading
from array import array
from typing import Any, Protocol

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from ..db.engine import Database

PG_SEARCHES = 4
"""Vector searches one process runs at once on PostgreSQL: each holds a pooled connection while it scans, and the
conversation service's other requests need theirs."""
PG_SEARCH_TIMEOUT_MS = 10_000
"""The longest a vector search may take on PostgreSQL (a knowledge base far too big for the plain-SQL scan)."""
SYNC_BATCH = 5000
"""Pending passages brought into the vec0 tables per write transaction (a short hold of SQLite's write lock)."""
_VEC_TABLE = re.compile(r"kb_vec_(\d+)")


class SearchTooSlow(Exception):
    """A vector search went past its time (PostgreSQL without pgvector, over a very large knowledge base)."""


class VectorIndex(Protocol):
    def stored(self, vector: bytes) -> Any:
        """The vector as the `embedding` column takes it."""

    async def nearest(self, knowledge_base_ids: list[str], vector: bytes, n: int) -> list[tuple[int, float]]:
        """The `n` passages nearest `vector` as `(chunk id, cosine similarity)`, nearest first."""

    async def sync(self) -> None:
        """Bring the index up to date with the stored passages (after a batch is stored or passages are deleted)."""


class SqliteVec:
    """Passages' vectors in sqlite-vec `vec0` tables: one per vector size (`kb_vec_384`, …), partitioned by knowledge
    base, so a search scans that knowledge base's vectors only, packed together, not the wide `kb_chunks` rows.

    Python's own `sqlite3` often cannot load extensions (it is built without them on many systems), so the service's
    engine cannot write a `vec0` table. It writes `kb_chunks` only; triggers note each inserted or deleted passage in
    `kb_vec_pending` (migration 0004), and these connections, from `sqlean.py` (a build of the same module that can
    load extensions), carry the pending passages into the `vec0` tables (`sync`): after each stored batch, after a
    deletion, and before a search if anything is pending, so a search never misses a stored passage. They run on worker
    threads beside the aiosqlite engine (WAL lets readers go on while one of them writes).
    """

    def __init__(self, database_url: str, connections: int = 2) -> None:
        path = make_url(database_url).database
        if not path:
            raise ValueError("knowledge bases need a SQLite database file, not an in-memory one")
        self._path = path
        self._idle: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._slots = asyncio.Semaphore(connections)
        self._syncing = threading.Lock()
        self._tables: set[int] = set()

    def stored(self, vector: bytes) -> bytes:
        return vector

    def _connect(self) -> Any:
        import sqlean
        import sqlite_vec

        connection = sqlean.connect(self._path, check_same_thread=False, isolation_level=None, timeout=30)
        connection.enable_load_extension(True)
        sqlite_vec.load(connection)
        connection.enable_load_extension(False)
        return connection

    def _sizes(self, connection: Any) -> set[int]:
        """The vector sizes (dimensions) that have a `vec0` table."""
        names = connection.execute("SELECT name FROM sqlite_master WHERE name LIKE 'kb_vec_%'").fetchall()
        self._tables = {int(found[1]) for (name,) in names if (found := _VEC_TABLE.fullmatch(name))}
        return self._tables

    def _sync(self, connection: Any) -> None:
        if connection.execute("SELECT NOT EXISTS (SELECT 1 FROM kb_vec_pending)").fetchone()[0]:
            return
        with self._syncing:
            while True:
                connection.execute("BEGIN IMMEDIATE")
                try:
                    last = connection.execute(
                        "SELECT max(seq) FROM (SELECT seq FROM kb_vec_pending ORDER BY seq LIMIT ?)", (SYNC_BATCH,)
                    ).fetchone()[0]
                    if last is None:
                        connection.execute("COMMIT")
                        return
                    touched = "SELECT chunk_id FROM kb_vec_pending WHERE seq <= :last"
                    # A touched passage leaves every vec0 table, then comes back as it is now, if it still is:
                    # whatever the order of its inserts and deletes (and a rowid SQLite reused), the index ends as
                    # `kb_chunks` is.
                    for size in self._sizes(connection):
                        connection.execute(f"DELETE FROM kb_vec_{size} WHERE rowid IN ({touched})", {"last": last})
                    found = connection.execute(
                        f"SELECT DISTINCT length(embedding) FROM kb_chunks WHERE id IN ({touched})", {"last": last}
                    ).fetchall()
                    for (length,) in found:
                        if length % 4:
                            continue
                        size = length // 4
                        connection.execute(
                            f"CREATE VIRTUAL TABLE IF NOT EXISTS kb_vec_{size} USING vec0("
                            f"knowledge_base_id text partition key, embedding float[{size}] distance_metric=cosine)"
                        )
                        connection.execute(
                            f"INSERT INTO kb_vec_{size}(rowid, knowledge_base_id, embedding) "
                            f"SELECT id, knowledge_base_id, embedding FROM kb_chunks WHERE id IN ({touched}) AND length(embedding) = :length",
                            {"last": last, "length": length},
                        )
                    connection.execute("DELETE FROM kb_vec_pending WHERE seq <= ?", (last,))
                    connection.execute("COMMIT")
                except BaseException:
                    if connection.in_transaction:
                        connection.execute("ROLLBACK")
                    raise

    def _nearest(self, connection: Any, knowledge_base_ids: list[str], vector: bytes, n: int) -> list[tuple[int, float]]:
        self._sync(connection)
        size = len(vector) // 4
        if size not in self._tables and size not in self._sizes(connection):
            return []
        found: list[tuple[int, float]] = []
        for knowledge_base_id in knowledge_base_ids:
            found += connection.execute(
                f"SELECT rowid, distance FROM kb_vec_{size} WHERE embedding MATCH ? AND k = ? AND knowledge_base_id = ?",
                (vector, n, knowledge_base_id),
            ).fetchall()
        found.sort(key=lambda row: row[1])
        return [(int(chunk_id), 1.0 - float(distance)) for chunk_id, distance in found[:n]]

    def _with_connection(self, work: Any, *args: Any) -> Any:
        try:
            connection = self._idle.get_nowait()
        except queue.Empty:
            connection = self._connect()
        try:
            result = work(connection, *args)
        except BaseException:
            connection.close()
            raise
        self._idle.put(connection)
        return result

    async def nearest(self, knowledge_base_ids: list[str], vector: bytes, n: int) -> list[tuple[int, float]]:
        async with self._slots:
            return await asyncio.to_thread(self._with_connection, self._nearest, knowledge_base_ids, vector, n)

    async def sync(self) -> None:
        async with self._slots:
            await asyncio.to_thread(self._with_connection, self._sync)


class PostgresVectors:
    """On PostgreSQL, by what the database has: pgvector's cosine distance over `kb_vectors` (pgvector was created
    before migration 0005: stored `vector`s in a narrow table), or over each `kb_chunks` row's `real[]` converted
    (pgvector came later), else the dot product of the stored unit vectors in plain SQL (exact, and slower: no
    SIMD). Always of the question's vector size only."""

    PACKED = """
        WITH q AS (SELECT CAST(CAST(:q AS real[]) AS vector) AS v)
        SELECT chunk_id, 1 - (embedding <=> q.v) FROM kb_vectors, q
         WHERE knowledge_base_id = ANY(:kbs) AND vector_dims(embedding) = :dims
         ORDER BY embedding <=> q.v LIMIT :n"""
    CONVERTED = """
        WITH q AS (SELECT CAST(CAST(:q AS real[]) AS vector) AS v)
        SELECT id, 1 - (CAST(embedding AS vector) <=> q.v) FROM kb_chunks, q
         WHERE knowledge_base_id = ANY(:kbs) AND cardinality(embedding) = :dims
         ORDER BY CAST(embedding AS vector) <=> q.v LIMIT :n"""
    PLAIN = """
        SELECT c.id, (SELECT sum(a * b) FROM unnest(c.embedding, CAST(:q AS real[])) AS t(a, b)) AS similarity
          FROM kb_chunks c WHERE c.knowledge_base_id = ANY(:kbs) AND cardinality(c.embedding) = :dims
         ORDER BY similarity DESC NULLS LAST LIMIT :n"""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._statement: str | None = None
        self._slots = asyncio.Semaphore(PG_SEARCHES)

    def stored(self, vector: bytes) -> list[float]:
        values = array("f")
        values.frombytes(vector)
        return values.tolist()

    async def statement(self) -> str:
        """The search this database can do best (found once)."""
        if self._statement is None:
            async with self._db.read() as session:
                found = await session.execute(
                    text("SELECT to_regclass('kb_vectors') IS NOT NULL, EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'vector')")
                )
                packed, pgvector = found.one()
            self._statement = self.PACKED if packed else self.CONVERTED if pgvector else self.PLAIN
        return self._statement

    async def nearest(self, knowledge_base_ids: list[str], vector: bytes, n: int) -> list[tuple[int, float]]:
        statement = await self.statement()
        values = {"q": self.stored(vector), "kbs": knowledge_base_ids, "n": n, "dims": len(vector) // 4}
        async with self._slots, self._db.read() as session:
            await session.execute(text(f"SET LOCAL statement_timeout = {PG_SEARCH_TIMEOUT_MS}"))
            try:
                rows = (await session.execute(text(statement), values)).all()
            except DBAPIError as exc:
                if getattr(exc.orig, "sqlstate", None) == "57014":  # query_canceled: the statement timeout
                    raise SearchTooSlow(f"the vector search took more than {PG_SEARCH_TIMEOUT_MS / 1000:g} s") from exc
                raise
        return [(int(row[0]), float(row[1] or 0.0)) for row in rows]

    async def sync(self) -> None:
        """Nothing to do: the vectors are searched where they are stored (`kb_vectors` is kept by a trigger)."""


def vector_index(db: Database) -> VectorIndex:
    return PostgresVectors(db) if db.dialect == "postgresql" else SqliteVec(db.url)
