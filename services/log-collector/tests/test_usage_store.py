"""The scripted turns give exact aggregates, hand-computed, on SQLite and PostgreSQL; redeliveries count once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from chatbot_contracts import AnyInferenceEvent, Completed
from chatbot_log_collector import store as store_module
from chatbot_log_collector.api import report
from chatbot_log_collector.store import EventStore, quantile

T0 = 1_800_000_000
HOUR = 3600


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[EventStore]:
    store = EventStore(database_url)
    await store.migrate()
    yield store
    await store.close()


async def _report(store: EventStore, group_by: Any = "model", granularity: Any = "hour", owner: str | None = None) -> dict[str, Any]:
    groups = await store.usage(T0, T0 + 2 * HOUR, group_by, granularity, owner)
    made = report(groups, T0, T0 + 2 * HOUR, group_by, granularity)
    return {
        "data": {(b.start, b.group): b for b in made.data},
        "totals": made.totals,
    }


async def test_scripted_turns_give_exact_aggregates(store: EventStore, entries: list[tuple[str, AnyInferenceEvent]]) -> None:
    assert await store.record(entries) == len(entries)

    by_model = await _report(store)
    fast = by_model["data"][("2027-01-15T08:00:00Z", "fast")]
    assert (fast.requests, fast.completed, fast.failed, fast.cancelled) == (5, 3, 1, 1)
    assert fast.errors == {"rate_limited": 1}
    assert (fast.retries, fast.fallbacks) == (3, 1)
    assert (fast.input_tokens, fast.output_tokens) == (100 + 80 + 50 + 40, 50 + 20 + 10 + 5)
    assert fast.cost_usd == pytest.approx(0.0125 + 0.0061 + 0.0033 + 0.0007, abs=1e-9)
    assert round(fast.cost_usd, 2) == 0.02
    # Time to first token of r1, r2, r3: 0.3 s, 0.7 s, 1.5 s (buckets ≤0.5, ≤1, ≤2.5).
    assert fast.time_to_first_token.count == 3
    assert fast.time_to_first_token.mean_ms == pytest.approx((300 + 700 + 1500) / 3, abs=0.1)
    assert fast.time_to_first_token.p50_ms == 700.0  # three answers: every timing is read, the quantile is exact
    assert fast.duration.count == 5
    smart = by_model["data"][("2027-01-15T09:00:00Z", "smart")]
    assert (smart.requests, smart.failed, smart.errors, smart.cost_usd) == (1, 1, {"timeout": 1}, 0.0)
    assert smart.duration.p99_ms == 130_000.0  # exact, even past the histogram's last bound
    assert len(by_model["data"]) == 2
    totals = by_model["totals"]
    assert (totals.requests, totals.failed, totals.errors) == (6, 2, {"rate_limited": 1, "timeout": 1})
    assert totals.cost_usd == pytest.approx(0.0226, abs=1e-9)

    by_provider = await _report(store, "provider")
    assert {group: b.requests for (_, group), b in by_provider["data"].items()} == {"openai": 4, "anthropic": 1, "gemini": 1}

    by_key = await _report(store, "key", "minute")
    assert {(start[11:16], group): b.requests for (start, group), b in by_key["data"].items()} == {
        ("08:00", "k1"): 3,
        ("08:01", "k2"): 2,
        ("09:00", "k1"): 1,
    }


async def test_redelivered_events_count_once(store: EventStore, entries: list[tuple[str, AnyInferenceEvent]]) -> None:
    assert await store.record(entries[:5]) == 5
    # A collector died after storing, before acknowledging: the same entries come again, with the rest.
    assert await store.record(entries) == len(entries) - 5
    # A producer retried an XADD that had worked: the same event under a new entry id.
    again = [(f"{T0 * 1000 + 99}-0", entries[3][1]), (f"{T0 * 1000 + 98}-0", entries[6][1]), entries[6]]
    assert await store.record(again) == 0
    totals = (await _report(store))["totals"]
    assert (totals.requests, totals.completed, totals.cancelled) == (6, 3, 1)
    assert totals.cost_usd == pytest.approx(0.0226, abs=1e-9)


async def test_an_event_twice_in_one_new_batch_counts_once(store: EventStore, entries: list[tuple[str, AnyInferenceEvent]]) -> None:
    # A producer's retried XADD whose two entries arrive in the same batch, nothing of it stored before.
    assert await store.record([*entries, (f"{T0 * 1000 + 97}-0", entries[6][1])]) == len(entries)
    totals = (await _report(store))["totals"]
    assert (totals.requests, totals.completed, totals.cancelled) == (6, 3, 1)
    assert totals.cost_usd == pytest.approx(0.0226, abs=1e-9)
    assert len([row async for page in store.export(T0, T0 + 2 * HOUR, None) for row in page]) == len(entries)


async def test_a_batch_stored_after_a_redelivery_keeps_the_same_rows(tmp_path: Path, entries: list[tuple[str, AnyInferenceEvent]]) -> None:
    """On SQLite a batch of new rows goes in without RETURNING, and one holding rows stored before is stored again
    with it: either way, the same rows and sums."""
    stores = [EventStore(f"sqlite:///{tmp_path}/{name}.db") for name in ("whole", "redelivered")]
    try:
        for store in stores:
            await store.migrate()
        assert await stores[0].record(entries) == len(entries)
        assert await stores[1].record(entries[:5]) == 5
        assert await stores[1].record(entries) == len(entries) - 5
        exported = [[row async for page in store.export(T0, T0 + 2 * HOUR, None) for row in page] for store in stores]
        assert len(exported[0]) == len(entries)
        assert exported[0] == exported[1]
        reports = [await _report(store, "key", "minute") for store in stores]
        assert reports[0] == reports[1]
    finally:
        for store in stores:
            await store.close()


async def test_one_owner_sees_only_its_own(store: EventStore, entries: list[tuple[str, AnyInferenceEvent]]) -> None:
    await store.record(entries)
    bob = await _report(store, owner="bob")
    assert [group for _, group in bob["data"]] == ["fast"]
    assert (bob["totals"].requests, bob["totals"].cancelled, bob["totals"].failed) == (2, 1, 1)
    assert bob["totals"].cost_usd == pytest.approx(0.0007, abs=1e-9)
    assert await store.request_log("r1", "bob") == []
    log = await store.request_log("r1", "alice")
    assert [event["type"] for event in log] == ["queued", "started", "first_token", "completed"]
    assert log[1]["queue_wait_ms"] == pytest.approx(20.0)
    assert (log[3]["input_tokens"], log[3]["cost_usd"], log[3]["finish_reason"]) == (100, 0.0125, "stop")


async def test_export_pages_through_everything_in_range(store: EventStore, entries: list[tuple[str, AnyInferenceEvent]]) -> None:
    await store.record(entries)
    pages = [page async for page in store.export(T0, T0 + HOUR, None)]
    rows = [row for page in pages for row in page]
    assert [row["request_id"] for row in rows] == ["r1"] * 4 + ["r2", "r3", "r4", "r5"]
    assert [row["request_id"] for page in [p async for p in store.export(T0, T0 + 2 * HOUR, "bob")] for row in page] == ["r4", "r5"]


async def test_retention_deletes_what_is_older(store: EventStore, entries: list[tuple[str, AnyInferenceEvent]]) -> None:
    await store.record(entries)
    events, aggregates = await store.forget(events_before_s=T0 + HOUR, aggregates_before_s=T0 + 60)
    assert events == 8  # everything but r6
    assert aggregates == 2  # 08:00 of k1 on openai (r1, r2) and on anthropic (r3)
    assert [row["request_id"] async for page in store.export(T0, T0 + 2 * HOUR, None) for row in page] == ["r6"]


def test_quantiles_interpolate_within_buckets() -> None:
    assert quantile(0.5, [0] * 11) is None
    assert quantile(0.5, [2] + [0] * 10) == pytest.approx(0.05)  # halfway into (0, 0.1]
    assert quantile(1.0, [0] * 10 + [1]) == 120.0


async def _timed(store: EventStore, ttfts_ms: list[float]) -> Any:
    """Store one completed answer per time to first token, and report the hour they fall in."""
    answers = [
        Completed(
            request_id=f"t{i}",
            at=T0 + 1 + i * 0.01,
            text="x",
            finish_reason="stop",
            ttft_s=ms / 1000,
            duration_s=ms / 500,
            model="fast",
            provider="openai",
            owner="alice",
            key_id="k1",
        )
        for i, ms in enumerate(ttfts_ms)
    ]
    events: list[tuple[str, AnyInferenceEvent]] = [(f"{T0 * 1000 + i}-0", answer) for i, answer in enumerate(answers)]
    assert await store.record(events) == len(events)
    return (await _report(store))["totals"]


async def test_one_answer_reports_its_own_timing(store: EventStore) -> None:
    """A 7 ms time to first token is 7 ms at every quantile (a 0-100 ms bucket made it 50, 95, 99 ms)."""
    ttft = (await _timed(store, [7.0])).time_to_first_token
    assert (ttft.count, ttft.p50_ms, ttft.p95_ms, ttft.p99_ms) == (1, 7.0, 7.0, 7.0)


async def test_a_known_set_of_timings_gives_its_true_quantiles(store: EventStore) -> None:
    timings = [float(ms) for ms in range(1, 101)]  # 1 … 100 ms
    totals = await _timed(store, timings)
    ttft, duration = totals.time_to_first_token, totals.duration
    assert (ttft.p50_ms, ttft.p95_ms, ttft.p99_ms) == (50.5, 95.0, 99.0)  # linear between ranks: 50.5, 95.05, 99.01
    assert (duration.p50_ms, duration.p95_ms, duration.p99_ms) == (101.0, 190.1, 198.0)


async def test_a_large_report_interpolates_within_the_histogram(store: EventStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "EXACT_UP_TO", 50)  # more answers than that: the aggregates alone answer
    timings = [float(ms) for ms in range(1, 101)]
    ttft = (await _timed(store, timings)).time_to_first_token
    # All 100 fall in the first bucket, (0, 100 ms]: interpolated within it, not the exact 50.5 / 95.05 / 99.01.
    assert (ttft.count, ttft.p50_ms, ttft.p95_ms, ttft.p99_ms) == (100, 50.0, 95.0, 99.0)
