"""Stream, group and key names.

Keys of one request share a Redis Cluster hash tag: `{request_id}` with one partition, its partition's tag with
several (`CHATBOT_STREAM_PARTITIONS`), so that a gateway reads every stream of a partition in one XREAD and a request's
keys and its partition of `chat.requests` sit in one slot.
"""

from __future__ import annotations

import zlib
from datetime import UTC, datetime
from functools import cache

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

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


@cache
def partition_tags(partitions: int) -> tuple[str, ...]:
    """A hash tag per partition, the i-th hashing into the i-th of `partitions` equal ranges of slots: a cluster's
    masters hold contiguous ranges, so the partitions spread over them as evenly as the slots do."""
    tags = []
    for i in range(partitions):
        low, high = i * REDIS_CLUSTER_HASH_SLOTS // partitions, (i + 1) * REDIS_CLUSTER_HASH_SLOTS // partitions
        tags.append(next(tag for n in range(1_000_000) if low <= key_slot((tag := f"p{i}.{n}").encode()) < high))
    return tuple(tags)


class Keys:
    """Every Redis name the platform uses, under an optional namespace (`CHATBOT_REDIS_NAMESPACE`).

    A namespace lets several deployments, or several test runs, share one Redis. With several `partitions`, the
    shared streams (`chat.requests`, `inference.events`) are one per partition, and a request belongs to the
    partition its id hashes to.
    """

    __slots__ = (
        "cancel_channel",
        "chat_requests",
        "dead_letters",
        "events_partitions",
        "inference_events",
        "ingest",
        "namespace",
        "partitions",
        "requests_partitions",
        "tags",
        "workers",
    )

    def __init__(self, namespace: str = "", partitions: int = 1) -> None:
        if partitions < 1:
            raise ValueError(f"a deployment has at least one stream partition, not {partitions}")
        self.namespace = namespace
        self.partitions = partitions
        self.tags = partition_tags(partitions) if partitions > 1 else ()
        """Each partition's hash tag (none with one partition)."""
        self.requests_partitions = [f"{namespace}chat.requests" + (f".{{{tag}}}" if partitions > 1 else "") for tag in self.tags or ("",)]
        """Work queue of `ChatRequest`s, one stream per partition."""
        self.events_partitions = [f"{namespace}inference.events" + (f".{{{tag}}}" if partitions > 1 else "") for tag in self.tags or ("",)]
        """`InferenceEvent`s of every generation, one stream per partition (a request's events all in its own)."""
        self.chat_requests = self.requests_partitions[0]
        """The work queue with one partition."""
        self.dead_letters = f"{namespace}chat.requests.dead"
        """Requests that failed on every attempt."""
        self.inference_events = self.events_partitions[0]
        """The events with one partition."""
        self.workers = f"{namespace}chat.workers"
        """Sorted set: inference worker name -> Unix time of its last heartbeat."""
        self.cancel_channel = f"{namespace}chat.cancel"
        """Pub/Sub channel: request ids whose clients cancelled (each worker listens; the flag key is the durable copy)."""
        self.ingest = f"{namespace}kb.ingest"
        """Work queue of `IngestJob`s: documents to extract, chunk, embed and store."""

    def partition_of(self, request_id: str) -> int:
        """The partition a request belongs to (stable for its id: every process computes the same)."""
        return zlib.crc32(request_id.encode()) % self.partitions if self.partitions > 1 else 0

    def requests_for(self, request_id: str) -> str:
        """The partition of `chat.requests` a request is enqueued on."""
        return self.requests_partitions[self.partition_of(request_id)]

    def events_for(self, request_id: str) -> str:
        """The partition of `inference.events` a request's events go to."""
        return self.events_partitions[self.partition_of(request_id)]

    def _request(self, request_id: str) -> str:
        """`{request_id}`, or with several partitions `{partition tag}.request_id`."""
        if self.partitions == 1:
            return f"{{{request_id}}}"
        return f"{{{self.tags[self.partition_of(request_id)]}}}.{request_id}"

    def request_stream(self, request_id: str) -> str:
        """The stream of one request's `StreamEvent`s."""
        return f"{self.namespace}chat.stream.{self._request(request_id)}"

    def kb_progress(self, knowledge_base_id: str) -> str:
        """A knowledge base's `Progress` events: its documents' states as they change."""
        return f"{self.namespace}kb.progress.{{{knowledge_base_id}}}"

    def request_owner(self, request_id: str) -> str:
        """Who made the request (its owner), so only they may resume or cancel it; expires with its stream."""
        return f"{self.namespace}chat.owner.{self._request(request_id)}"

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
        return f"{self.namespace}chat.cancel.{self._request(request_id)}"

    def attempts(self, request_id: str) -> str:
        """How many times a worker has started the request (a claim after a crash starts it again)."""
        return f"{self.namespace}chat.attempts.{self._request(request_id)}"

    def spared_attempts(self, request_id: str) -> str:
        """How many of the request's attempts ended because Redis could not be written (they do not count against
        `CHATBOT_MAX_ATTEMPTS`)."""
        return f"{self.namespace}chat.spared.{self._request(request_id)}"

    @property
    def internal_nonce_prefix(self) -> str:
        """Prefix of the nonces of signed internal calls already taken (`internal.nonce.<nonce>`, a minute each)."""
        return f"{self.namespace}internal.nonce."

    def auth_failures(self, address: str) -> str:
        """Unknown API keys a client address presented this minute."""
        return f"{self.namespace}authfail.{{{address}}}"

    def gateway_wake(self, gateway: str, partition: int | None = None) -> str:
        """A gateway's own stream, written to interrupt its blocking read when it has a new stream to follow; a
        partition's (in its slot, so that it is read with the partition's streams) when its streams are read apart."""
        if partition is None or self.partitions == 1:
            return f"{self.namespace}gateway.wake.{gateway}"
        return f"{self.namespace}gateway.wake.{{{self.tags[partition]}}}.{gateway}"
