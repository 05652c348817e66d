"""The unit of work: one chat request, as the gateway enqueues it on `chat.requests`."""

from __future__ import annotations

from typing import Any, Literal

import msgspec
import uuid_utils

Role = Literal["system", "user", "assistant", "tool"]


class FunctionCall(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    arguments: str
    """JSON text, exactly as the model wrote it."""


class ToolCall(msgspec.Struct, frozen=True, kw_only=True):
    """A tool the model asked to call (OpenAI's shape, which the other APIs map onto)."""

    id: str
    type: str = "function"
    function: FunctionCall


IMAGE_TOKENS = 1600
"""What one image is counted as: about the most a provider bills for one (Anthropic's ~1.15 megapixel cap, OpenAI's
high detail), so that limits, budgets and context windows hold for images too."""


class ImagePart(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """An image shown to the model: an `https://` URL, or a `data:<media type>;base64,` URL with the image itself."""

    url: str
    detail: str | None = None
    """OpenAI's `low`, `high` or `auto` (other providers have no such setting)."""

    @property
    def media_type(self) -> str | None:
        """The media type of a `data:` URL (None for an `https://` one)."""
        return self.url.removeprefix("data:").partition(";")[0] if self.url.startswith("data:") else None

    @property
    def data(self) -> str:
        """The base64 content of a `data:` URL."""
        return self.url.partition(",")[2]


class ThinkingBlock(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A model's own reasoning that came with an assistant turn (Anthropic's extended thinking), sent back as it came:
    its text and the signature that vouches for it, or the encrypted data of a redacted block."""

    thinking: str = ""
    signature: str | None = None
    redacted: str | None = None


class ChatMessage(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One turn of the conversation sent to the model."""

    role: Role
    content: str
    images: list[ImagePart] | None = None
    """On a user turn: images shown with its text (after it)."""
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    """On an assistant turn: the tools it called."""
    tool_call_id: str | None = None
    """On a tool turn: which call this is the result of."""
    thinking: list[ThinkingBlock] | None = None
    """On an assistant turn: the reasoning it came with, for a provider that wants it back (Anthropic); others drop it."""
    cache_control: dict[str, Any] | None = None
    """Anthropic's prompt-cache breakpoint at the end of this turn (`{"type": "ephemeral"}`); others drop it."""


class GenerationParams(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Sampling settings; `None` means the provider's default."""

    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    stop: list[str] | None = None
    seed: int | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    tools: list[dict[str, Any]] | None = None
    """The tool definitions, passed to the provider as the client wrote them (OpenAI's format)."""
    tool_choice: str | dict[str, Any] | None = None
    """OpenAI's form: `none`, `auto`, `required` or `{"type": "function", "function": {"name": …}}`."""
    parallel_tool_calls: bool | None = None
    dimensions: int | None = None
    """Of an embedding request: the length of the vectors, where the model can shorten them."""
    thinking: dict[str, Any] | None = None
    """Anthropic's extended thinking (`{"type": "enabled", "budget_tokens": …}`); refused for other providers."""
    metadata: dict[str, str] | None = None
    """Anthropic's request metadata (`user_id`); dropped for other providers."""
    betas: list[str] | None = None
    """Anthropic beta features (`anthropic-beta`); dropped for other providers."""
    tools_cache_control: dict[str, Any] | None = None
    """Anthropic's prompt-cache breakpoint after the tools; dropped for other providers."""
    response_format: dict[str, Any] | None = None
    """Structured output in OpenAI's form: `{"type": "json_object"}` or `{"type": "json_schema", "json_schema": {"name", "schema", "strict"}}`
    (plain text is `None`); each adapter maps it to its provider's own mechanism."""


def new_request_id() -> str:
    """A new request's id: a UUIDv7 (RFC 9562) in 32 hex digits, its first 48 bits the time in milliseconds, the
    rest random (74 bits).

    Time-ordered, so that the rows keyed by it go in at the end of their indexes, not anywhere in them: the request
    log's natural key begins with it, and with random ids each row's insert touched pages all over a large log's
    index (`bench/README.md`, Round 19). Not a secret: what a request id opens is checked against its owner."""
    return uuid_utils.uuid7().hex


class ChatRequest(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A request for one generation, read by an inference worker of group `inference`."""

    request_id: str
    """`new_request_id()`: unique, time-ordered."""
    model: str
    """The registry alias the client asked for (not the upstream model name)."""
    messages: list[ChatMessage]
    params: GenerationParams = GenerationParams()
    owner: str
    key_id: str
    enqueued_at: float
    """Unix time (seconds) at which the gateway enqueued the request."""
    deadline: float
    """Unix time (seconds) after which nobody waits for the answer any more."""
    attempt: int = 1
    traceparent: str | None = None
    conversation_id: str | None = None
    """Set for turns of a stored conversation (the native API)."""
    message_id: str | None = None
    """The assistant message this generation fills, in that conversation."""
    reserved_tokens: int = 0
    """Tokens taken from the key's per-minute bucket up front; the worker gives back what goes unused."""
    key_tpm: int | None = None
    """The key's tokens-per-minute limit, when it has one."""
    owner_tpm: int | None = None
    """The owner's tokens-per-minute limit (over all its keys), when it has one."""
    budget_period: str | None = None
    """Set when the key has a spend budget: the worker adds the cost to the key's spend for this period."""
    budget_label: str | None = None
    """The budget period (`2026-12-01`, `2026-W49`, `2026-12`) the gateway reserved `budget_reserved_usd` from at admission."""
    budget_reserved_usd: float = 0.0
    """The worst case reserved at admission (input and `max_tokens` at the model's prices); the worker settles it with the real cost."""
    purpose: Literal["chat", "title", "embed"] = "chat"
    """`title`: the conversation service asked for a title, not the user for an answer. `embed`: vectors of the
    `messages`' contents (one user message an input), as `Embedding` events, instead of an answer."""
    cache_key: str | None = None
    """Where the worker stores the completed answer (the response cache), for `cache_ttl_s` seconds."""
    cache_index: str | None = None
    cache_ttl_s: int = 0
