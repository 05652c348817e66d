"""The log collector consumes `inference.events` with its own group, stores each event once, and answers the usage API."""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import msgspec
import pytest
import redis.asyncio as aioredis
from litestar.testing import AsyncTestClient
from prometheus_client import generate_latest

from chatbot_contracts import DATA_FIELD, LOG_COLLECTOR_GROUP, AnyInferenceEvent, Keys, encode
from chatbot_devtools.platform import INTERNAL_SECRET
from chatbot_devtools.pytest_plugin import POSTGRES, create_postgres_database, drop_postgres_database
from chatbot_devtools.signed import SignedAs
from chatbot_log_collector import Settings, create_app
from chatbot_log_collector.store import EventStore

T0 = 1_800_000_000
ADMIN = SignedAs("admin", admin=True)
RANGE = {"from": str(T0), "to": "2027-01-15T10:00:00Z"}


@pytest.fixture
def settings_for(redis_url: str, namespace: str) -> Callable[[str], Settings]:
    def make(database_url: str) -> Settings:
        return Settings.from_env(
            {
                "REDIS_URL": redis_url,
                "CHATBOT_REDIS_NAMESPACE": namespace,
                "CHATBOT_CONSUMER_NAME": "collector-1",
                "CHATBOT_INTERNAL_SECRET": INTERNAL_SECRET,
                "CHATBOT_LOG_DATABASE_URL": database_url,
                "CHATBOT_LOG_CLAIM_IDLE_S": "0.5",
            }
        )

    return make


async def _until(check: Callable[[], Any], timeout_s: float = 15.0) -> None:
    for _ in range(int(timeout_s / 0.05)):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"not true within {timeout_s}s: {check.__doc__}")


async def _pending(redis: aioredis.Redis, keys: Keys) -> int:
    return int((await redis.xpending(keys.inference_events, LOG_COLLECTOR_GROUP))["pending"])


async def test_each_event_is_stored_once_even_when_redelivered(
    redis: aioredis.Redis, namespace: str, tmp_path: Path, settings_for: Callable[[str], Settings], turns: list[AnyInferenceEvent]
) -> None:
    keys = Keys(namespace)
    database_url = f"sqlite:///{tmp_path}/usage.db"
    await redis.xgroup_create(keys.inference_events, LOG_COLLECTOR_GROUP, id="0", mkstream=True)
    for event in turns:
        await redis.xadd(keys.inference_events, {DATA_FIELD: encode(event)})
    await redis.xadd(keys.inference_events, {DATA_FIELD: encode(turns[3])})  # a producer's retried XADD
    await redis.xadd(keys.inference_events, {DATA_FIELD: b"not an event"})
    # A collector read the first four entries, stored them, and died before acknowledging them.
    read = await redis.xreadgroup(LOG_COLLECTOR_GROUP, "dead-collector", {keys.inference_events: ">"}, count=4)
    assert len(read[0][1]) == 4
    early = EventStore(database_url)
    await early.migrate()
    await early.record([(entry.decode(), event) for (entry, _), event in zip(read[0][1], turns, strict=False)])
    await early.close()

    async with AsyncTestClient(app=create_app(settings_for(database_url))) as client:

        async def all_acknowledged() -> bool:
            """every entry stored and acknowledged (the dead collector's taken over)"""
            totals = (await client.get("/internal/v1/usage", params=RANGE, auth=ADMIN)).json()["totals"]
            return totals["requests"] == 6 and await _pending(redis, keys) == 0

        await _until(all_acknowledged)
        report = (await client.get("/internal/v1/usage", params=RANGE, auth=ADMIN)).json()
        assert (report["totals"]["completed"], report["totals"]["failed"], report["totals"]["cancelled"]) == (3, 2, 1)
        assert report["totals"]["cost_usd"] == pytest.approx(0.0226, abs=1e-9)
        metrics = generate_latest(client.app.state.metrics).decode()
        assert "chatbot_log_collector_events_stored_total 5.0" in metrics  # nine events, four stored before
        assert 'chatbot_stream_group_pending{group="log-collector",stream="inference.events"}' in metrics
        assert 'chatbot_db_query_duration_seconds_count{operation="insert"}' in metrics

        bob = SignedAs("bob")
        mine = (await client.get("/internal/v1/usage", params={**RANGE, "group_by": "key", "owner": "alice"}, auth=bob)).json()
        assert [bucket["group"] for bucket in mine["data"]] == ["k2"]  # `owner` is an admin's filter; bob sees his own
        assert (await client.get("/internal/v1/requests/r1/log", auth=bob)).status_code == 404
        log = (await client.get("/internal/v1/requests/r4/log", auth=bob)).json()
        assert [event["type"] for event in log["events"]] == ["cancelled"]

        exported = await client.get("/internal/v1/usage/export", params={**RANGE, "format": "csv"}, auth=bob)
        rows = list(csv.DictReader(io.StringIO(exported.text)))
        assert [(row["request_id"], row["type"], row["cost_usd"]) for row in rows] == [
            ("r4", "cancelled", "0.0007"),
            ("r5", "failed", "0.0"),
        ]
        assert exported.headers["content-disposition"].startswith('attachment; filename="usage-')
        lines = (await client.get("/internal/v1/usage/export", params=RANGE, auth=ADMIN)).text.splitlines()
        assert len(lines) == 9 and msgspec.json.decode(lines[0])["type"] == "queued"

        bad = await client.get("/internal/v1/usage", params={"from": "yesterday"}, auth=ADMIN)
        assert bad.status_code == 400 and "`from`='yesterday' is neither an ISO 8601 time" in bad.json()["error"]["message"]
        wide = await client.get("/internal/v1/usage", params={"from": "0", "granularity": "minute"}, auth=ADMIN)
        assert wide.status_code == 400 and "narrow it or use a coarser granularity" in wide.json()["error"]["message"]
        everything = await client.get("/internal/v1/usage/export", params={"from": "0", "to": "2028-01-01T00:00:00Z"}, auth=ADMIN)
        assert everything.status_code == 200 and len(everything.text.splitlines()) == 9, "an export pages: any range will do"


