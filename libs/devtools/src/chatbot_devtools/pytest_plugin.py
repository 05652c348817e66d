"""Fixtures shared by every test suite of the platform (registered as a pytest plugin)."""

from __future__ import annotations

import os
import signal
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TypeVar, cast

import pytest
import redis.asyncio as aioredis

from chatbot_contracts.redis import RedisSettings

from .fakes import FakeAnthropic, FakeGemini, FakeOllama, FakeOpenAI, FakeUpstream
from .platform import LocalPlatform, registry_toml
from .processes import STOP_SIGNALS
from .redis_server import RedisServer, answers
from .serve import ThreadedServer

F = TypeVar("F", bound=FakeUpstream)


def pytest_configure(config: pytest.Config) -> None:
    """Make SIGTERM and SIGHUP stop the run as Ctrl-C does: the test at hand is interrupted and every fixture tears
    down. Left at their default, they end pytest at once, and the platforms, fakes and `redis-server`s the tests
    started (services run in sessions of their own, which a signal to the run's process group never reaches) outlive
    the run. Only the first one interrupts; one that arrives while fixtures tear down (a runner signalling the whole
    process group reaches pytest twice, once through `make test`) is ignored, so teardown finishes."""
    if threading.current_thread() is not threading.main_thread():
        return
    stopping = False

    def stop(signum: int, _: object) -> None:
        nonlocal stopping
        if stopping:
            return
        stopping = True
        raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")

    for sig in STOP_SIGNALS:
        if signal.getsignal(sig) is signal.SIG_DFL:
            signal.signal(sig, stop)


@pytest.fixture(scope="session")
def redis_url() -> str:
    """A real Redis: the tests never run against a stand-in."""
    url = os.environ.get("REDIS_URL")
    if not url:
        pytest.fail("REDIS_URL is not set: run the tests with `make test`, which finds or starts a Redis")
    if not answers(url):
        pytest.fail(f"REDIS_URL={url} does not answer PING")
    return url


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A `redis-server` of this test's own (append-only), for tests that kill or restart Redis."""
    server = RedisServer(tmp_path / "redis", persist=True).start()
    yield server
    server.stop()


@pytest.fixture
def namespace() -> str:
    """A key prefix of this test's own, so tests never see each other's streams."""
    return f"test-{uuid.uuid4().hex[:12]}:"


@pytest.fixture
async def redis(redis_url: str, namespace: str) -> AsyncIterator[aioredis.Redis]:
    """A client of the test's Redis: a cluster's client when `REDIS_URL` is a node of a Redis Cluster."""
    cluster = RedisSettings(url=redis_url).cluster()
    client = cast(aioredis.Redis, aioredis.RedisCluster.from_url(redis_url)) if cluster else aioredis.Redis.from_url(redis_url)
    yield client
    keys = [key async for key in client.scan_iter(match=f"{namespace}*", count=1000)]
    if keys:
        await client.delete(*keys)
    await client.aclose()


def _serve(fake: F, suffix: str = "") -> Iterator[F]:
    server = ThreadedServer(fake).start()
    fake.base_url = server.url + suffix
    yield fake
    server.stop()


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    """A fake OpenAI-compatible upstream on a local port; `base_url` ends in /v1, as the SDK takes it."""
    yield from _serve(FakeOpenAI(), "/v1")


@pytest.fixture
def fake_anthropic() -> Iterator[FakeAnthropic]:
    """A fake Anthropic Messages API; `base_url` is the API root, as the SDK takes it."""
    yield from _serve(FakeAnthropic(model="claude-fake"))


@pytest.fixture
def fake_gemini() -> Iterator[FakeGemini]:
    """A fake Gemini API; `base_url` is the API root (the adapter and the SDK add /v1beta)."""
    yield from _serve(FakeGemini(model="gemini-fake"))


@pytest.fixture
def fake_ollama() -> Iterator[FakeOllama]:
    """A fake Ollama server; `base_url` is its root, as the SDK takes it."""
    yield from _serve(FakeOllama(model="llama-fake:latest"))


@pytest.fixture
def platform_factory(tmp_path: Path, redis_url: str, namespace: str) -> Iterator[Callable[..., LocalPlatform]]:
    """Builds `LocalPlatform`s in this test's directory and namespace (on `redis_url` unless given another)."""
    started: list[LocalPlatform] = []

    def build(registry: str, redis: str | None = None) -> LocalPlatform:
        platform = LocalPlatform(tmp_path, redis or redis_url, namespace, registry)
        started.append(platform)
        return platform

    yield build
    for platform in started:
        platform.stop()


@pytest.fixture
def fake_registry(fake_openai: FakeOpenAI) -> str:
    """A registry whose alias `fake` is served by `fake_openai`."""
    return registry_toml(
        {
            "fake": {
                "provider": "openai",
                "upstream_model": "fake-model",
                "base_url": fake_openai.base_url,
                "context_window": 8192,
                "max_output_tokens": 1024,
                "input_usd_per_mtok": 1.0,
                "output_usd_per_mtok": 2.0,
            }
        }
    )


POSTGRES = os.environ.get("CHATBOT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


async def create_postgres_database() -> str | None:
    """A fresh, empty PostgreSQL database of the test's own (None when no server answers)."""
    import asyncpg

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


async def drop_postgres_database(url: str) -> None:
    import asyncpg

    admin = await asyncpg.connect(POSTGRES, timeout=2)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """An empty database on SQLite, then on PostgreSQL: a test that takes it runs on both (PostgreSQL skipped if absent)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/test.db"
        return
    url = await create_postgres_database()
    if url is None:
        pytest.skip(f"no PostgreSQL answers at {POSTGRES} (set CHATBOT_TEST_POSTGRES_URL)")
    try:
        yield url
    finally:
        await drop_postgres_database(url)
