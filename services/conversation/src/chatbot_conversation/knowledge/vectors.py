"""Nearest passages by vector: sqlite-vec on SQLite, pgvector on PostgreSQL where it is installed, and otherwise
an exact dot product over the stored `real[]` in SQL. Every search is exact (no approximate index): a question is
compared with every passage of the knowledge bases it names."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import re
import signal
import threading
from array import array
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, Protocol

import sqlean
import sqlite_vec
import structlog
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from ..db.engine import Database

PG_SEARCHES = 4
"""Vector searches one process runs at once on PostgreSQL: each holds a pooled connection while it scans, and the
conversation service's other requests need theirs."""
PG_SEARCH_TIMEOUT_MS = 10_000
"""The longest a vector search may take on PostgreSQL (a knowledge base far too big for the plain-SQL scan)."""
SYNC_WAIT_MS = 5_000
"""How long bringing the SQLite index up to date after a write waits for SQLite's write lock (then it is left to the
next search or write)."""
SEARCH_SYNC_WAIT_MS = 2_000
"""How long a search waits for the write lock to bring the index up to date first; past it, the search goes on over
the index as it is (a passage stored that moment is found by its words only; one deleted is dropped when read back)."""
SYNC_BATCH = 5000
"""Pending passages brought into the vec0 tables per write transaction (a short hold of SQLite's write lock)."""
log = structlog.get_logger()
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
    `kb_vec_pending` (migration 0004), and connections from `sqlean.py` (a build of SQLite that can load extensions)
    carry the pending passages into the `vec0` tables (`sync`): after each stored batch, after a deletion, and before
    a search if anything is pending, so a search never misses a stored passage.

    Those connections live in child processes, never beside the engine's: two copies of SQLite in one process do not
    see each other's file locks (POSIX locks are per process), so a write through one could go on under the other's
    and be lost, and closing one copy's file releases the other's locks (sqlite.org/howtocorrupt.html, 2.2). Across
    processes the locks hold, as between the service and the ingestion worker.
    """

    def __init__(self, database_url: str) -> None:
        path = make_url(database_url).database
        if not path:
            raise ValueError("knowledge bases need a SQLite database file, not an in-memory one")
        self._path = str(Path(path).resolve())

    def stored(self, vector: bytes) -> bytes:
        return vector

    async def nearest(self, knowledge_base_ids: list[str], vector: bytes, n: int) -> list[tuple[int, float]]:
        found: list[tuple[int, float]] = await self._in_child(_nearest, self._path, knowledge_base_ids, vector, n)
        return found

    async def sync(self) -> None:
        await self._in_child(_sync, self._path)

    async def _in_child(self, work: Callable[..., Any], *args: Any) -> Any:
        """`work(*args)` in the child; a child that died is replaced once."""
        global _pool
        for attempt in (1, 2):
            if _pool is None:
                _pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"), initializer=_watch_parent)
            pool = _pool
            try:
                return await asyncio.get_running_loop().run_in_executor(pool, work, *args)
            except BrokenProcessPool:
                log.warning("knowledge.vectors_child_died", attempt=attempt)
                if _pool is pool:
                    _pool = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")


_pool: ProcessPoolExecutor | None = None
"""The child process that holds this process's sqlite-vec connections (started on first use, shared). One: it costs
about as much memory as the service (a spawned Python imports the service's modules again)."""
_connections: dict[str, Any] = {}
"""In the child: its connection to each database file."""


def _watch_parent() -> None:
    """In the child: exit when the process it serves does, killed included, rather than live on as an orphan."""
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_after, args=(parent,), daemon=True).start()


def _exit_after(parent: Any) -> None:
    parent.join()
    os.kill(os.getpid(), signal.SIGTERM)


def _connection(path: str) -> Any:
    connection = _connections.get(path)
    if connection is None:
        connection = sqlean.connect(path, isolation_level=None, timeout=SYNC_WAIT_MS / 1000)
        connection.enable_load_extension(True)
        sqlite_vec.load(connection)
        connection.enable_load_extension(False)
        _connections[path] = connection
    return connection


def _sizes(connection: Any) -> set[int]:
    """The vector sizes (dimensions) that have a `vec0` table."""
    names = connection.execute("SELECT name FROM sqlite_master WHERE name LIKE 'kb_vec_%'").fetchall()
    return {int(found[1]) for (name,) in names if (found := _VEC_TABLE.fullmatch(name))}


def _pending(connection: Any) -> bool:
    return bool(connection.execute("SELECT EXISTS (SELECT 1 FROM kb_vec_pending)").fetchone()[0])


def _sync(path: str) -> None:
    connection = _connection(path)
    if _pending(connection):
        try:
            _catch_up(connection)
        except sqlean.OperationalError as exc:  # SQLite's write lock held past SYNC_WAIT_MS: the next search catches up
            log.warning("knowledge.vectors_behind", reason=str(exc))


def _catch_up(connection: Any) -> None:
    """Carry the pending passages into the vec0 tables, a batch a transaction."""
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
            # A touched passage leaves every vec0 table, then comes back as it is now, if it still is: whatever the
            # order of its inserts and deletes (and a rowid SQLite reused), the index ends as `kb_chunks` is.
            for size in _sizes(connection):
                connection.execute(f"DELETE FROM kb_vec_{size} WHERE rowid IN ({touched})", {"last": last})
            found = connection.execute(f"SELECT DISTINCT length(embedding) FROM kb_chunks WHERE id IN ({touched})", {"last": last})
            for (length,) in found.fetchall():
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


def _nearest(path: str, knowledge_base_ids: list[str], vector: bytes, n: int) -> list[tuple[int, float]]:
    connection = _connection(path)
    if _pending(connection):
        # Brought up to date first, waiting at most SEARCH_SYNC_WAIT_MS for SQLite's write lock; past it the search
        # goes on over the index as it is.
        connection.execute(f"PRAGMA busy_timeout = {SEARCH_SYNC_WAIT_MS}")
        try:
            _catch_up(connection)
        except sqlean.OperationalError as exc:
            log.warning("knowledge.vectors_behind", reason=str(exc))
        finally:
            connection.execute(f"PRAGMA busy_timeout = {SYNC_WAIT_MS}")
    size = len(vector) // 4
    if size not in _sizes(connection):
        return []
    found: list[tuple[int, float]] = []
    for knowledge_base_id in knowledge_base_ids:
        found += connection.execute(
            f"SELECT rowid, distance FROM kb_vec_{size} WHERE embedding MATCH ? AND k = ? AND knowledge_base_id = ?",
            (vector, n, knowledge_base_id),
        ).fetchall()
    found.sort(key=lambda row: row[1])
    return [(int(chunk_id), 1.0 - float(distance)) for chunk_id, distance in found[:n]]


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
