"""A scripted set of turns (the aggregates they must produce are computed by hand in the tests)."""

from __future__ import annotations

import pytest

from chatbot_contracts import (
    AnyInferenceEvent,
    Cancelled,
    Completed,
    Failed,
    FirstToken,
    GenerationStarted,
    Queued,
    TokenUsage,
)

T0 = 1_800_000_000
"""A whole hour (and minute) in Unix seconds: 2027-01-15T08:00:00Z."""
ALICE = {"owner": "alice", "key_id": "k1"}
BOB = {"owner": "bob", "key_id": "k2"}


def _usage(input_tokens: int, output_tokens: int, cost: float) -> TokenUsage:
    return TokenUsage(input_tokens=input_tokens, output_tokens=output_tokens, cost_usd=cost)


@pytest.fixture
def turns() -> list[AnyInferenceEvent]:
    """r1 plain, r2 after a retry, r3 on a fallback, r4 cancelled, r5 failed after retries, r6 failed an hour later."""
    fast = {"model": "fast", "provider": "openai", "upstream_model": "gpt-4o-mini"}
    return [
        Queued(request_id="r1", at=T0 + 5.0, **fast, **ALICE),
        GenerationStarted(request_id="r1", at=T0 + 5.02, queue_wait_s=0.02, **fast, **ALICE),
        FirstToken(request_id="r1", at=T0 + 5.32, ttft_s=0.3, **fast, **ALICE),
        Completed(
            request_id="r1", at=T0 + 6.2, text="hi", finish_reason="stop", usage=_usage(100, 50, 0.0125), ttft_s=0.3, duration_s=1.2,
            **fast, **ALICE,
        ),
        Completed(
            request_id="r2", at=T0 + 20.0, text="ok", finish_reason="stop", usage=_usage(80, 20, 0.0061), ttft_s=0.7, duration_s=3.0,
            retries=1, **fast, **ALICE,
        ),
        Completed(
            request_id="r3", at=T0 + 30.0, text="ok", finish_reason="length", usage=_usage(50, 10, 0.0033), ttft_s=1.5, duration_s=2.0,
            fallbacks=1, model="fast", provider="anthropic", upstream_model="claude", **ALICE,
        ),
        Cancelled(request_id="r4", at=T0 + 70.0, text="par", usage=_usage(40, 5, 0.0007), duration_s=0.4, **fast, **BOB),
        Failed(request_id="r5", at=T0 + 75.0, code="rate_limited", message="429", retries=2, duration_s=0.05, **fast, **BOB),
        Failed(
            request_id="r6", at=T0 + 3610.0, code="timeout", message="no first token", duration_s=130.0,
            model="smart", provider="gemini", upstream_model="gemini-2.0-flash", **ALICE,
        ),
    ]  # fmt: skip


@pytest.fixture
def entries(turns: list[AnyInferenceEvent]) -> list[tuple[str, AnyInferenceEvent]]:
    """The turns as `(stream entry id, event)`, as a batch arrives."""
    return [(f"{T0 * 1000 + i}-0", event) for i, event in enumerate(turns)]
