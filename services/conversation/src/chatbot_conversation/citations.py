"""The citations a grounded answer makes: `[n]` naming its n-th source."""

from __future__ import annotations

import re

_CITATION = re.compile(r"\[(\d{1,3})\]")


def unknown_citations(answer: str, sources: int) -> list[int]:
    """Citation numbers in `answer` that name no source (1..`sources`), each once, in order: the model made them up."""
    return list(dict.fromkeys(n for n in (int(m.group(1)) for m in _CITATION.finditer(answer)) if not 1 <= n <= sources))
