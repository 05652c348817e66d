from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from litestar import Litestar
from litestar.testing import AsyncTestClient

from chatbot_contracts import Keys, Registry
from chatbot_devtools.platform import INTERNAL_SECRET, registry_toml
from chatbot_gateway import Settings, create_app

ADMIN_KEY = "sk-test-admin-0123456789abcdef"
REGISTRY = Registry.parse(
    registry_toml({"fast": {"provider": "openai", "upstream_model": "gpt-4o-mini", "base_url": "http://127.0.0.1:9/v1"}})
)


def settings_for(redis_url: str, namespace: str, **extra: str) -> Settings:
    return Settings.from_env(
        {
            "REDIS_URL": redis_url,
            "CHATBOT_REDIS_NAMESPACE": namespace,
            "CHATBOT_ADMIN_KEY": ADMIN_KEY,
            "CHATBOT_INTERNAL_SECRET": INTERNAL_SECRET,
            **extra,
        }
    )


@pytest.fixture
def make_app(namespace: str, tmp_path: Path) -> Callable[..., Litestar]:
    """A gateway on `redis_url` with extra settings, over a one-alias registry (`fast`)."""

    def make(redis_url: str, **extra: str) -> Litestar:
        return create_app(settings_for(redis_url, namespace, CHATBOT_DATABASE_URL=f"sqlite:///{tmp_path}/keys.db", **extra), REGISTRY)

    return make


@pytest.fixture
def app(make_app: Callable[..., Litestar], redis_url: str) -> Litestar:
    return make_app(redis_url, CHATBOT_MAX_BODY_BYTES="20000")


@pytest.fixture
async def client(app: Litestar) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with AsyncTestClient(app=app) as client:
        client.headers["Authorization"] = f"Bearer {ADMIN_KEY}"
        yield client


@pytest.fixture
async def live_worker(redis: aioredis.Redis, namespace: str) -> None:
    """A heartbeat as a live inference worker writes it."""
    await redis.zadd(Keys(namespace).workers, {"worker-1": time.time()})