@pytest.fixture
async def postgres_database() -> AsyncIterator[tuple[str, str]]:
    """A PostgreSQL database of this test's own: `(url, name)`."""
    url = await create_postgres_database()
    if url is None:
        pytest.skip(f"no PostgreSQL answers at {POSTGRES}")
    yield url, url.rsplit("/", 1)[1]
    await drop_postgres_database(url)


async def test_events_wait_in_the_stream_while_the_database_is_away(
    redis: aioredis.Redis,
    namespace: str,
    settings_for: Callable[[str], Settings],
    turns: list[AnyInferenceEvent],
    postgres_database: tuple[str, str],
) -> None:
    keys = Keys(namespace)
    url, name = postgres_database
    admin = await asyncpg.connect(POSTGRES)
    try:
        async with AsyncTestClient(app=create_app(settings_for(url))) as client:
            # The database goes away: no new connections, and the collector's are cut.
            await admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
            await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name)
            for event in turns:
                await redis.xadd(keys.inference_events, {DATA_FIELD: encode(event)})

            async def refused() -> bool:
                """the collector tried to store and was refused"""
                return "chatbot_log_collector_store_failures_total 0.0" not in generate_latest(client.app.state.metrics).decode()

            await _until(refused)
            assert await _pending(redis, keys) > 0  # read, not acknowledged: still in the stream

            await admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')

            async def stored() -> bool:
                """everything stored once the database is back, and acknowledged"""
                response = await client.get("/internal/v1/usage", params=RANGE, auth=ADMIN)
                return response.status_code == 200 and response.json()["totals"]["requests"] == 6 and await _pending(redis, keys) == 0

            await _until(stored, timeout_s=30)
            totals = (await client.get("/internal/v1/usage", params=RANGE, auth=ADMIN)).json()["totals"]
            assert totals["cost_usd"] == pytest.approx(0.0226, abs=1e-9)
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
        await admin.close()
