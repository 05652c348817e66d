"""The conversation service's own consumer group writes answers from `inference.events`, once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis
from litestar.testing import AsyncTestClient
from prometheus_client import generate_latest

from chatbot_contracts import CONVERSATION_GROUP, DATA_FIELD, Completed, Failed, Keys, Queued, Registry, TokenUsage, encode
from chatbot_conversation import Settings, create_app
from chatbot_devtools.platform import INTERNAL_SECRET
from chatbot_devtools.pytest_plugin import POSTGRES, create_postgres_database, drop_postgres_database
from chatbot_devtools.signed import SignedAs


async def test_answers_are_written_from_events_and_every_event_is_acknowledged(
    redis_url: str, namespace: str, redis: aioredis.Redis, tmp_path: Path
) -> None:
    keys = Keys(namespace)
    settings = Settings.from_env(
        {
            "REDIS_URL": redis_url,
            "CHATBOT_REDIS_NAMESPACE": namespace,
            "CHATBOT_CONSUMER_NAME": "c1",
            "CHATBOT_INTERNAL_SECRET": INTERNAL_SECRET,
            "CHATBOT_DATABASE_URL": f"sqlite:///{tmp_path}/c.db",
        }
    )
    app = create_app(settings, Registry.parse('[models.m]\nprovider = "openai"\nupstream_model = "m"\n'))
    async with AsyncTestClient(app=app) as client:
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        assert (await client.get("/readyz")).status_code == 200
        alice = SignedAs("alice")
        made = (await client.post("/internal/v1/conversations", json={}, auth=alice)).json()
        turn = (
            await client.post(f"/internal/v1/conversations/{made['id']}/turns", json={"request_id": "r1", "content": "Hi"}, auth=alice)
        ).json()
        base = {"request_id": "r1", "model": "m", "conversation_id": made["id"], "message_id": turn["assistant_message_id"]}
        done = Completed(**base, at=2.0, text="Hello!", finish_reason="stop", usage=TokenUsage(input_tokens=1, output_tokens=2))
        for payload in (
            encode(Queued(**base, at=1.0)),
            encode(done),
            encode(done),
            encode(Failed(**base, at=3.0, code="network", message="late")),
            b"not json",
        ):
            await redis.xadd(keys.inference_events, {DATA_FIELD: payload})
        for _ in range(200):
            [group] = await redis.xinfo_groups(keys.inference_events)
            if group["entries-read"] == 5 and group["pending"] == 0:
                break
            await asyncio.sleep(0.02)
        assert group["name"] == CONVERSATION_GROUP.encode()
        assert group["entries-read"] == 5 and group["pending"] == 0, "every event is read and acknowledged"
        answer = (await client.get(f"/internal/v1/conversations/{made['id']}", auth=alice)).json()["messages"][-1]
        assert (answer["status"], answer["content"], answer["error"]) == ("complete", "Hello!", None)
        assert answer["usage"] == {"input_tokens": 1, "output_tokens": 2, "cached_tokens": 0, "cost_usd": 0.0, "estimated": False}


async def test_an_answer_waits_in_the_stream_while_the_database_is_away(redis_url: str, namespace: str, redis: aioredis.Redis) -> None:
    database = await create_postgres_database()
    if database is None:
        pytest.skip(f"no PostgreSQL answers at {POSTGRES}")
    name = database.rsplit("/", 1)[1]
    keys = Keys(namespace)
    settings = Settings.from_env(
        {
            "REDIS_URL": redis_url,
            "CHATBOT_REDIS_NAMESPACE": namespace,
            "CHATBOT_CONSUMER_NAME": "c1",
            "CHATBOT_DATABASE_URL": database,
            "CHATBOT_INTERNAL_SECRET": INTERNAL_SECRET,
        }
    )
    admin = await asyncpg.connect(POSTGRES)
    try:
        async with AsyncTestClient(
            app=create_app(settings, Registry.parse('[models.m]\nprovider = "openai"\nupstream_model = "m"\n'))
        ) as client:
            alice = SignedAs("alice")
            made = (await client.post("/internal/v1/conversations", json={}, auth=alice)).json()
            turn = (
                await client.post(f"/internal/v1/conversations/{made['id']}/turns", json={"request_id": "r1", "content": "Hi"}, auth=alice)
            ).json()
            # The database goes away: no new connections, and the service's are cut.
            await admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
            await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name)
            base = {"request_id": "r1", "model": "m", "conversation_id": made["id"], "message_id": turn["assistant_message_id"]}
            await redis.xadd(keys.inference_events, {DATA_FIELD: encode(Completed(**base, at=2.0, text="Kept!", finish_reason="stop"))})
            for _ in range(200):
                if "chatbot_conversation_event_failures_total 0.0" not in generate_latest(client.app.state.metrics).decode():
                    break
                await asyncio.sleep(0.05)
            [group] = await redis.xinfo_groups(keys.inference_events)
            assert group["pending"] == 1, "refused by the database: read, not acknowledged"

            await admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
            for _ in range(300):
                [group] = await redis.xinfo_groups(keys.inference_events)
                if group["pending"] == 0:
                    break
                await asyncio.sleep(0.05)
            assert group["pending"] == 0
            answer = (await client.get(f"/internal/v1/conversations/{made['id']}", auth=alice)).json()["messages"][-1]
            assert (answer["status"], answer["content"]) == ("complete", "Kept!"), "applied once the database is back"
    finally:
        await admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
        await admin.close()
        await drop_postgres_database(database)
