"""Alembic environment of the log collector's tables (its own version table, so it can share a database)."""

from __future__ import annotations

from alembic import context

from chatbot_log_collector.table import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, version_table="log_collector_alembic_version")
with context.begin_transaction():
    context.run_migrations()
