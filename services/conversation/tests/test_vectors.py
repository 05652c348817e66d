"""The vector half of knowledge-base search, on SQLite (sqlite-vec `vec0` tables kept from `kb_chunks` through the
pending log) and on PostgreSQL (exact similarity in SQL): what a search finds follows what is stored, per
knowledge base, whatever order passages come and go in."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from chatbot_conversation.db.engine import Database
from chatbot_conversation.db.schema import DocumentRow, KnowledgeBaseRow
from chatbot_conversation.knowledge import vectors
from chatbot_conversation.knowledge.vectors import PostgresVectors, vector_index

INSERT = text(
    """INSERT INTO kb_chunks (knowledge_base_id, document_id, position, page, heading, start_at, end_at, content, embedding)
       VALUES (:kb, :document, :position, 1, '', 0, 1, :content, :embedding)"""
)


def unit(rng: np.random.Generator, size: int) -> np.ndarray:
    vector = rng.standard_normal(size).astype(np.float32)
    return vector / np.linalg.norm(vector)


async def new_base(db: Database, model: str = "embed") -> tuple[str, str]:
    """A knowledge base with one document; their ids."""
    moment = datetime.now(UTC)
    base, document = uuid.uuid4().hex, uuid.uuid4().hex
    async with db.write() as session:
        session.add(KnowledgeBaseRow(id=base, owner="o", name="kb", embedding_model=model, created_at=moment, updated_at=moment))
        await session.flush()
        session.add(
            DocumentRow(
                id=document,
                knowledge_base_id=base,
                owner="o",
                name="d.txt",
                media_type="text/plain",
                size=1,
                sha256=document,
                state="ready",
                created_at=moment,
                updated_at=moment,
            )
        )
    return base, document


async def store(db: Database, base: str, document: str, vectors: list[np.ndarray], first: int = 0) -> list[int]:
    """Store passages as the ingestor does (through the service's engine); their chunk ids."""
    index = vector_index(db)
    async with db.write() as session:
        await session.execute(
            INSERT,
            [
                {
                    "kb": base,
                    "document": document,
                    "position": first + n,
                    "content": f"p{first + n}",
                    "embedding": index.stored(v.tobytes()),
                }
                for n, v in enumerate(vectors)
            ],
        )
        found = await session.execute(
            text("SELECT id FROM kb_chunks WHERE document_id = :d AND position >= :p ORDER BY position"), {"d": document, "p": first}
        )
    return [int(chunk_id) for (chunk_id,) in found.all()]


async def test_a_search_finds_the_nearest_passages_of_the_named_knowledge_bases_only(database: Database) -> None:
    await finds_the_nearest_of_the_named_bases(database)


async def test_deleted_passages_leave_the_search_and_a_reused_rowid_is_not_mistaken_for_the_old_passage(database: Database) -> None:
    await deleted_passages_leave_the_search(database)


async def test_with_pgvector_created_before_migrating_the_vectors_are_kept_packed_and_searched_there(database_url: str) -> None:
    """pgvector as an operator would set it up (it is not part of PostgreSQL: skipped where it is not installed)."""
    database = Database(database_url)
    try:
        if database.dialect != "postgresql":
            pytest.skip("pgvector is PostgreSQL's")
        await create_pgvector(database)
        await database.migrate()
        assert await PostgresVectors(database).statement() == PostgresVectors.PACKED
        await finds_the_nearest_of_the_named_bases(database)
        await deleted_passages_leave_the_search(database)
        async with database.read() as session:
            assert (await session.execute(text("SELECT count(*) FROM kb_vectors"))).scalar() == (
                await session.execute(text("SELECT count(*) FROM kb_chunks"))
            ).scalar()
    finally:
        await database.close()


async def test_with_pgvector_created_after_migrating_a_search_converts_the_stored_arrays(database: Database) -> None:
    if database.dialect != "postgresql":
        pytest.skip("pgvector is PostgreSQL's")
    await create_pgvector(database)
    assert await PostgresVectors(database).statement() == PostgresVectors.CONVERTED
    await finds_the_nearest_of_the_named_bases(database)
    await deleted_passages_leave_the_search(database)


async def create_pgvector(database: Database) -> None:
    try:
        async with database.write() as session:
            await session.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))
    except DBAPIError as exc:
        pytest.skip(f"pgvector is not installed on this PostgreSQL: {exc.orig}")


