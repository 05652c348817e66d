"""SQL databases of the services: SQLite embedded (aiosqlite), PostgreSQL in production (asyncpg).

Needs the `db` extra (`chatbot-contracts[db]`): SQLAlchemy, Alembic and both drivers. Each
service keeps its own tables and its own Alembic version table; this module only opens
engines, runs migrations and times queries.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from prometheus_client import CollectorRegistry, Histogram
from sqlalchemy import Connection, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

QUERY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)


def async_url(url: str) -> str:
    """The URL with an async driver: `sqlite://` → aiosqlite, `postgresql://` → asyncpg."""
    parsed = make_url(url)
    if parsed.drivername in ("sqlite", "sqlite+pysqlite"):
        parsed = parsed.set(drivername="sqlite+aiosqlite")
    elif parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+asyncpg")
    return parsed.render_as_string(hide_password=False)


def open_engine(url: str, *, pool_size: int = 10, max_overflow: int = 20) -> AsyncEngine:
    """An engine for `url`; a SQLite file gets its folder, foreign keys, WAL and a 30 s lock wait."""
    url = async_url(url)
    if not url.startswith("sqlite"):
        return create_async_engine(url, pool_size=pool_size, max_overflow=max_overflow, pool_pre_ping=True)
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url, connect_args={"timeout": 30})

    @event.listens_for(engine.sync_engine, "connect")
    def _pragmas(connection: Any, _: Any) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return engine


MIGRATIONS_LOCK = int.from_bytes(b"chatbot", "big")
"""The PostgreSQL advisory lock every service's migration takes."""


def upgrade(connection: Connection, migrations: Path) -> None:
    """Bring the schema of `migrations` (an Alembic script folder) to its newest revision, on `connection` (in a
    transaction, which the caller commits).

    One migration at a time: replicas that start together (a deployment's first start, a rolling update that brings
    a new revision) would each create the same tables, and all but one would fail. On PostgreSQL the transaction
    first takes an advisory lock; on SQLite it begins as the writer (`BEGIN IMMEDIATE`: the driver's own transaction
    would begin only at the first row written, after the first tables). Either is held until the caller commits, and
    the next migration then finds the schema at its newest revision.
    """
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATIONS_LOCK})
    elif connection.dialect.name == "sqlite":
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    command.upgrade(alembic_config(connection, migrations), "head")


def alembic_config(connection: Connection, migrations: Path) -> Config:
    """Alembic's configuration for the script folder `migrations`, run on `connection` (each service's `env.py` takes it
    from there)."""
    config = Config()
    config.set_main_option("script_location", str(migrations))
    config.attributes["connection"] = connection
    return config


def query_histogram(registry: CollectorRegistry) -> Histogram:
    """`chatbot_db_query_duration_seconds`, by statement kind (select, insert, update, delete, other)."""
    return Histogram(
        "chatbot_db_query_duration_seconds",
        "Time the database took to answer one statement, by statement kind",
        ["operation"],
        buckets=QUERY_BUCKETS,
        registry=registry,
    )


def time_queries(engine: AsyncEngine, histogram: Histogram) -> None:
    """Observe every statement `engine` runs into `histogram` (labelled by its first SQL word)."""

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def _before(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        conn.info.setdefault("chatbot_query_started", []).append(time.perf_counter())

    @event.listens_for(engine.sync_engine, "after_cursor_execute")
    def _after(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        started = conn.info["chatbot_query_started"].pop()
        histogram.labels(_operation(statement)).observe(time.perf_counter() - started)

    @event.listens_for(engine.sync_engine, "handle_error")
    def _failed(context: Any) -> None:
        if context.connection is not None and context.connection.info.get("chatbot_query_started"):
            context.connection.info["chatbot_query_started"].pop()


def _operation(statement: str) -> str:
    word = statement.lstrip().split(None, 1)[0].lower() if statement.strip() else ""
    if word == "with":
        return "select"
    return word if word in ("select", "insert", "update", "delete") else "other"
