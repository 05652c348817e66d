"""Engines, sessions and migrations: SQLite (aiosqlite) embedded, PostgreSQL (asyncpg) in production."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import structlog
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from chatbot_contracts.database import open_engine, upgrade

log = structlog.get_logger()
MIGRATIONS = Path(__file__).with_name("migrations")


class Database:
    """One writer engine and an optional read-replica engine for queries."""

    def __init__(self, url: str, read_url: str | None = None) -> None:
        self.url = url
        self.engine = open_engine(url)
        self.read_engine = open_engine(read_url) if read_url else self.engine
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        self._read_sessions = async_sessionmaker(self.read_engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """A session in one transaction: committed at the end, rolled back on any error."""
        async with self._sessions() as session, session.begin():
            yield session

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        async with self._read_sessions() as session:
            yield session

    async def migrate(self) -> None:
        """Bring the schema to the newest revision (Alembic), on start."""
        started = time.monotonic()
        async with self.engine.begin() as connection:
            await connection.run_sync(upgrade, MIGRATIONS)
        log.info("database.migrated", dialect=self.dialect, seconds=round(time.monotonic() - started, 3))

    async def close(self) -> None:
        await self.engine.dispose()
        if self.read_engine is not self.engine:
            await self.read_engine.dispose()