async def small_base(database: Database, seed: int, size: int) -> tuple[np.random.Generator, str, str, list[np.ndarray], list[int]]:
    """A knowledge base of `size` passages with random 8-dimension vectors: the generator, its id, its document's,
    the vectors and the passages' ids."""
    rng = np.random.default_rng(seed)
    base, document = await new_base(database)
    embeddings = [unit(rng, 8) for _ in range(size)]
    return rng, base, document, embeddings, await store(database, base, document, embeddings)


async def finds_the_nearest_of_the_named_bases(database: Database) -> None:
    rng = np.random.default_rng(1)
    mine, my_document = await new_base(database)
    theirs, their_document = await new_base(database)
    my_vectors = [unit(rng, 16) for _ in range(40)]
    my_ids = await store(database, mine, my_document, my_vectors)
    their_ids = await store(database, theirs, their_document, my_vectors)  # the very same vectors, elsewhere
    index = vector_index(database)

    question = my_vectors[7] + 0.05 * unit(rng, 16)
    question /= np.linalg.norm(question)
    found = await index.nearest([mine], question.astype(np.float32).tobytes(), 5)

    expected = sorted(range(40), key=lambda n: -float(my_vectors[n] @ question))[:5]
    assert [chunk_id for chunk_id, _ in found] == [my_ids[n] for n in expected]
    assert abs(found[0][1] - float(my_vectors[7] @ question)) < 1e-4  # cosine similarity
    assert not set(their_ids) & {chunk_id for chunk_id, _ in found}
    both = await index.nearest([mine, theirs], my_vectors[3].tobytes(), 2)
    assert {chunk_id for chunk_id, _ in both} == {my_ids[3], their_ids[3]}


async def deleted_passages_leave_the_search(database: Database) -> None:
    _, mine, my_document, embeddings, ids = await small_base(database, seed=2, size=10)
    theirs, their_document = await new_base(database)
    index = vector_index(database)
    assert (await index.nearest([mine], embeddings[9].tobytes(), 1))[0][0] == ids[9]  # indexed before the deletion

    async with database.write() as session:
        await session.execute(text("DELETE FROM kb_chunks WHERE id = :id"), {"id": ids[9]})
    # SQLite gives the next row the freed (highest) rowid again; the new passage is another knowledge base's.
    (reused,) = await store(database, theirs, their_document, [embeddings[9]])

    mine_found = await index.nearest([mine], embeddings[9].tobytes(), 10)
    assert {chunk_id for chunk_id, _ in mine_found} == set(ids[:9])
    assert (await index.nearest([theirs], embeddings[9].tobytes(), 1))[0][0] == reused

    async with database.write() as session:
        await session.execute(text("DELETE FROM kb_chunks WHERE document_id = :d"), {"d": my_document})
    await index.sync()
    assert await index.nearest([mine], embeddings[0].tobytes(), 10) == []


async def test_knowledge_bases_of_different_vector_sizes_are_searched_side_by_side(database: Database) -> None:
    rng = np.random.default_rng(3)
    small, small_document = await new_base(database, "small-embed")
    large, large_document = await new_base(database, "large-embed")
    small_vectors = [unit(rng, 4) for _ in range(5)]
    large_vectors = [unit(rng, 32) for _ in range(5)]
    small_ids = await store(database, small, small_document, small_vectors)
    large_ids = await store(database, large, large_document, large_vectors)
    index = vector_index(database)
    assert (await index.nearest([small], small_vectors[2].tobytes(), 1))[0][0] == small_ids[2]
    assert (await index.nearest([large], large_vectors[4].tobytes(), 1))[0][0] == large_ids[4]
    assert await index.nearest([large], unit(rng, 12).tobytes(), 3) == []  # no passage of that size


