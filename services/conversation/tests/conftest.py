from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis

from chatbot_contracts import Registry
from chatbot_conversation.cache import TreeCache
from chatbot_conversation.db.engine import Database
from chatbot_conversation.service import ConversationService
from chatbot_devtools.platform import registry_toml

REGISTRY = Registry.parse(
    registry_toml(
        {
            "fast": {"provider": "openai", "upstream_model": "gpt-4o-mini", "context_window": 8192, "max_output_tokens": 1024},
            "tiny": {"provider": "openai", "upstream_model": "tiny", "context_window": 100, "max_output_tokens": 40},
        }
    )
)
POSTGRES = os.environ.get("CHATBOT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


async def _postgres_database() -> str | None:
    """A fresh, empty PostgreSQL database of this test's own (None when no server answers)."""
    name = f"chatbot_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = await asyncpg.connect(POSTGRES, timeout=2)
    except (OSError, asyncpg.PostgresError):
        return None
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return POSTGRES.rsplit("/", 1)[0] + f"/{name}"


async def _drop(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    admin = await asyncpg.connect(POSTGRES, timeout=2)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(params=["sqlite", "postgresql"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """The store on SQLite and on PostgreSQL: every test of the store runs on both."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/conversations.db"
    else:
        made = await _postgres_database()
        if made is None:
            pytest.skip(f"no PostgreSQL answers at {POSTGRES} (set CHATBOT_TEST_POSTGRES_URL)")
        url = made
    db = Database(url)
    await db.migrate()
    yield db
    await db.close()
    if request.param == "postgresql":
        await _drop(url)


@pytest.fixture
def service(database: Database, redis: aioredis.Redis, namespace: str) -> ConversationService:
    return ConversationService(
        database, REGISTRY, TreeCache(redis, namespace), max_message_chars=5000, share_base_url="https://chat.example"
    )
