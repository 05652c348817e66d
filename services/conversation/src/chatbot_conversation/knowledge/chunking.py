"""Passages out of a document's text: paragraphs joined up to a size, a new passage at every heading, each with
its place (page, the headings above it, its character range)."""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass

from .extract import Mark

_PARAGRAPH = re.compile(r"\S(?:.*?\S)?(?=[ \t]*\n\s*\n|\s*\Z)", re.DOTALL)
_BREAK = re.compile(r"(?<=[.!?。])\s+|\n")


@dataclass(frozen=True, slots=True)
class Chunk:
    position: int
    start: int
    end: int
    page: int | None
    heading: str
    content: str

    @property
    def embedded(self) -> str:
        """What is embedded: the passage under its headings, which often name what it is about."""
        return f"{self.heading}\n{self.content}" if self.heading else self.content


def _pieces(text: str, start: int, end: int, size: int) -> list[tuple[int, int]]:
    """`[start, end)` cut into ranges of at most `size` characters, at a sentence end or a space where there is one."""
    ranges: list[tuple[int, int]] = []
    while end - start > size:
        window = text[start : start + size]
        cut = max((m.end() for m in _BREAK.finditer(window) if m.end() > size // 2), default=0)
        if not cut:
            cut = window.rfind(" ", size // 2) + 1 or size
        ranges.append((start, start + cut))
        start += cut
        while start < end and text[start].isspace():
            start += 1
    if start < end:
        ranges.append((start, end))
    return ranges


def split(text: str, marks: list[Mark], size: int = 1200) -> list[Chunk]:
    """The text's passages in order, each at most `size` characters (a longer paragraph is cut at sentence ends)."""
    pages = [(m.at, int(m.title)) for m in marks if m.level == 0]
    page_starts = [at for at, _ in pages]
    headings = sorted((m for m in marks if m.level > 0), key=lambda m: m.at)
    heading_starts = [m.at for m in headings]

    def page_at(offset: int) -> int | None:
        index = bisect.bisect_right(page_starts, offset) - 1
        return pages[index][1] if index >= 0 else None

    def headings_at(offset: int) -> str:
        stack: list[Mark] = []
        for mark in headings[: bisect.bisect_right(heading_starts, offset)]:
            while stack and stack[-1].level >= mark.level:
                stack.pop()
            stack.append(mark)
        return " › ".join(m.title for m in stack if m.title)

    boundaries = set(heading_starts) | set(page_starts)
    chunks: list[Chunk] = []
    current: tuple[int, int] | None = None
    only_headings = False
    """The current passage holds nothing but headings yet: the next paragraph joins it whatever its size."""

    def close() -> None:
        nonlocal current
        if current is not None:
            start, end = current
            chunks.append(Chunk(len(chunks), start, end, page_at(start), headings_at(start), text[start:end]))
        current = None

    for paragraph in _PARAGRAPH.finditer(text):
        heading = paragraph.start() in heading_starts
        for start, end in _pieces(text, paragraph.start(), paragraph.end(), size):
            new_section = current is not None and any(current[1] <= b <= start for b in boundaries)
            if current is not None and (new_section or (end - current[0] > size and not only_headings)):
                close()
            only_headings = heading and (current is None or only_headings)
            current = (current[0], end) if current is not None else (start, end)
    close()
    return chunks