async def test_a_search_too_slow_for_postgresql_is_cut_off_saying_so(database: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without pgvector a very large knowledge base scans slowly: the search ends at its time, the connection is freed."""
    if database.dialect != "postgresql":
        pytest.skip("SQLite's searches are bounded by the vec0 scan itself")
    rng = np.random.default_rng(4)
    base, document = await new_base(database)
    block = rng.standard_normal((3000, 384)).astype(np.float32)
    await store(database, base, document, list(block / np.linalg.norm(block, axis=1, keepdims=True)))
    monkeypatch.setattr(vectors, "PG_SEARCH_TIMEOUT_MS", 1)
    with pytest.raises(vectors.SearchTooSlow, match=r"more than 0\.001 s"):
        await vector_index(database).nearest([base], unit(rng, 384).tobytes(), 5)
    monkeypatch.undo()
    assert len(await vector_index(database).nearest([base], unit(rng, 384).tobytes(), 5)) == 5


async def test_a_search_while_another_process_holds_sqlites_write_lock_goes_on_over_the_index_as_it_is(database: Database) -> None:
    """A search does not wait out another writer to bring the vec0 index up to date: it goes on without the newest."""
    if database.dialect != "sqlite":
        pytest.skip("the vec0 index is SQLite's")
    rng, base, document, embeddings, indexed = await small_base(database, seed=5, size=3)
    index = vector_index(database)
    await index.sync()
    (newest,) = await store(database, base, document, [unit(rng, 8)], first=3)  # pending, not yet in the index
    writer = sqlite3.connect(str(make_url(database.url).database), isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")  # another process's write transaction
    try:
        found = await index.nearest([base], embeddings[0].tobytes(), 10)
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert {chunk_id for chunk_id, _ in found} == set(indexed)
    assert {chunk_id for chunk_id, _ in await index.nearest([base], embeddings[0].tobytes(), 10)} == {*indexed, newest}


async def test_the_sqlite_vec_child_killed_is_replaced_and_searches_go_on(database: Database) -> None:
    """sqlite-vec runs in a child process (never a second SQLite beside the engine's in one process); killed, it is
    started again by the next search."""
    if database.dialect != "sqlite":
        pytest.skip("the vec0 index is SQLite's")
    _, base, _, embeddings, ids = await small_base(database, seed=6, size=4)
    index = vector_index(database)
    assert (await index.nearest([base], embeddings[2].tobytes(), 1))[0][0] == ids[2]
    children = multiprocessing.active_children()
    assert children, "the search ran in a child process"
    for child in children:
        os.kill(child.pid, signal.SIGKILL)  # type: ignore[arg-type]
        child.join(5)
    assert (await index.nearest([base], embeddings[3].tobytes(), 1))[0][0] == ids[3]


CHILD_OF_A_SERVICE = """
import asyncio, multiprocessing, sys
from chatbot_conversation.db.engine import Database
from chatbot_conversation.knowledge.vectors import vector_index

async def main():
    database = Database(sys.argv[1])
    await database.migrate()
    await vector_index(database).nearest(["kb"], bytes(16), 3)
    print("children:", *(child.pid for child in multiprocessing.active_children()), flush=True)
    await asyncio.sleep(600)

asyncio.run(main())
"""


def test_the_sqlite_vec_child_ends_when_its_service_is_killed(tmp_path: Path) -> None:
    """A service killed outright (kill -9, an OOM kill) leaves no orphan child behind."""
    service = subprocess.Popen(
        [sys.executable, "-c", CHILD_OF_A_SERVICE, f"sqlite:///{tmp_path}/t.db"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert service.stdout is not None
        line = next(line for line in service.stdout if line.startswith("children:"))
        children = [int(pid) for pid in line.split()[1:]]
        assert children, "the search ran in a child process"
    finally:
        service.kill()
        service.wait(10)
    deadline = time.monotonic() + 10
    while any(alive(pid) for pid in children) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(pid) for pid in children), "the child outlived its service"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z" if Path(f"/proc/{pid}/stat").exists() else True
