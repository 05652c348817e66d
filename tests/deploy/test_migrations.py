"""Replicas that start together on one database: each service migrates it at start, and none may fail for the others."""

from __future__ import annotations

import asyncio
import sys

import sqlalchemy

from chatbot_contracts.database import open_engine

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
