"""Stream, group and key names. Keys of one request share a Redis Cluster hash tag: `{request_id}`."""

from __future__ import annotations

from datetime import UTC, datetime

INFERENCE_GROUP = "inference"
"""Consumer group of the inference workers on `chat.requests`."""
CONVERSATION_GROUP = "conversation"
"""Consumer group of the conversation service on `inference.events`."""
LOG_COLLECTOR_GROUP = "log-collector"
"""Consumer group of the log collector on `inference.events`."""
INGEST_GROUP = "ingest"
"""Consumer group of the ingestion workers on `kb.ingest`."""

DATA_FIELD = "__data__"
"""The one field of every stream entry: the msgspec-encoded message (FastStream reads it raw)."""
DATA_FIELD_BYTES = DATA_FIELD.encode()


SPEND_TTL_S = {"day": 2 * 86_400, "week": 8 * 86_400, "month": 32 * 86_400}
"""How long a budget period's spend is kept: a little longer than the period itself."""


def period_label(period: str, now: datetime | None = None) -> str:
    """The current budget period's name (UTC): `2026-11-24`, `2026-W48` or `2026-11`."""
    moment = now or datetime.now(UTC)
    if period == "day":
        return moment.strftime("%Y-%m-%d")
    if period == "week":
        year, week, _ = moment.isocalendar()
        return f"{year}-W{week:02d}"
    return moment.strftime("%Y-%m")


class Keys:
    """Every Redis name the platform uses, under an optional namespace (`CHATBOT_REDIS_NAMESPACE`).

    A namespace lets several deployments, or several test runs, share one Redis.
    """

    __slots__ = ("cancel_channel", "chat_requests", "dead_letters", "inference_events", "ingest", "namespace", "workers")

    def __init__(self, namespace: str = "") -> None:
        self.namespace = namespace
        self.chat_requests = f"{namespace}chat.requests"
        """Work queue of `ChatRequest`s."""
        self.dead_letters = f"{namespace}chat.requests.dead"
        """Requests that failed on every attempt."""
        self.inference_events = f"{namespace}inference.events"
        """`InferenceEvent`s of every generation."""
        self.workers = f"{namespace}chat.workers"
        """Sorted set: inference worker name -> Unix time of its last heartbeat."""
        self.cancel_channel = f"{namespace}chat.cancel"
        """Pub/Sub channel: request ids whose clients cancelled (each worker listens; the flag key is the durable copy)."""
        self.ingest = f"{namespace}kb.ingest"
        """Work queue of `IngestJob`s: documents to extract, chunk, embed and store."""

    def request_stream(self, request_id: str) -> str:
        """The stream of one request's `StreamEvent`s."""
        return f"{self.namespace}chat.stream.{{{request_id}}}"

    def kb_progress(self, knowledge_base_id: str) -> str:
        """A knowledge base's `Progress` events: its documents' states as they change."""
        return f"{self.namespace}kb.progress.{{{knowledge_base_id}}}"

    def request_owner(self, request_id: str) -> str:
        """Who made the request (its owner), so only they may resume or cancel it; expires with its stream."""
        return f"{self.namespace}chat.owner.{{{request_id}}}"

    def rate(self, owner: str, key_id: str | None, kind: str) -> str:
        """A per-minute bucket (`rpm` or `tpm`) of an API key, or (`key_id` None) of its owner as a whole.

        One owner's buckets share a hash tag, so one script can take from a key's and its owner's together.
        """
        scope = f".key.{key_id}" if key_id is not None else ""
        return f"{self.namespace}ratelimit.{{{owner}}}{scope}.{kind}"

    def spend(self, key_id: str, period: str, label: str | None = None) -> str:
        """What a key has spent or reserved (US dollars) in its current budget period (`day`, `week` or `month`), or in
        the period named by `label`."""
        return f"{self.namespace}spend.{{{key_id}}}.{label or period_label(period)}"

    def open_streams(self, key_id: str) -> str:
        """Sorted set: the streams an API key has open on any gateway (a member per stream -> until when it may run)."""
        return f"{self.namespace}chat.streams.{{{key_id}}}"

    def inflight(self, key_id: str) -> str:
        """Sorted set: the requests an API key has running (request id -> deadline)."""
        return f"{self.namespace}chat.inflight.{{{key_id}}}"

    def idempotency(self, owner: str, digest: str) -> str:
        """The request an owner's `Idempotency-Key` (by its digest) started."""
        return f"{self.namespace}chat.idempotency.{{{owner}}}.{digest}"

    def cache_entry(self, scope: str, digest: str) -> str:
        """A cached answer of a scope (an owner, or `shared`), by the digest of its normalized request."""
        return f"{self.namespace}cache.{{{scope}}}.{digest}"

    def cache_index(self, scope: str) -> str:
        """Set: the keys of a scope's cached answers (what a purge deletes)."""
        return f"{self.namespace}cache.{{{scope}}}.index"

    def stored_response(self, owner: str, response_id: str) -> str:
        """A response of the Responses API kept (`store`) for `previous_response_id` and `GET /v1/responses/{id}`;
        under its owner's name, so another owner's id is simply not found."""
        return f"{self.namespace}responses.{{{owner}}}.{response_id}"

    def cancel_flag(self, request_id: str) -> str:
        """Set when the client cancels the request; a worker checks it before generating."""
        return f"{self.namespace}chat.cancel.{{{request_id}}}"

    def attempts(self, request_id: str) -> str:
        """How many times a worker has started the request (a claim after a crash starts it again)."""
        return f"{self.namespace}chat.attempts.{{{request_id}}}"

    @property
    def internal_nonce_prefix(self) -> str:
        """Prefix of the nonces of signed internal calls already taken (`internal.nonce.<nonce>`, a minute each)."""
        return f"{self.namespace}internal.nonce."

    def auth_failures(self, address: str) -> str:
        """Unknown API keys a client address presented this minute."""
        return f"{self.namespace}authfail.{{{address}}}"

    def gateway_wake(self, gateway: str) -> str:
        """A gateway's own stream, written to interrupt its blocking read when it has a new stream to follow."""
        return f"{self.namespace}gateway.wake.{gateway}"
