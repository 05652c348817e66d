"""Gateway settings, each read from one environment variable."""

from __future__ import annotations

import msgspec

from chatbot_contracts.observability import MetricsSettings
from chatbot_contracts.redis import RedisSettings
from chatbot_contracts.settings import from_env
from chatbot_contracts.signing import SigningSettings, check_secret

MIN_ADMIN_KEY_CHARS = 24


class ServerSettings(msgspec.Struct, kw_only=True, frozen=True):
    """The HTTP server."""

    gateway_host: str = "127.0.0.1"
    """`CHATBOT_GATEWAY_HOST`: the address to listen on (`0.0.0.0` in containers)."""
    gateway_port: int = 8000
    """`CHATBOT_GATEWAY_PORT`: the port to listen on."""
    gateway_metrics_port: int = 9100
    """`CHATBOT_GATEWAY_METRICS_PORT`: where Prometheus `/metrics` is served, apart from the API (0: nowhere)."""
    max_body_bytes: int = 4_000_000
    """`CHATBOT_MAX_BODY_BYTES`: larger request bodies are refused with 413."""
    kb_max_document_bytes: int = 16_000_000
    """`CHATBOT_KB_MAX_DOCUMENT_BYTES`: a larger document uploaded to a knowledge base is refused with 413."""
    max_url_bytes: int = 8192
    """`CHATBOT_MAX_URL_BYTES`: longer URLs (path and query) are refused with 414."""
    max_header_bytes: int = 32_768
    """`CHATBOT_MAX_HEADER_BYTES`: larger request headers are refused with 431."""
    log_level: str = "INFO"
    """`CHATBOT_LOG_LEVEL`: DEBUG, INFO, WARNING or ERROR."""
    cors_origins: str = ""
    """`CHATBOT_CORS_ORIGINS`: comma-separated origins allowed to call the API from a browser (none by default)."""
    shutdown_grace_s: float = 10.0
    """`CHATBOT_SHUTDOWN_GRACE_S`: on SIGTERM, how long open streams may go on (clients then resume on another gateway)."""
    web_dist: str = "web/dist"
    """`CHATBOT_WEB_DIST`: the built web UI, served at `/` when it exists."""


class AuthSettings(msgspec.Struct, kw_only=True, frozen=True):
    """Who may call the API."""

    admin_key: str = ""
    """`CHATBOT_ADMIN_KEY`: the bootstrap admin's API key (required)."""
    database_url: str = "sqlite:///.data/conversations.db"
    """`CHATBOT_DATABASE_URL`: where API keys are kept (hashed); the same database as the conversations by default."""
    auth_failures_per_minute: int = 30
    """`CHATBOT_AUTH_FAILURES_PER_MINUTE`: invalid keys one client address may present a minute; past it, 429 (0: no bound)."""
    trusted_proxy_header: str = ""
    """`CHATBOT_TRUSTED_PROXY_HEADER`: a header the proxy in front writes the client's address into (e.g. `x-forwarded-for`;
    its last entry is taken). Unset: the peer's address. Set it only behind a proxy that overwrites it."""


