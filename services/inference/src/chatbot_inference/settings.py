"""Inference worker settings, each read from one environment variable."""

from __future__ import annotations

import os
import socket

import msgspec

from chatbot_contracts.observability import MetricsSettings
from chatbot_contracts.redis import RedisSettings
from chatbot_contracts.settings import from_env


class WorkerSettings(msgspec.Struct, kw_only=True, frozen=True):
    """What a worker takes on and how it reports."""

    models_file: str = "config/models.toml"
    """`CHATBOT_MODELS_FILE`: the model registry (TOML)."""
    registry_poll_s: float = 2.0
    """`CHATBOT_REGISTRY_POLL_S`: how often the registry file is checked for changes (SIGHUP reloads at once)."""
    worker_name: str = ""
    """`CHATBOT_WORKER_NAME`: this worker's consumer name in group `inference` (default: host-pid)."""
    write_window_ms: float = 10.0
    """`CHATBOT_WRITE_WINDOW_MS`: how long a write round to Redis waits for more streams' tokens before it goes (a stream's
    first write goes at once): fewer, fuller rounds at moderate load, for at most this much more latency per token."""
    worker_concurrency: int = 128
    """`CHATBOT_WORKER_CONCURRENCY`: generations one worker runs at once; it reads no more than that."""
    stream_ttl_s: int = 3600
    """`CHATBOT_STREAM_TTL_S`: how long a finished request's stream stays readable."""
    events_maxlen: int = 1_000_000
    """`CHATBOT_EVENTS_MAXLEN`: approximate length the `inference.events` stream is trimmed to."""
    heartbeat_s: float = 2.0
    """`CHATBOT_HEARTBEAT_S`: how often the worker announces that it is alive."""
    metrics_port: int = 9101
    """`CHATBOT_METRICS_PORT`: where the worker serves Prometheus `/metrics` (0: nowhere)."""
    max_attempts: int = 3
    """`CHATBOT_MAX_ATTEMPTS`: workers that may start a request (after crashes) before it goes to the dead letters."""
    claim_idle_s: float = 10.0
    """`CHATBOT_CLAIM_IDLE_S`: a request untouched this long is taken over from its (dead) worker."""
    redis_outage_s: float = 10.0
    """`CHATBOT_REDIS_OUTAGE_S`: how long running generations keep their answers for Redis to come back (a failover)
    before they are left to a takeover."""
    shutdown_grace_s: float = 30.0
    """`CHATBOT_SHUTDOWN_GRACE_S`: on SIGTERM, how long running generations may finish before they are left to others."""
    log_level: str = "INFO"
    """`CHATBOT_LOG_LEVEL`: DEBUG, INFO, WARNING or ERROR."""
    log_content: bool = False
    """`CHATBOT_LOG_CONTENT`: also log each generation's prompt and answer (off: message content is never logged)."""

    @property
    def consumer_name(self) -> str:
        return self.worker_name or f"{socket.gethostname()}-{os.getpid()}"


class ProviderSettings(msgspec.Struct, kw_only=True, frozen=True):
    """How providers are called."""

    provider_retries: int = 2
    """`CHATBOT_PROVIDER_RETRIES`: retries of a retryable failure before the next fallback."""
    retry_base_s: float = 0.5
    """`CHATBOT_RETRY_BASE_S`: the first backoff; it doubles per retry, with full jitter."""
    retry_max_s: float = 8.0
    """`CHATBOT_RETRY_MAX_S`: the longest backoff (a provider's Retry-After wins if longer, up to 60 s)."""
    connect_timeout_s: float = 10.0
    """`CHATBOT_CONNECT_TIMEOUT_S`: time to connect to a provider (TLS and a proxy's tunnel included), or to wait for a free
    connection when `CHATBOT_PROVIDER_CONNECTIONS` are in use."""
    provider_connections: int = 0
    """`CHATBOT_PROVIDER_CONNECTIONS`: connections a worker holds at most to one provider origin (scheme, host, port);
    0, the default, is the worker's concurrency, so that no call waits for another's connection."""
    first_token_timeout_s: float = 120.0
    """`CHATBOT_FIRST_TOKEN_TIMEOUT_S`: longest wait for an answer's first token (a model's `first_token_timeout_s` wins)."""
    idle_timeout_s: float = 120.0
    """`CHATBOT_IDLE_TIMEOUT_S`: longest silence between two tokens (a model's `idle_timeout_s` wins)."""
    limit_wait_s: float = 30.0
    """`CHATBOT_LIMIT_WAIT_S`: longest wait for a model's rpm/tpm/concurrency limit before failing as rate limited."""


class Settings(msgspec.Struct, kw_only=True, frozen=True):
    worker: WorkerSettings
    providers: ProviderSettings
    redis: RedisSettings
    metrics: MetricsSettings

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        return cls(
            worker=from_env(WorkerSettings, environ=environ),
            providers=from_env(ProviderSettings, environ=environ),
            redis=from_env(RedisSettings, environ=environ),
            metrics=from_env(MetricsSettings, environ=environ),
        )
