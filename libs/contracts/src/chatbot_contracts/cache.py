"""The response cache's contract: which requests may be answered from it, under which key, and what an entry holds.

An entry is keyed by its scope (the owner, or `shared` when the alias says so) and a digest of
the normalized request: the alias, the messages and every generation parameter (tools included;
never the API key). The gateway reads it; the worker writes it when a generation completes.
"""

from __future__ import annotations

import hashlib
from typing import Literal

import msgspec

from .chat import ChatMessage, GenerationParams, ToolCall
from .events import FinishReason, TokenUsage
from .keys import Keys
from .registry import ModelSpec

CacheMode = Literal["use", "refresh", "skip"]
"""`x-chatbot-cache`: `use` reads and writes (whatever the sampling settings), `refresh` writes a fresh answer without
reading, `skip` neither."""
CACHE_MODES: tuple[CacheMode, ...] = ("use", "refresh", "skip")
MAX_ENTRY_BYTES = 256 << 10
"""An answer larger than this (encoded) is not cached."""
SHARED_SCOPE = "shared"


class CachedAnswer(msgspec.Struct, frozen=True, kw_only=True):
    """A completed generation as the cache keeps it."""

    model: str
    provider: str
    upstream_model: str = ""
    deployment: str | None = None
    text: str
    tool_calls: list[ToolCall] | None = None
    finish_reason: FinishReason
    usage: TokenUsage
    """What the generation used when it ran (a hit costs nothing)."""
    stored_at: float


class CachePolicy(msgspec.Struct, frozen=True):
    """What one request does with the cache."""

    key: str
    index: str
    """The scope's set of its entries' keys (what a purge deletes)."""
    ttl_s: int
    read: bool


cached_answer_decoder = msgspec.json.Decoder(CachedAnswer)
_normalized = msgspec.json.Encoder(order="sorted")


def deterministic(params: GenerationParams) -> bool:
    """Whether a request's answer is repeatable enough to cache by default: temperature 0, or a seed."""
    return params.temperature == 0 or params.seed is not None


def cache_policy(
    keys: Keys,
    spec: ModelSpec,
    alias: str,
    owner: str,
    messages: list[ChatMessage],
    params: GenerationParams,
    mode: CacheMode | None,
    default_ttl_s: int,
) -> CachePolicy | None:
    """The cache's part in a request: None when it takes none (the alias has no `cache_ttl_s` and the request does not
    ask with `use`/`refresh`, the request is not deterministic enough for the alias, or it says `skip`)."""
    if mode == "skip" or (mode is None and not spec.cache_ttl_s):
        return None
    if mode is None and not (spec.cache_any_request or deterministic(params)):
        return None
    scope = SHARED_SCOPE if spec.cache_shared else owner
    digest = hashlib.sha256(_normalized.encode([alias, messages, params])).hexdigest()
    ttl_s = int(spec.cache_ttl_s or default_ttl_s)
    return CachePolicy(keys.cache_entry(scope, digest), keys.cache_index(scope), ttl_s, read=mode != "refresh")