class ChatSettings(msgspec.Struct, kw_only=True, frozen=True):
    """How chat requests are queued and awaited."""

    models_file: str = "config/models.toml"
    """`CHATBOT_MODELS_FILE`: the model registry (TOML)."""
    registry_poll_s: float = 2.0
    """`CHATBOT_REGISTRY_POLL_S`: how often the registry file is checked for changes (SIGHUP reloads at once)."""
    request_timeout_s: float = 600.0
    """`CHATBOT_REQUEST_TIMEOUT_S`: a request's deadline, from the moment it is enqueued."""
    requests_maxlen: int = 100_000
    """`CHATBOT_REQUESTS_MAXLEN`: approximate length the `chat.requests` stream is trimmed to."""
    events_maxlen: int = 1_000_000
    """`CHATBOT_EVENTS_MAXLEN`: approximate length the `inference.events` stream is trimmed to."""
    cache_ttl_s: int = 3600
    """`CHATBOT_CACHE_TTL_S`: how long an answer cached at a request's ask (`x-chatbot-cache: use`) is kept, for an alias
    without `cache_ttl_s` of its own."""
    responses_ttl_s: int = 30 * 86_400
    """`CHATBOT_RESPONSES_TTL_S`: how long a stored response of the Responses API (`store: true`) is kept."""
    worker_stale_s: float = 15.0
    """`CHATBOT_WORKER_STALE_S`: a worker whose heartbeat is older is not counted as alive."""
    stream_ttl_s: int = 3600
    """`CHATBOT_STREAM_TTL_S`: how long a finished answer's stream stays readable (for resuming)."""
    max_messages: int = 1000
    max_images: int = 16
    """`CHATBOT_MAX_IMAGES`: images one request may show the model (more are refused with 422)."""
    max_image_bytes: int = 3_000_000
    """`CHATBOT_MAX_IMAGE_BYTES`: the largest image sent inline (a `data:` URL; `CHATBOT_MAX_BODY_BYTES` bounds the body
    it comes in)."""
    """`CHATBOT_MAX_MESSAGES`: longer conversations in one request are refused with 422."""
    max_queue_lag: int = 1000
    """`CHATBOT_MAX_QUEUE_LAG`: requests waiting for a worker beyond which new ones get 503 (nothing is enqueued); each
    stream partition takes its share."""
    max_queue_pending: int = 10_000
    """`CHATBOT_MAX_QUEUE_PENDING`: requests being generated beyond which new ones get 503."""
    overload_retry_after_s: int = 2
    """`CHATBOT_OVERLOAD_RETRY_AFTER_S`: the Retry-After of an overload 503."""
    max_inflight_per_key: int = 64
    """`CHATBOT_MAX_INFLIGHT_PER_KEY`: requests one key may have running at once, over every gateway (an admin may set
    another bound per key; 0: no bound); past it, 429."""
    max_streams_per_key: int = 256
    """`CHATBOT_MAX_STREAMS_PER_KEY`: streams one key may have open at once, over every gateway (new, resumed and
    replayed alike; an admin may set another bound per key; 0: no bound); past it, 429."""
    redis_outage_s: float = 10.0
    """`CHATBOT_REDIS_OUTAGE_S`: how long a stream waits for Redis to come back before ending with an error."""
    max_streams: int = 10_000
    """`CHATBOT_MAX_STREAMS`: streams one gateway follows at once; past it, new ones get 503 (nothing is enqueued)."""
    keepalive_s: float = 15.0
    """`CHATBOT_KEEPALIVE_S`: a `: keepalive` comment is sent after this much silence on a stream."""
    conversation_url: str = "http://127.0.0.1:8001"
    """`CHATBOT_CONVERSATION_URL`: the conversation service's internal API."""
    ready_without_workers: bool = False
    """`CHATBOT_READY_WITHOUT_WORKERS`: `/readyz` passes with no live worker (workers scaled to zero by queue lag wake up on requests)."""
    log_collector_url: str = "http://127.0.0.1:8002"
    """`CHATBOT_LOG_COLLECTOR_URL`: the log collector's internal API (usage, request logs)."""


class Settings(msgspec.Struct, kw_only=True, frozen=True):
    server: ServerSettings
    auth: AuthSettings
    chat: ChatSettings
    redis: RedisSettings
    metrics: MetricsSettings
    signing: SigningSettings

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        settings = cls(
            server=from_env(ServerSettings, environ=environ),
            auth=from_env(AuthSettings, environ=environ),
            chat=from_env(ChatSettings, environ=environ),
            redis=from_env(RedisSettings, environ=environ),
            metrics=from_env(MetricsSettings, environ=environ),
            signing=from_env(SigningSettings, environ=environ),
        )
        check_secret(settings.signing.internal_secret)
        if len(settings.auth.admin_key) < MIN_ADMIN_KEY_CHARS:
            raise ValueError(
                f"CHATBOT_ADMIN_KEY must be set to at least {MIN_ADMIN_KEY_CHARS} characters: the gateway needs an admin API key hard to guess"
            )
        return settings
