"""Anthropic's Messages API wire format, as far as the gateway reads and writes it."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from chatbot_contracts import Alias


class Block(msgspec.Struct, kw_only=True):
    """A content block: `text`, `image`, `tool_use`, `tool_result`, `thinking` and `redacted_thinking` are taken,
    others are refused by name. `cache_control` goes to Anthropic's models; `citations` are dropped."""

    type: str
    text: str | None = None
    id: str | None = None
    name: str | None = None
    input: dict[str, Any] | None = None
    tool_use_id: str | None = None
    content: str | list[Block] | None = None
    is_error: bool | None = None
    source: dict[str, Any] | None = None
    """Of an `image` block: `{type: base64, media_type, data}` or `{type: url, url}`."""
    thinking: str | None = None
    signature: str | None = None
    data: str | None = None
    """Of a `redacted_thinking` block."""
    cache_control: dict[str, Any] | None = None


class ToolParam(msgspec.Struct, kw_only=True):
    """A client tool (`custom`); Anthropic's server tools (web search, bash, …) have a `type` and are refused by name."""

    name: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    type: str | None = None
    description: str | None = None
    input_schema: dict[str, Any] | None = None
    cache_control: dict[str, Any] | None = None


class ToolChoice(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class MessageParam(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    role: Literal["user", "assistant"]
    content: str | list[Block]


class MessagesRequest(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """`POST /v1/messages`: every documented field is known; unknown ones are refused."""

    model: Alias
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
    tools: Annotated[list[ToolParam], msgspec.Meta(max_length=128)] | None = None
    tool_choice: ToolChoice | None = None
    thinking: dict[str, Any] | None = None
    container: str | None = None
    mcp_servers: list[dict[str, Any]] | None = None


class TextContent(msgspec.Struct, kw_only=True, tag_field="type", tag="text"):
    text: str


class ThinkingContent(msgspec.Struct, kw_only=True, tag_field="type", tag="thinking"):
    thinking: str
    signature: str


class RedactedThinkingContent(msgspec.Struct, kw_only=True, tag_field="type", tag="redacted_thinking"):
    data: str


class ToolUseContent(msgspec.Struct, kw_only=True, tag_field="type", tag="tool_use"):
    id: str
    name: str
    input: Any


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
    content: list[ThinkingContent | RedactedThinkingContent | TextContent | ToolUseContent]
    stop_reason: str | None
    stop_sequence: None = None
    usage: MessageUsage
