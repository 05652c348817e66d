"""Log collector settings, each read from one environment variable."""

from __future__ import annotations

import os
import socket

import msgspec

from chatbot_contracts.redis import RedisSettings
from chatbot_contracts.settings import from_env


class ServerSettings(msgspec.Struct, kw_only=True, frozen=True):
    """The internal HTTP server and the event consumer."""

    log_collector_host: str = "127.0.0.1"
    """`CHATBOT_LOG_COLLECTOR_HOST`: the address to listen on."""
    log_collector_port: int = 8002
    """`CHATBOT_LOG_COLLECTOR_PORT`: the port of the internal API."""
    consumer_name: str = ""
    """`CHATBOT_CONSUMER_NAME`: this replica's name in its consumer group (default: host-pid)."""
    log_level: str = "INFO"
    """`CHATBOT_LOG_LEVEL`: DEBUG, INFO, WARNING or ERROR."""

    @property
    def consumer(self) -> str:
        return self.consumer_name or f"{socket.gethostname()}-{os.getpid()}"


class Settings(msgspec.Struct, kw_only=True, frozen=True):
    server: ServerSettings
    redis: RedisSettings

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        return cls(server=from_env(ServerSettings, environ=environ), redis=from_env(RedisSettings, environ=environ))
