"""Benchmark of the conversation store: full-text search over 100k messages, loading a 1,000-message conversation.

Run with `make bench` (or `python bench/conversations.py [--postgres URL]`). Writes bench/results/conversations.md.
Not a test: it measures, it does not pass or fail.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import insert, text

from chatbot_contracts import Registry
from chatbot_contracts.heap import settle_heap
from chatbot_conversation.cache import TreeCache
from chatbot_conversation.db.engine import Database
from chatbot_conversation.db.schema import ConversationRow, MessageRow
from chatbot_conversation.service import ConversationService, Principal


def vocabulary(size: int = 20_000) -> list[str]:
    """Distinct made-up words, ranked: text drawn from them by Zipf's law looks like real text to an index."""
    syllables = ["ka", "lo", "mi", "re", "tu", "sa", "ne", "po", "vi", "da", "ri", "go", "lu", "fe", "zo", "an", "el", "or", "um", "is"]
    words, n = [], 0
    while len(words) < size:
        word, k = "", n
        for _ in range(2 + n % 3):
            word += syllables[k % len(syllables)]
            k //= len(syllables)
        if word not in words[-50:]:
            words.append(word)
        n += 7
    return list(dict.fromkeys(words))[:size]


WORDS = vocabulary()
WEIGHTS = list(itertools.accumulate(1 / (rank + 1) ** 1.07 for rank in range(len(WORDS))))
"""Zipf's law, cumulative (`random.choices` would otherwise add the weights up again at each call)."""
OWNER = Principal(owner="bench")
RESULTS = Path(__file__).with_name("results")


def sentence(rng: random.Random, words: int) -> str:
    return " ".join(rng.choices(WORDS, cum_weights=WEIGHTS, k=words)).capitalize() + "."


async def fill(db: Database, conversations: int, per_conversation: int, long_one: int) -> str:
    """Insert the corpus in bulk; returns the id of the long conversation."""
    rng = random.Random(7)
    now = datetime.now(UTC)
    long_id = uuid.uuid4().hex
    async with db.write() as session:
        ids = [uuid.uuid4().hex for _ in range(conversations)] + [long_id]
        await session.execute(
            insert(ConversationRow),
            [
                {
                    "id": cid,
                    "owner": OWNER.owner,
                    "title": sentence(rng, 5),
                    "title_is_auto": False,
                    "pinned": False,
                    "archived": False,
                    "created_at": now,
                    "updated_at": now,
                }
                for cid in ids
            ],
        )
        for cid in ids:
            count = long_one if cid == long_id else per_conversation
            rows, parent = [], None
            for seq in range(1, count + 1):
                mid = uuid.uuid4().hex
                role = "user" if seq % 2 else "assistant"
                rows.append(
                    {
                        "id": mid,
                        "conversation_id": cid,
                        "parent_id": parent,
                        "role": role,
                        "content": sentence(rng, 12 if role == "user" else 40),
                        "status": "complete",
                        "created_at": now,
                        "seq": seq,
                    }
                )
                parent = mid
            await session.execute(insert(MessageRow), rows)
            await session.execute(ConversationRow.__table__.update().where(ConversationRow.id == cid).values(active_leaf_id=parent))
    return long_id


def percentile(samples: list[float], p: float) -> float:
    return statistics.quantiles(samples, n=100)[int(p) - 1] if len(samples) > 1 else samples[0]


async def measure(url: str, label: str) -> list[str]:
    db = Database(url)
    await db.migrate()
    registry = Registry.parse('[models.m]\nprovider = "openai"\nupstream_model = "m"\n')
    service = ConversationService(db, registry, TreeCache(None), max_message_chars=200_000, share_base_url="http://x")
    started = time.perf_counter()
    long_id = await fill(db, conversations=999, per_conversation=100, long_one=1000)
    filled = time.perf_counter() - started
    if db.dialect == "postgresql":
        # Planner statistics, as autovacuum gathers them within a minute of a bulk load: without
        # them PostgreSQL guessed 2 conversations for the owner and searched from there (58 ms, not 5).
        async with db.write() as session:
            await session.execute(text("ANALYZE"))
    settle_heap()  # as the service does once it is built, before it serves
    rng = random.Random(11)
    searches = []
    for _ in range(200):
        # What people search for: a distinctive word, sometimes with a second one being typed.
        query = rng.choice(WORDS[200:5000]) + (f" {rng.choice(WORDS[:2000])[:3]}" if rng.random() < 0.3 else "")
        t = time.perf_counter()
        await service.search(OWNER, query, 20)
        searches.append((time.perf_counter() - t) * 1000)
    loads = []
    for _ in range(50):
        t = time.perf_counter()
        conversation = await service.get(OWNER, long_id)
        loads.append((time.perf_counter() - t) * 1000)
    assert len(conversation.messages) == 1000
    await db.close()
    return [
        f"| {label} | search, 100k messages (20 hits) | {statistics.median(searches):.1f} ms | {percentile(searches, 95):.1f} ms | 200 queries |",
        f"| {label} | load a 1,000-message conversation | {statistics.median(loads):.1f} ms | {percentile(loads, 95):.1f} ms | 50 loads, no cache; bulk load of the corpus took {filled:.0f} s |",
    ]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--postgres", help="also measure PostgreSQL at this URL (a scratch database is created and dropped)")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        rows += await measure(f"sqlite:///{folder}/bench.db", "SQLite")
    if args.postgres:
        import asyncpg

        name = f"chatbot_bench_{uuid.uuid4().hex[:8]}"
        admin = await asyncpg.connect(args.postgres)
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            rows += await measure(args.postgres.rsplit("/", 1)[0] + f"/{name}", "PostgreSQL")
        finally:
            await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            await admin.close()
    table = ["| store | operation | p50 | p95 | samples |", "|---|---|---|---|---|", *rows]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "conversations.md").write_text("\n".join(table) + "\n")
    print("\n".join(table))


if __name__ == "__main__":
    asyncio.run(main())
