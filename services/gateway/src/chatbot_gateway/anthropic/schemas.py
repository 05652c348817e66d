"""Anthropic's Messages API wire format, as far as the gateway reads and writes it."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec


class Block(msgspec.Struct, kw_only=True):
    """A content block; only `text` blocks are taken, others are refused by name."""

    type: str
    text: str | None = None


class MessageParam(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    role: Literal["user", "assistant"]
    content: str | list[Block]


class MessagesRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """`POST /v1/messages`: every documented field is known; unknown ones are refused."""

    model: Annotated[str, msgspec.Meta(min_length=1)]
    max_tokens: Annotated[int, msgspec.Meta(ge=1)]
    messages: Annotated[list[MessageParam], msgspec.Meta(min_length=1)]
    system: str | list[Block] | None = None
    stop_sequences: list[str] | None = None
    stream: bool = False
    temperature: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None
    top_p: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None
    top_k: int | None = None
    metadata: dict[str, Any] | None = None
    service_tier: str | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: dict[str, Any] | None = None
    thinking: dict[str, Any] | None = None
    container: str | None = None
    mcp_servers: list[dict[str, Any]] | None = None


class TextContent(msgspec.Struct, kw_only=True):
    type: Literal["text"] = "text"
    text: str


class MessageUsage(msgspec.Struct, kw_only=True):
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0


class Message(msgspec.Struct, kw_only=True):
    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    model: str
    content: list[TextContent]
    stop_reason: str | None
    stop_sequence: None = None
    usage: MessageUsage
