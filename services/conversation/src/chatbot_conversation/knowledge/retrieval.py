"""Hybrid retrieval: full-text ranks (FTS5 bm25 / tsvector ts_rank) fused with vector ranks by reciprocal rank fusion."""

from __future__ import annotations

from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncSession

from ..search import terms

RRF_K = 60
"""The fusion's constant: a passage's score is the sum of 1 / (RRF_K + its rank) over the two rankings."""


def _fts5(words: list[str]) -> str:
    # Any word may match (a question's words are seldom all in its answer); bm25 weighs the rare ones.
    return " OR ".join(f'"{w}"' for w in words)


async def full_text(session: AsyncSession, dialect: str, knowledge_base_ids: list[str], query: str, n: int) -> list[int]:
    """Chunk ids matching any word of `query`, best first."""
    words = terms(query)
    if not words:
        return []
    if dialect == "postgresql":
        statement = text(
            """SELECT c.id FROM kb_chunks c, to_tsquery('english', :q) q
                WHERE c.search @@ q AND c.knowledge_base_id IN :kbs ORDER BY ts_rank(c.search, q) DESC LIMIT :n"""
        ).bindparams(bindparam("kbs", expanding=True))
        params = {"q": " | ".join(words), "kbs": knowledge_base_ids, "n": n}
    else:
        statement = text(
            """SELECT c.id FROM kb_chunks_fts CROSS JOIN kb_chunks c ON c.id = kb_chunks_fts.rowid
                WHERE kb_chunks_fts MATCH :q AND c.knowledge_base_id IN :kbs ORDER BY bm25(kb_chunks_fts) LIMIT :n"""
        ).bindparams(bindparam("kbs", expanding=True))
        params = {"q": _fts5(words), "kbs": knowledge_base_ids, "n": n}
    return [int(row[0]) for row in (await session.execute(statement, params)).all()]


def fused(*rankings: list[int]) -> list[tuple[int, float]]:
    """Reciprocal rank fusion of rankings of chunk ids: `(id, score)`, best first."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, chunk_id in enumerate(ranking, start=1):
            scores[chunk_id] = scores.get(chunk_id, 0.0) + 1.0 / (RRF_K + rank)
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))
