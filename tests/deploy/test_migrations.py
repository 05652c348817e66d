"""Replicas that start together on one database: each service migrates it at start, and none may fail for the others;
and each migration keeps what the replicas of the revision before it, still serving during a rolling update, use."""

from __future__ import annotations

import asyncio
import itertools
import sys
from pathlib import Path

import pytest
import sqlalchemy
from alembic import command
from alembic.script import ScriptDirectory

from chatbot_contracts.database import alembic_config, open_engine
from chatbot_conversation.db.engine import MIGRATIONS as CONVERSATION_MIGRATIONS
from chatbot_gateway.apikeys.store import MIGRATIONS as GATEWAY_MIGRATIONS
from chatbot_log_collector.store import MIGRATIONS as LOG_COLLECTOR_MIGRATIONS

MIGRATE = """
import asyncio, sys
from chatbot_conversation.db.engine import Database
from chatbot_gateway.apikeys.store import KeyStore
from chatbot_log_collector.store import EventStore

async def main(service: str, url: str) -> None:
    store = {"conversation": lambda: Database(url), "gateway": lambda: KeyStore("sk-admin-0123456789abcdef", url),
             "log-collector": lambda: EventStore(url)}[service]()
    try:
        await store.migrate()
    finally:
        await store.close()

asyncio.run(main(*sys.argv[1:]))
"""

REPLICAS = 3


async def test_replicas_of_every_service_migrate_one_database_at_once(database_url: str) -> None:
    """A deployment's first start (or a rolling update that brings a new revision) starts several replicas of each
    service at the same moment. Without one migration at a time they each create the same tables and all but one
    fail (before `upgrade` took its lock, three to five of these nine failed in each of four runs, on both)."""
    services = ("conversation", "gateway", "log-collector")
    replicas = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", MIGRATE, service, database_url, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        for _ in range(REPLICAS)
        for service in services
    ]
    outputs = await asyncio.wait_for(asyncio.gather(*(replica.communicate() for replica in replicas)), 120)
    failed = []
    for replica, (output, _) in zip(replicas, outputs, strict=True):
        if replica.returncode:
            lines = output.decode().strip().splitlines() or ["(no output)"]
            failed.append(next((line for line in reversed(lines) if "Error" in line), lines[-1]))
    assert not failed, f"{len(failed)} of {len(replicas)} replicas failed to migrate: {failed}"
    engine = open_engine(database_url)
    try:
        async with engine.connect() as connection:
            tables = set(await connection.run_sync(lambda sync: sqlalchemy.inspect(sync).get_table_names()))
    finally:
        await engine.dispose()
    assert {"conversations", "api_keys", "usage_events"} <= tables, f"every service's schema is there: {sorted(tables)}"


Schema = dict[str, dict[str, tuple[bool, bool]]]
"""Each table's columns: whether each may be null, and whether the database gives it a default."""


def _schema(connection: sqlalchemy.Connection) -> Schema:
    inspector = sqlalchemy.inspect(connection)
    return {
        table: {column["name"]: (column["nullable"], column.get("default") is not None) for column in inspector.get_columns(table)}
        for table in inspector.get_table_names()
    }


def _schemas_by_revision(connection: sqlalchemy.Connection, migrations: Path) -> list[tuple[str, Schema]]:
    """The schema after each revision of `migrations`, oldest first, migrating one revision at a time."""
    config = alembic_config(connection, migrations)
    revisions = [script.revision for script in reversed(list(ScriptDirectory.from_config(config).walk_revisions()))]
    schemas = [("(none)", _schema(connection))]
    for revision in revisions:
        command.upgrade(config, revision)
        schemas.append((revision, _schema(connection)))
    return schemas


def _breaks(before: Schema, after: Schema) -> list[str]:
    """What a migration from `before` to `after` does that code written for `before` cannot live with."""
    problems = []
    for table, columns in before.items():
        if table not in after:
            problems.append(f"table {table} is gone")
            continue
        for name, (nullable, _) in columns.items():
            if name not in after[table]:
                problems.append(f"column {table}.{name} is gone (dropped or renamed)")
            elif nullable and not after[table][name][0] and not after[table][name][1]:
                problems.append(f"column {table}.{name} may no longer be null, and has no default")
        for name, (nullable, defaulted) in after[table].items():
            if name not in columns and not nullable and not defaulted:
                problems.append(f"new column {table}.{name} may not be null and has no default: older code's inserts fail")
    return problems


@pytest.mark.parametrize(
    "migrations",
    [CONVERSATION_MIGRATIONS, GATEWAY_MIGRATIONS, LOG_COLLECTOR_MIGRATIONS],
    ids=["conversation", "gateway", "log-collector"],
)
async def test_every_migration_only_adds_what_older_replicas_can_live_with(database_url: str, migrations: Path) -> None:
    """A rolling update runs the new revision's migration (its first replica, at start) while replicas of the old one
    still serve: a table or column they use must not go or be renamed, and a column they do not know of must take rows
    without it. A migration that must remove something goes in two releases: the code stops using it, then a later
    migration drops it, and this test is changed to allow that one removal."""
    engine = open_engine(database_url)
    try:
        async with engine.begin() as connection:
            schemas: list[tuple[str, Schema]] = await connection.run_sync(_schemas_by_revision, migrations)
    finally:
        await engine.dispose()
    assert len(schemas) > 1 and schemas[-1][1], "the migrations made the schema"
    problems = [
        f"{revision}: {problem}" for (_, before), (revision, after) in itertools.pairwise(schemas) for problem in _breaks(before, after)
    ]
    assert not problems, problems
