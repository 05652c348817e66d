"""Log collector settings, each read from one environment variable."""

from __future__ import annotations

import os
import socket

import msgspec

from chatbot_contracts.observability import MetricsSettings
from chatbot_contracts.redis import RedisSettings
from chatbot_contracts.settings import from_env
from chatbot_contracts.signing import SigningSettings, check_secret


class ServerSettings(msgspec.Struct, kw_only=True, frozen=True):
    """The internal HTTP server and the event consumer."""

    log_collector_host: str = "127.0.0.1"
    """`CHATBOT_LOG_COLLECTOR_HOST`: the address to listen on."""
    log_collector_port: int = 8002
    """`CHATBOT_LOG_COLLECTOR_PORT`: the port of the internal API (only the gateway's signed calls are answered)."""
    log_collector_metrics_port: int = 9103
    """`CHATBOT_LOG_COLLECTOR_METRICS_PORT`: where Prometheus `/metrics` is served, apart from the API (0: nowhere)."""
    consumer_name: str = ""
    """`CHATBOT_CONSUMER_NAME`: this replica's name in its consumer group (default: host-pid)."""
    log_level: str = "INFO"
    """`CHATBOT_LOG_LEVEL`: DEBUG, INFO, WARNING or ERROR."""

    @property
    def consumer(self) -> str:
        return self.consumer_name or f"{socket.gethostname()}-{os.getpid()}"


class StoreSettings(msgspec.Struct, kw_only=True, frozen=True):
    """The event table and the aggregates."""

    log_database_url: str = "sqlite:///.data/usage.db"
    """`CHATBOT_LOG_DATABASE_URL`: SQLite (embedded default) or `postgresql://…`; may be the conversations' database."""
    log_retention_days: float = 30.0
    """`CHATBOT_LOG_RETENTION_DAYS`: how long raw events are kept (the request log, the export)."""
    usage_retention_days: float = 400.0
    """`CHATBOT_USAGE_RETENTION_DAYS`: how long the per-minute aggregates are kept (the usage API)."""
    log_batch_size: int = 500
    """`CHATBOT_LOG_BATCH_SIZE`: events read and stored per transaction at most."""
    log_gather_s: float = 0.2
    """`CHATBOT_LOG_GATHER_S`: after a batch smaller than the batch size, wait this long before reading on (fewer, larger transactions)."""
    log_claim_idle_s: float = 60.0
    """`CHATBOT_LOG_CLAIM_IDLE_S`: events read by a collector that then died are taken over after this long."""


class Settings(msgspec.Struct, kw_only=True, frozen=True):
    server: ServerSettings
    store: StoreSettings
    redis: RedisSettings
    metrics: MetricsSettings
    signing: SigningSettings

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        settings = cls(
            server=from_env(ServerSettings, environ=environ),
            store=from_env(StoreSettings, environ=environ),
            redis=from_env(RedisSettings, environ=environ),
            metrics=from_env(MetricsSettings, environ=environ),
            signing=from_env(SigningSettings, environ=environ),
        )
        check_secret(settings.signing.internal_secret)
        return settings
