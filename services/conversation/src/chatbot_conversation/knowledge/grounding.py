"""A grounded answer's context: numbered sources within a token budget, and the citations an answer makes."""

from __future__ import annotations

from chatbot_contracts.knowledge import Passage, Source

INSTRUCTIONS = (
    "Answer from the numbered sources below, which come from the user's documents. After each statement that uses "
    "a source, cite it by its number in square brackets, like [1] or [2][3]. If the sources do not hold the answer, "
    "say so; do not cite a number that is not listed."
)


def estimated_tokens(text: str) -> int:
    return len(text) // 4 + 1


def _entry(source: Source) -> str:
    place = f"{source.document_name}" + (f", page {source.page}" if source.page is not None else "")
    place += f", {source.heading}" if source.heading else ""
    return f"[{source.number}] ({place})\n{source.text}"


def sources_within(passages: list[Passage], max_tokens: int) -> list[Source]:
    """The best passages, numbered from 1, as many as fit in `max_tokens` with the instructions."""
    budget = max_tokens - estimated_tokens(INSTRUCTIONS)
    sources: list[Source] = []
    for passage in passages:
        source = Source(
            number=len(sources) + 1,
            knowledge_base_id=passage.knowledge_base_id,
            document_id=passage.document_id,
            document_name=passage.document_name,
            page=passage.page,
            heading=passage.heading,
            start=passage.start,
            end=passage.end,
            score=passage.score,
            text=passage.text,
        )
        cost = estimated_tokens(_entry(source)) + 1
        if cost > budget:
            break
        budget -= cost
        sources.append(source)
    return sources


def prompt(sources: list[Source]) -> str:
    """The system message that gives the model its sources."""
    return INSTRUCTIONS + "\n\n" + "\n\n".join(_entry(s) for s in sources)
