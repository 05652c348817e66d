"""Alembic environment of the gateway's tables (its own version table beside the conversation service's)."""

from __future__ import annotations

from alembic import context

from chatbot_gateway.apikeys.table import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, version_table="gateway_alembic_version")
with context.begin_transaction():
    context.run_migrations()
