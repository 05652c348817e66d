from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from chatbot_contracts import Registry
from chatbot_conversation.attachments import FolderStore
from chatbot_conversation.cache import TreeCache
from chatbot_conversation.db.engine import Database
from chatbot_conversation.service import ConversationService
from chatbot_devtools.platform import registry_toml

REGISTRY = Registry.parse(
    registry_toml(
        {
            "fast": {"provider": "openai", "upstream_model": "gpt-4o-mini", "context_window": 8192, "max_output_tokens": 1024},
            "tiny": {"provider": "openai", "upstream_model": "tiny", "context_window": 100, "max_output_tokens": 40},
            "vision": {"provider": "openai", "upstream_model": "vision", "context_window": 3000, "max_output_tokens": 400},
        }
    )
)


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    """The store on SQLite and on PostgreSQL: every test of the store runs on both."""
    db = Database(database_url)
    await db.migrate()
    yield db
    await db.close()


@pytest.fixture
def service(database: Database, redis: aioredis.Redis, namespace: str, tmp_path: Path) -> ConversationService:
    return ConversationService(
        database,
        REGISTRY,
        TreeCache(redis, namespace),
        max_message_chars=5000,
        share_base_url="https://chat.example",
        attachments=FolderStore(tmp_path / "attachments"),
    )
