"""Embedding through the platform's own path: a `purpose=embed` request on `chat.requests`, its vectors read back
from the request's stream. Usage, cost, limits per model and the inference log are the same as for
`/v1/embeddings`; the vectors come normalised (unit length), so a dot product is their cosine."""

from __future__ import annotations

import math
import time
from array import array
from typing import Any

import redis.asyncio as aioredis

from chatbot_contracts import (
    DATA_FIELD,
    DATA_FIELD_BYTES,
    ChatMessage,
    ChatRequest,
    Done,
    Embedding,
    Error,
    Keys,
    Restart,
    encode,
    new_request_id,
    stream_event_decoder,
)

BLOCK_MS = 5_000


class EmbeddingFailed(Exception):
    """The model did not give the vectors; `retryable` when trying again later may (overloaded, rate-limited, …)."""

    def __init__(self, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


RETRYABLE = {"rate_limited", "overloaded", "upstream_error", "timeout", "network", "deadline_exceeded", "internal"}


def normalised(vector: bytes) -> bytes:
    values = array("f")
    values.frombytes(vector)
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return array("f", (v / norm for v in values)).tobytes()


class Embedder:
    def __init__(self, redis: aioredis.Redis, keys: Keys, timeout_s: float = 120.0) -> None:
        self._redis = redis
        self._keys = keys
        self._timeout_s = timeout_s

    async def __call__(
        self, model: str, texts: list[str], *, owner: str, key_id: str | None, traceparent: str | None = None
    ) -> list[bytes]:
        """One float32 vector per text, in order."""
        now = time.time()
        request = ChatRequest(
            request_id=new_request_id(),
            model=model,
            messages=[ChatMessage(role="user", content=text) for text in texts],
            owner=owner,
            key_id=key_id or "knowledge-bases",
            enqueued_at=now,
            deadline=now + self._timeout_s,
            traceparent=traceparent,
            purpose="embed",
        )
        stream = self._keys.request_stream(request.request_id)
        await self._redis.xadd(self._keys.requests_for(request.request_id), {DATA_FIELD: encode(request)})
        vectors: dict[int, bytes] = {}
        after = "0-0"
        while time.time() < request.deadline:
            replies: Any = await self._redis.xread({stream: after}, count=512, block=BLOCK_MS)
            for _, entries in replies or []:
                for entry_id, fields in entries:
                    after = entry_id
                    match stream_event_decoder.decode(fields[DATA_FIELD_BYTES]):
                        case Embedding(index=index, vector=vector):
                            vectors[index] = normalised(vector)
                        case Restart():
                            vectors.clear()
                        case Error(code=code, message=message):
                            raise EmbeddingFailed(f"{model}: {message}", code in RETRYABLE)
                        case Done():
                            if len(vectors) != len(texts):
                                raise EmbeddingFailed(f"{model} gave {len(vectors)} vectors for {len(texts)} texts", True)
                            return [vectors[i] for i in range(len(texts))]
                        case _:
                            pass
        raise EmbeddingFailed(f"{model} gave no vectors within {self._timeout_s:g} s", True)
