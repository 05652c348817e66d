"""Conversation service settings, each read from one environment variable."""

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

    conversation_host: str = "127.0.0.1"
    """`CHATBOT_CONVERSATION_HOST`: the address to listen on."""
    conversation_port: int = 8001
    """`CHATBOT_CONVERSATION_PORT`: the port of the internal API (only the gateway's signed calls are answered)."""
    conversation_metrics_port: int = 9102
    """`CHATBOT_CONVERSATION_METRICS_PORT`: where Prometheus `/metrics` is served, apart from the API (0: nowhere)."""
    consumer_name: str = ""
    """`CHATBOT_CONSUMER_NAME`: this replica's name in its consumer group (default: host-pid)."""
    log_level: str = "INFO"
    """`CHATBOT_LOG_LEVEL`: DEBUG, INFO, WARNING or ERROR."""
    events_claim_idle_s: float = 60.0
    """`CHATBOT_EVENTS_CLAIM_IDLE_S`: events read by a replica that then died are taken over after this long."""

    @property
    def consumer(self) -> str:
        return self.consumer_name or f"{socket.gethostname()}-{os.getpid()}"


class StoreSettings(msgspec.Struct, kw_only=True, frozen=True):
    """Where conversations are kept and what they may hold."""

    database_url: str = "sqlite:///.data/conversations.db"
    """`CHATBOT_DATABASE_URL`: SQLite (embedded default) or `postgresql://…` (asyncpg)."""
    database_read_url: str = ""
    """`CHATBOT_DATABASE_READ_URL`: a read replica for queries (default: the primary)."""
    models_file: str = "config/models.toml"
    """`CHATBOT_MODELS_FILE`: the model registry (context windows for trimming, the default model)."""
    max_message_chars: int = 200_000
    """`CHATBOT_MAX_MESSAGE_CHARS`: longer messages are refused with 413 (imported ones too)."""
    attachments_dir: str = ".data/attachments"
    """`CHATBOT_ATTACHMENTS_DIR`: where the images shown with messages are kept (a folder every conversation service
    process reaches: one volume shared by the replicas), unless they go to an S3-compatible bucket."""
    max_context_images: int = 16
    """`CHATBOT_MAX_CONTEXT_IMAGES`: earlier turns' images shown to the model again, the newest first..."""
    max_context_image_bytes: int = 8_000_000
    """`CHATBOT_MAX_CONTEXT_IMAGE_BYTES`: ...as long as their bytes add up to no more than this (a turn's own images
    always go)."""
    attachments_s3_bucket: str = ""
    """`CHATBOT_ATTACHMENTS_S3_BUCKET`: keep them in this bucket of an S3-compatible store instead (credentials as
    botocore finds them: `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, a profile, an instance role)."""
    attachments_s3_prefix: str = "attachments/"
    """`CHATBOT_ATTACHMENTS_S3_PREFIX`: the keys' prefix in that bucket."""
    attachments_s3_endpoint: str = ""
    """`CHATBOT_ATTACHMENTS_S3_ENDPOINT`: the store's URL (MinIO, Ceph, R2, …; empty: AWS S3)."""
    attachments_s3_region: str = ""
    """`CHATBOT_ATTACHMENTS_S3_REGION`: its region (empty: botocore's default)."""
    max_import_messages: int = 50_000
    """`CHATBOT_MAX_IMPORT_MESSAGES`: an import holding more messages (ChatGPT: nodes) is refused with 413."""
    import_time_s: float = 10.0
    """`CHATBOT_IMPORT_TIME_S`: an import whose reading takes longer is refused with 413."""
    max_body_bytes: int = 4_000_000
    """`CHATBOT_MAX_BODY_BYTES`: larger request bodies are refused with 413 (the gateway's bound, by default)."""
    default_model: str = ""
    """`CHATBOT_DEFAULT_MODEL`: the alias a conversation uses when neither it nor the turn names one (default: the registry's first)."""
    title_model: str = ""
    """`CHATBOT_TITLE_MODEL`: the alias that writes titles after the first exchange (default: the question's first words)."""
    public_url: str = "http://127.0.0.1:8000"
    """`CHATBOT_PUBLIC_URL`: the gateway's address as users reach it, for share links."""


class KnowledgeSettings(msgspec.Struct, kw_only=True, frozen=True):
    """Knowledge bases: what a document may be, how it is cut and embedded, how much of it an answer is given."""

    kb_embedding_model: str = ""
    """`CHATBOT_KB_EMBEDDING_MODEL`: the `embedding` alias new knowledge bases use (default: the registry's first)."""
    kb_max_document_bytes: int = 16_000_000
    """`CHATBOT_KB_MAX_DOCUMENT_BYTES`: a larger upload is refused with 413."""
    kb_max_pages: int = 2_000
    """`CHATBOT_KB_MAX_PAGES`: a PDF with more pages fails to index, saying so."""
    kb_max_chars: int = 5_000_000
    """`CHATBOT_KB_MAX_CHARS`: a document whose text is longer fails to index, saying so."""
    kb_extract_time_s: float = 120.0
    """`CHATBOT_KB_EXTRACT_TIME_S`: reading one document's text may take this long; then it fails."""
    kb_extract_memory_mb: int = 1_024
    """`CHATBOT_KB_EXTRACT_MEMORY_MB`: the memory the process reading a document may have."""
    kb_max_knowledge_bases: int = 100
    """`CHATBOT_KB_MAX_KNOWLEDGE_BASES`: knowledge bases an owner may have."""
    kb_max_documents: int = 2_000
    """`CHATBOT_KB_MAX_DOCUMENTS`: documents a knowledge base may hold."""
    kb_chunk_chars: int = 1_000
    """`CHATBOT_KB_CHUNK_CHARS`: the longest passage, in characters."""
    kb_embed_batch: int = 32
    """`CHATBOT_KB_EMBED_BATCH`: passages embedded by one request."""
    kb_context_tokens: int = 3_000
    """`CHATBOT_KB_CONTEXT_TOKENS`: the most a grounded turn's sources take of the model's window (never more than half
    of what the window leaves for the conversation)."""
    kb_context_passages: int = 6
    """`CHATBOT_KB_CONTEXT_PASSAGES`: passages a grounded turn is given, at most."""
    ingest_claim_idle_s: float = 60.0
    """`CHATBOT_INGEST_CLAIM_IDLE_S`: a document whose ingestion worker stopped answering is taken over after this long."""
    ingest_metrics_port: int = 9104
    """`CHATBOT_INGEST_METRICS_PORT`: where an ingestion worker serves Prometheus `/metrics` (0: nowhere)."""


class Settings(msgspec.Struct, kw_only=True, frozen=True):
    server: ServerSettings
    store: StoreSettings
    knowledge: KnowledgeSettings
    redis: RedisSettings
    metrics: MetricsSettings
    signing: SigningSettings

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        settings = cls(
            server=from_env(ServerSettings, environ=environ),
            store=from_env(StoreSettings, environ=environ),
            knowledge=from_env(KnowledgeSettings, environ=environ),
            redis=from_env(RedisSettings, environ=environ),
            metrics=from_env(MetricsSettings, environ=environ),
            signing=from_env(SigningSettings, environ=environ),
        )
        check_secret(settings.signing.internal_secret)
        return settings
